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
# Node I of N listens for HTTP on OPENSEARCH_PORT + I - 1 and for transport on that + 100; with N > 1
# the nodes find each other through discovery.seed_hosts (every node is cluster-manager eligible and
# holds data), and keep their data in their own folder, apart from the single node's.
#
# --neural (or OPENSEARCH_NEURAL=1) runs a second installation that adds the neural-search plugin and
# the plugins it needs (job-scheduler, ml-commons: 360 MB more to fetch once) for OpenSearch's own
# hybrid query and search pipelines; its nodes keep their data apart from the plain ones'.
#
# Environment: OPENSEARCH_VERSION (2.19.1), OPENSEARCH_PORT (9200), OPENSEARCH_NODES (1),
# OPENSEARCH_HEAP (512m per node), HYBRID_CACHE (~/.cache/hybrid), OPENSEARCH_RUN_USER (hybrid-os,
# created when running as root).
set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin  # useradd and runuser, which a minimal PATH (/usr/bin:/bin) leaves out

version=${OPENSEARCH_VERSION:-2.19.1}
port=${OPENSEARCH_PORT:-9200}
nodes=${OPENSEARCH_NODES:-1}
heap=${OPENSEARCH_HEAP:-512m}
cache=${HYBRID_CACHE:-$HOME/.cache/hybrid}/opensearch
neural=${OPENSEARCH_NEURAL:-}
url=http://127.0.0.1:$port
run_user=${OPENSEARCH_RUN_USER:-hybrid-os}
# The integration-test distribution bundles no JDK: use JAVA_HOME, else the java on PATH.
export OPENSEARCH_JAVA_HOME=${OPENSEARCH_JAVA_HOME:-${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}}

fetch() {  # $1 = group:artifact:version:zip
  local name
  name=$(echo "$1" | awk -F: '{print $2 "-" $3 "." $4}')
  if [ ! -s "$cache/$name" ]; then
    echo "fetching $1" >&2
    mvn -B -q -Dstyle.color=never dependency:copy -Dartifact="$1" -DoutputDirectory="$cache" >&2
  fi
  echo "$cache/$name"
}

module() {  # $1 = name, $2 = plugin class, $3 = extended plugins, $4 = description
  # The integration-test distribution ships only transport-netty4; the other modules a node needs
  # (painless, which k-NN extends; analysis-common, which has the `english` analyzer) are published
  # to Maven as plain jars, so assemble each module folder from its jar and runtime dependencies.
  local dir=$home/modules/$1
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
  mkdir -p "$cache"
  local last=opensearch-knn  # the last plugin installed: there, the installation is complete
  if [ -n "$neural" ]; then last=opensearch-neural-search; fi
  if [ -d "$home/plugins/$last" ]; then return; fi
  local dist plugin staging=$home.unpacking
  dist=$(fetch "org.opensearch.distribution.integ-test-zip:opensearch:$version:zip")
  rm -rf "$home" "$staging"
  unzip -q "$dist" -d "$staging"
  mv "$staging/opensearch-$version" "$home"
  rmdir "$staging"
  module lang-painless org.opensearch.painless.PainlessPlugin "" "Painless scripting language"
  # Painless generates classes at run time (its own plugin-security.policy grants exactly this).
  printf 'grant {\n  permission java.lang.RuntimePermission "createClassLoader";\n  permission java.lang.RuntimePermission "getClassLoader";\n};\n' \
    > "$home/modules/lang-painless/plugin-security.policy"
  module analysis-common org.opensearch.analysis.common.CommonAnalysisPlugin lang-painless "Common analysis components"
  # In dependency order: ml-commons extends job-scheduler, neural-search extends ml-commons and k-NN.
  for plugin in ${neural:+opensearch-job-scheduler opensearch-ml-plugin} opensearch-knn ${neural:+neural-search}; do
    "$home/bin/opensearch-plugin" install --batch "file://$(fetch "org.opensearch.plugin:$plugin:$version.0:zip")" >&2
  done
}

node_port() { echo $((port + $1 - 1)); }

node_data() {  # the single node keeps the folder it always had; a cluster's nodes get their own
  if [ "$nodes" -eq 1 ]; then echo "$cache/node-$port${neural:+-neural}"
  else echo "$cache/cluster-$port-of-$nodes${neural:+-neural}/node-$1"; fi
}

pidfile() { echo "$(node_data "$1")/opensearch.pid"; }

running() {  # $1 = node
  local pidfile
  pidfile=$(pidfile "$1")
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

healthy() {  # $1 = a node that answers; the cluster is yellow or better with all $nodes nodes in it
  curl -fsS --max-time 5 "http://127.0.0.1:$(node_port "$1")/_cluster/health?wait_for_status=yellow&wait_for_nodes=$nodes&timeout=1s" \
    >/dev/null 2>&1
}

as_runner() {  # run a command as the unprivileged user when we are root
  if [ "$(id -u)" -eq 0 ]; then
    id "$run_user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$run_user"
    chown -R "$run_user" "$home" "$cache"/node-* "$cache"/cluster-* 2>/dev/null || true
    runuser -u "$run_user" -- "$@"
  else
    "$@"
  fi
}

cluster_settings() {  # how node $1 finds the others
  if [ "$nodes" -eq 1 ]; then
    echo "-Ediscovery.type=single-node -Ecluster.name=hybrid-dev"
    return
  fi
  local seeds="" managers="" i
  for i in $(seq 1 "$nodes"); do
    seeds+="${seeds:+,}127.0.0.1:$(($(node_port "$i") + 100))"
    managers+="${managers:+,}node-$i"
  done
  echo "-Ediscovery.seed_hosts=$seeds -Ecluster.initial_cluster_manager_nodes=$managers -Enode.name=node-$1" \
    "-Ecluster.name=hybrid-cluster-$port"
}

launch() {  # $1 = node: start it in the background
  local data pidfile
  data=$(node_data "$1")
  pidfile=$(pidfile "$1")
  if running "$1"; then echo "node $1 already running at http://127.0.0.1:$(node_port "$1") (pid $(cat "$pidfile"))"; return; fi
  mkdir -p "$data/data" "$data/logs"
  # shellcheck disable=SC2046  # cluster_settings is a list of -E options
  as_runner env OPENSEARCH_JAVA_OPTS="-Xms$heap -Xmx$heap" "$home/bin/opensearch" -d -p "$pidfile" \
    $(cluster_settings "$1") -Enetwork.host=127.0.0.1 -Ehttp.port="$(node_port "$1")" \
    -Etransport.port="$(($(node_port "$1") + 100))" -Epath.data="$data/data" -Epath.logs="$data/logs" \
    -Ecluster.routing.allocation.disk.threshold_enabled=false \
    >"$data/logs/startup.log" 2>&1 </dev/null  # the daemon must not hold our caller's pipes open
}

wait_healthy() {  # $1 = node to ask, $2.. = nodes whose logs to show on failure
  local ask=$1 node
  for _ in $(seq 1 180); do
    if healthy "$ask"; then
      curl -fsS --max-time 35 "http://127.0.0.1:$(node_port "$ask")/_cluster/health?wait_for_status=green&timeout=30s" >/dev/null || true
      return
    fi
    sleep 1
  done
  echo "OpenSearch did not become healthy; last log lines:" >&2
  for node in "${@:2}"; do
    tail -n 20 "$(node_data "$node")/logs/startup.log" >&2 || true
    tail -n 40 "$(node_data "$node")"/logs/hybrid-*.log >&2 || true
  done
  exit 1
}

start() {  # $1 = one node, or empty for all
  install
  # The cache may sit under /root: let the unprivileged user traverse to it.
  if [ "$(id -u)" -eq 0 ]; then
    local d=$cache
    mkdir -p "$d"
    while [ "$d" != / ]; do chmod o+x "$d"; d=$(dirname "$d"); done
  fi
  local chosen
  if [ -n "$1" ]; then chosen=$1; else chosen=$(seq 1 "$nodes"); fi
  for node in $chosen; do launch "$node"; done
  # shellcheck disable=SC2086
  wait_healthy "${1:-1}" $chosen
  if [ "$nodes" -eq 1 ]; then
    echo "OpenSearch $version running at $url (pid $(cat "$(pidfile 1)"))"
  else
    for node in $chosen; do
      echo "OpenSearch $version node $node of $nodes running at http://127.0.0.1:$(node_port "$node") (pid $(cat "$(pidfile "$node")"))"
    done
  fi
}

stop() {  # $1 = one node, or empty for all; $2 = signal
  local chosen pid node
  if [ -n "$1" ]; then chosen=$1; else chosen=$(seq 1 "$nodes"); fi
  for node in $chosen; do
    if ! running "$node"; then echo "OpenSearch node $node is not running"; rm -f "$(pidfile "$node")"; continue; fi
    pid=$(cat "$(pidfile "$node")")
    kill "-$2" "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$(pidfile "$node")"
    echo "OpenSearch node $node stopped ($2)"
  done
}

status() {
  local node down=0
  for node in $(seq 1 "$nodes"); do
    if running "$node"; then
      echo "OpenSearch node $node running at http://127.0.0.1:$(node_port "$node") (pid $(cat "$(pidfile "$node")"))"
    else
      echo "OpenSearch node $node is not running"; down=1
    fi
  done
  [ "$down" -eq 0 ] && healthy 1
}

command=${1:-}
shift || true
node=""
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=$2; shift 2 ;;
    --node) node=$2; shift 2 ;;
    --neural) neural=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
case "$neural" in 1|true|yes) neural=1 ;; *) neural="" ;; esac
home=$cache/opensearch-$version${neural:+-neural}
if ! [ "$nodes" -ge 1 ] 2>/dev/null || { [ -n "$node" ] && ! { [ "$node" -ge 1 ] && [ "$node" -le "$nodes" ]; } 2>/dev/null; }; then
  echo "--nodes must be a positive number and --node one of 1..$nodes" >&2; exit 2
fi

case "$command" in
  start) start "$node" ;;
  stop) stop "$node" TERM ;;
  kill) if [ -z "$node" ]; then echo "kill needs --node I" >&2; exit 2; fi; stop "$node" KILL ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status|kill [--nodes N] [--node I]" >&2; exit 2 ;;
esac
