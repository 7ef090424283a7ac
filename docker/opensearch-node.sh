#!/usr/bin/env bash
# Start, stop or inspect a real OpenSearch with the k-NN plugin, without Docker: one node, or a cluster.
#
# Fetches the OpenSearch integration-test distribution and the matching k-NN plugin with Maven into a
# cache outside the repository, installs the plugin, and runs the nodes bound to 127.0.0.1 as an
# unprivileged user (OpenSearch refuses to run as root).
#
#   docker/opensearch-node.sh start|stop|status [--nodes N]    all nodes (N = 1: a single-node cluster)
#   docker/opensearch-node.sh start|stop|kill [--nodes N] --node I   one node of N; kill = SIGKILL
#   docker/opensearch-node.sh start|stop|status --neural      nodes with neural-search too
#
# Node I of N listens for HTTP on OPENSEARCH_PORT + I - 1 and for transport on that + 100 (the rest is
# docker/node-lib.sh, shared with docker/elasticsearch-node.sh).
#
# --neural (or OPENSEARCH_NEURAL=1) runs a second installation that adds the neural-search plugin and
# the plugins it needs (job-scheduler, ml-commons: 360 MB more to fetch once) for OpenSearch's own
# hybrid query and search pipelines; its nodes keep their data apart from the plain ones'. They run models
# (ML Commons on every node, no `ml` role needed, memory and disk breakers off for small nodes) without the
# internet: ML Commons' ONNX runtime leans on PyTorch, which DJL would download on first use, so libtorch
# 2.5.1 and DJL's JNI for it are fetched once from Maven (the jars DJL publishes) and handed to every node
# (PYTORCH_LIBRARY_PATH), 2.19 as 3.x.
#
# Environment: OPENSEARCH_VERSION (3.6.0; 2.13.0 or later), OPENSEARCH_PORT (9200), OPENSEARCH_NODES (1),
# OPENSEARCH_HEAP (512m per node; 1g with --neural), HYBRID_CACHE (~/.cache/hybrid), OPENSEARCH_RUN_USER (hybrid-os,
# created when running as root), OPENSEARCH_JAVA_HOME (2.x runs on JAVA_HOME or the java on PATH, as Java
# 17 is enough; 3.x needs 21 or newer: JAVA_HOME where it is one, else the newest under OPENSEARCH_JVM_ROOT,
# /usr/lib/jvm).
set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin  # useradd and runuser, which a minimal PATH (/usr/bin:/bin) leaves out

version=${OPENSEARCH_VERSION:-3.6.0}
port=${OPENSEARCH_PORT:-9200}
nodes=${OPENSEARCH_NODES:-1}
heap=${OPENSEARCH_HEAP:-512m}
cache=${HYBRID_CACHE:-$HOME/.cache/hybrid}/opensearch
neural=${OPENSEARCH_NEURAL:-}
run_user=${OPENSEARCH_RUN_USER:-hybrid-os}
engine=OpenSearch
java_opts_var=OPENSEARCH_JAVA_OPTS
launcher=bin/opensearch
manager_setting=cluster.initial_cluster_manager_nodes
extra_settings=""
extra_java_opts=""
libtorch=2.5.1  # what ML Commons 3.x asks DJL for; 2.19's DJL (0.31.1 on both) runs it as well
libtorch_jni=2.5.1-0.32.0  # DJL's JNI for it: 0.31.1's is not on Maven, 0.32.0's has the same interface
# shellcheck source=docker/node-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

java_major() {  # $1 = a Java home: its feature version (17, 21, 25), or 0 where it is no Java home
  sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$1/release" 2>/dev/null | grep . || echo 0
}

choose_java() {  # the integration-test distribution bundles no JDK: pick the one this version runs on
  if [ -n "${OPENSEARCH_JAVA_HOME:-}" ]; then return; fi
  local default=${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}
  if [ "${version%%.*}" -lt 3 ]; then export OPENSEARCH_JAVA_HOME=$default; return; fi
  # OpenSearch 3 needs Java 21 or newer: JAVA_HOME where it is one, else the newest one installed.
  local home best="" best_major=0 major
  for home in "$default" "${OPENSEARCH_JVM_ROOT:-/usr/lib/jvm}"/*; do
    major=$(java_major "$home")
    if [ "$major" -gt "$best_major" ]; then best=$home; best_major=$major; fi
    if [ "$home" = "$default" ] && [ "$major" -ge 21 ]; then break; fi
  done
  if [ "$best_major" -lt 21 ]; then
    echo "OpenSearch $version needs Java 21 or newer, and none is installed (set OPENSEARCH_JAVA_HOME to one, or" \
      "OPENSEARCH_VERSION=2.19.1 for Java 17)" >&2
    exit 1
  fi
  export OPENSEARCH_JAVA_HOME=$best
}

module() {  # $1 = name, $2 = plugin class, $3 = extended plugins, $4 = description
  # The 2.x integration-test distribution ships only transport-netty4; the other modules a node needs
  # (painless, which k-NN extends; analysis-common, which has the `english` analyzer) are published
  # to Maven as plain jars, so assemble each module folder from its jar and runtime dependencies.
  local dir=$home/modules/$1
  if [ -f "$dir/plugin-descriptor.properties" ]; then return; fi  # 3.x distributions ship their modules
  mkdir -p "$dir"
  mvn -B -q -Dstyle.color=never dependency:copy -Dartifact="org.opensearch.plugin:$1:$version" -DoutputDirectory="$dir" >&2
  mvn -B -q -Dstyle.color=never dependency:copy -Dartifact="org.opensearch.plugin:$1:$version:pom" -DoutputDirectory="$cache" >&2
  mvn -B -q -Dstyle.color=never dependency:copy-dependencies -f "$cache/$1-$version.pom" -DincludeScope=runtime -DexcludeTransitive=true \
    -DoutputDirectory="$dir" >&2
  cat > "$dir/plugin-descriptor.properties" <<PROPS
description=$4
version=$version
name=$1
classname=$2
java.version=11
opensearch.version=$version
custom.foldername=
extended.plugins=$3
has.native.controller=false
PROPS
}

install() {
  local last=opensearch-knn  # the last plugin installed: there, the installation is complete
  if [ -n "$neural" ]; then install_libtorch; fi
  if [ -n "$neural" ]; then last=opensearch-neural-search; fi
  if [ -d "$home/plugins/$last" ]; then neural_modules; return; fi
  unpack "$(fetch "org.opensearch.distribution.integ-test-zip:opensearch:$version:zip")" "opensearch-$version"
  module lang-painless org.opensearch.painless.PainlessPlugin "" "Painless scripting language"
  # Painless generates classes at run time (its own plugin-security.policy grants exactly this).
  printf 'grant {\n  permission java.lang.RuntimePermission "createClassLoader";\n  permission java.lang.RuntimePermission "getClassLoader";\n};\n' \
    > "$home/modules/lang-painless/plugin-security.policy"
  module analysis-common org.opensearch.analysis.common.CommonAnalysisPlugin lang-painless "Common analysis components"
  # In dependency order: ml-commons extends job-scheduler, neural-search extends ml-commons and k-NN.
  for plugin in ${neural:+opensearch-job-scheduler opensearch-ml-plugin} opensearch-knn ${neural:+neural-search}; do
    "$home/bin/opensearch-plugin" install --batch "file://$(fetch "org.opensearch.plugin:$plugin:$version.0:zip")" >&2
  done
  neural_modules
}

neural_modules() {  # what ingest on the cluster needs besides neural-search: the remove and script processors
  [ -n "$neural" ] || return 0
  local dir=$home/modules/ingest-common
  [ -f "$dir/plugin-descriptor.properties" ] && return 0  # 3.x distributions ship it
  module ingest-common org.opensearch.ingest.common.IngestCommonPlugin lang-painless "Common ingest processors"
  # its grok processor's regular expressions (joni, jcodings) are dependencies of a dependency
  mvn -B -q -Dstyle.color=never dependency:copy -Dartifact="org.opensearch:opensearch-grok:$version:pom" -DoutputDirectory="$cache" >&2
  mvn -B -q -Dstyle.color=never dependency:copy-dependencies -f "$cache/opensearch-grok-$version.pom" -DincludeScope=runtime \
    -DexcludeTransitive=true -DoutputDirectory="$dir" >&2
}

installation() { echo "opensearch-$version${neural:+-neural}"; }

libtorch_folder() { echo "$cache/libtorch-$libtorch-cpu"; }

install_libtorch() {  # PyTorch's native libraries and DJL's JNI, flat in one folder every node reads
  local folder staging
  folder=$(libtorch_folder)
  if [ -f "$folder/libdjl_torch.so" ]; then return; fi
  staging=$folder.unpacking
  rm -rf "$staging" && mkdir -p "$staging"
  unzip -q -j "$(fetch "ai.djl.pytorch:pytorch-native-cpu:$libtorch:jar:linux-x86_64")" "pytorch/cpu/linux-x86_64/*" -d "$staging"
  unzip -q -j "$(fetch "ai.djl.pytorch:pytorch-jni:$libtorch_jni:jar")" "jnilib/linux-x86_64/cpu/libdjl_torch.so" -d "$staging"
  chmod -R o+rX "$staging"
  rm -rf "$folder" && mv "$staging" "$folder"
}

with_neural() {  # the nodes with neural-search are another installation, and keep their data apart
  neural=1
  variant=neural
  heap=${OPENSEARCH_HEAP:-1g}  # a model's upload and its runtime sit in the heap beside the index's work
  extra_settings="-Eplugins.ml_commons.only_run_on_ml_node=false -Eplugins.ml_commons.allow_registering_model_via_local_file=true
    -Eplugins.ml_commons.native_memory_threshold=100 -Eplugins.ml_commons.jvm_heap_memory_threshold=100
    -Eplugins.ml_commons.disk_free_space_threshold=0b"
  extra_java_opts="-DPYTORCH_LIBRARY_PATH=$(libtorch_folder)"
}

parse_option() {  # $1 = an option of this engine's own
  case "$1" in
    --neural) with_neural ;;
    *) return 1 ;;
  esac
}

case "$neural" in 1|true|yes) with_neural ;; *) neural="" ;; esac
choose_java
node_main "$@"
