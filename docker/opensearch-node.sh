#!/usr/bin/env bash
# Start, stop or inspect a real single-node OpenSearch with the k-NN plugin, without Docker.
#
# Fetches the OpenSearch integration-test distribution and the matching k-NN plugin with Maven into a
# cache outside the repository, installs the plugin, and runs the node bound to 127.0.0.1 as an
# unprivileged user (OpenSearch refuses to run as root).
#
#   docker/opensearch-node.sh start|stop|status
#
# Environment: OPENSEARCH_VERSION (2.19.1), OPENSEARCH_PORT (9200), OPENSEARCH_HEAP (512m),
# HYBRID_CACHE (~/.cache/hybrid), OPENSEARCH_RUN_USER (hybrid-os, created when running as root).
set -euo pipefail

version=${OPENSEARCH_VERSION:-2.19.1}
port=${OPENSEARCH_PORT:-9200}
heap=${OPENSEARCH_HEAP:-512m}
cache=${HYBRID_CACHE:-$HOME/.cache/hybrid}/opensearch
home=$cache/opensearch-$version
data=$cache/node-$port
pidfile=$data/opensearch.pid
url=http://127.0.0.1:$port
run_user=${OPENSEARCH_RUN_USER:-hybrid-os}
# The integration-test distribution bundles no JDK: use JAVA_HOME, else the java on PATH.
export OPENSEARCH_JAVA_HOME=${OPENSEARCH_JAVA_HOME:-${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}}

fetch() {  # $1 = group:artifact:version:zip
  local name
  name=$(echo "$1" | awk -F: '{print $2 "-" $3 "." $4}')
  if [ ! -s "$cache/$name" ]; then
    echo "fetching $1" >&2
    mvn -B -q dependency:copy -Dartifact="$1" -DoutputDirectory="$cache" >&2
  fi
  echo "$cache/$name"
}

module() {  # $1 = name, $2 = plugin class, $3 = extended plugins, $4 = description
  # The integration-test distribution ships only transport-netty4; the other modules a node needs
  # (painless, which k-NN extends; analysis-common, which has the `english` analyzer) are published
  # to Maven as plain jars, so assemble each module folder from its jar and runtime dependencies.
  local dir=$home/modules/$1 pom
  mkdir -p "$dir"
  mvn -B -q dependency:copy -Dartifact="org.opensearch.plugin:$1:$version" -DoutputDirectory="$dir" >&2
  mvn -B -q dependency:copy -Dartifact="org.opensearch.plugin:$1:$version:pom" -DoutputDirectory="$cache" >&2
  mvn -B -q dependency:copy-dependencies -f "$cache/$1-$version.pom" -DincludeScope=runtime -DexcludeTransitive=true \
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
  if [ -d "$home/plugins/opensearch-knn" ]; then return; fi
  local dist knn
  dist=$(fetch "org.opensearch.distribution.integ-test-zip:opensearch:$version:zip")
  knn=$(fetch "org.opensearch.plugin:opensearch-knn:$version.0:zip")
  rm -rf "$home"
  unzip -q "$dist" -d "$cache"
  module lang-painless org.opensearch.painless.PainlessPlugin "" "Painless scripting language"
  # Painless generates classes at run time (its own plugin-security.policy grants exactly this).
  printf 'grant {\n  permission java.lang.RuntimePermission "createClassLoader";\n  permission java.lang.RuntimePermission "getClassLoader";\n};\n' \
    > "$home/modules/lang-painless/plugin-security.policy"
  module analysis-common org.opensearch.analysis.common.CommonAnalysisPlugin lang-painless "Common analysis components"
  "$home/bin/opensearch-plugin" install --batch "file://$knn" >&2
}

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

healthy() {
  curl -fsS "$url/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null 2>&1
}

as_runner() {  # run a command as the unprivileged user when we are root
  if [ "$(id -u)" -eq 0 ]; then
    id "$run_user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$run_user"
    chown -R "$run_user" "$home" "$data"
    runuser -u "$run_user" -- "$@"
  else
    "$@"
  fi
}

start() {
  if running; then echo "OpenSearch already running at $url (pid $(cat "$pidfile"))"; return; fi
  install
  mkdir -p "$data/data" "$data/logs"
  # The cache may sit under /root: let the unprivileged user traverse to it.
  if [ "$(id -u)" -eq 0 ]; then
    local d=$cache
    while [ "$d" != / ]; do chmod o+x "$d"; d=$(dirname "$d"); done
  fi
  as_runner env OPENSEARCH_JAVA_OPTS="-Xms$heap -Xmx$heap" "$home/bin/opensearch" -d -p "$pidfile" \
    -Ediscovery.type=single-node -Enetwork.host=127.0.0.1 -Ehttp.port="$port" \
    -Etransport.port="$((port + 100))" -Epath.data="$data/data" -Epath.logs="$data/logs" \
    -Ecluster.routing.allocation.disk.threshold_enabled=false -Ecluster.name=hybrid-dev \
    >"$data/logs/startup.log" 2>&1 </dev/null  # the daemon must not hold our caller's pipes open
  for _ in $(seq 1 120); do
    if healthy; then
      curl -fsS "$url/_cluster/health?wait_for_status=green&timeout=30s" >/dev/null || true
      echo "OpenSearch $version running at $url (pid $(cat "$pidfile"))"
      return
    fi
    sleep 1
  done
  echo "OpenSearch did not become healthy; last log lines:" >&2
  tail -n 20 "$data/logs/startup.log" >&2 || true
  tail -n 40 "$data/logs/hybrid-dev.log" >&2 || true
  exit 1
}

stop() {
  if ! running; then echo "OpenSearch is not running"; rm -f "$pidfile"; return; fi
  local pid
  pid=$(cat "$pidfile")
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$pidfile"
  echo "OpenSearch stopped"
}

status() {
  if running && healthy; then
    echo "OpenSearch running at $url (pid $(cat "$pidfile"))"
  else
    echo "OpenSearch is not running"; return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
