#!/usr/bin/env bash
# Start, stop or inspect a real Elasticsearch without Docker: one node, or a cluster.
#
# Fetches Elasticsearch's integration-test distribution with Maven into a cache outside the repository
# and runs the nodes bound to 127.0.0.1 as an unprivileged user (Elasticsearch refuses to run as root),
# with security off (no TLS, no users: a development node). That distribution holds four modules (apm,
# transport-netty4, x-pack-core, x-pack-security): dense_vector, knn and BM25 work; the language analyzers
# (analysis-common) and the rrf retriever are not there, and Maven serves neither as a module.
#
#   docker/elasticsearch-node.sh start|stop|status [--nodes N]    all nodes (N = 1: a single-node cluster)
#   docker/elasticsearch-node.sh start|stop|kill [--nodes N] --node I   one node of N; kill = SIGKILL
#
# Node I of N listens for HTTP on ELASTICSEARCH_PORT + I - 1 and for transport on that + 100 (the rest is
# docker/node-lib.sh, shared with docker/opensearch-node.sh). Each version keeps its data apart.
#
# Environment: ELASTICSEARCH_VERSION (9.2.0; 8.x runs too), ELASTICSEARCH_PORT (9250), ELASTICSEARCH_NODES
# (1), ELASTICSEARCH_HEAP (512m per node), ES_JAVA_HOME (default: a JDK under /usr/lib/jvm that the
# version runs on: 21 or newer for 9.x, 17 to 23 for 8.x, which still needs the Security Manager that
# Java 24 removed; else JAVA_HOME), HYBRID_CACHE (~/.cache/hybrid), ELASTICSEARCH_RUN_USER (hybrid-es,
# created when running as root).
set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin  # useradd and runuser, which a minimal PATH (/usr/bin:/bin) leaves out

version=${ELASTICSEARCH_VERSION:-9.2.0}
port=${ELASTICSEARCH_PORT:-9250}
nodes=${ELASTICSEARCH_NODES:-1}
heap=${ELASTICSEARCH_HEAP:-512m}
cache=${HYBRID_CACHE:-$HOME/.cache/hybrid}/elasticsearch
run_user=${ELASTICSEARCH_RUN_USER:-hybrid-es}
engine=Elasticsearch
java_opts_var=ES_JAVA_OPTS
launcher=bin/elasticsearch
manager_setting=cluster.initial_master_nodes
extra_settings="-Expack.security.enabled=false"
variant=$version
# shellcheck source=docker/node-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

java_major() {  # $1 = a JDK folder: its feature version (17, 21, 25 ...)
  "$1/bin/java" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}'
}

runs_on() {  # $1 = a Java feature version: whether this Elasticsearch version runs on it
  if [ "${version%%.*}" -ge 9 ]; then [ "$1" -ge 21 ]; else [ "$1" -ge 17 ] && [ "$1" -le 23 ]; fi
}

pick_java() {  # ES_JAVA_HOME as given, else the first JDK this version runs on
  if [ -n "${ES_JAVA_HOME:-}" ]; then echo "$ES_JAVA_HOME"; return; fi
  local dir
  for dir in ${JAVA_HOME:-} /usr/lib/jvm/*; do
    if [ -x "$dir/bin/java" ] && runs_on "$(java_major "$dir")"; then echo "$dir"; return; fi
  done
  echo "no JDK for Elasticsearch $version under /usr/lib/jvm or JAVA_HOME (9.x needs 21 or newer, 8.x 17 to 23);" \
    "set ES_JAVA_HOME" >&2
  exit 1
}

install() {
  if [ -x "$home/$launcher" ]; then return; fi
  unpack "$(fetch "org.elasticsearch.distribution.integ-test-zip:elasticsearch:$version:zip")" "elasticsearch-$version"
}

installation() { echo "elasticsearch-$version"; }

parse_option() { return 1; }  # no options of its own

ES_JAVA_HOME=$(pick_java)
export ES_JAVA_HOME
node_main "$@"
