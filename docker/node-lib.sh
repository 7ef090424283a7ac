# Shared by docker/opensearch-node.sh and docker/elasticsearch-node.sh (sourced, not run): real search
# engine nodes without Docker, fetched with Maven, one node or a cluster, bound to 127.0.0.1 and run as an
# unprivileged user (both engines refuse root).
#
# The engine's script sets: engine (its name in messages), version, port, nodes, heap, cache, run_user,
# java_opts_var (the variable the launcher reads for JVM options), launcher (bin/NAME), manager_setting
# (the setting naming the first cluster-manager nodes), extra_settings (more -E options), extra_java_opts
# (more JVM options), and defines
# install (make $home a complete installation). Then it calls node_main "$@".
#
# Node I of N listens for HTTP on port + I - 1 and for transport on that + 100; with N > 1 the nodes find
# each other through discovery.seed_hosts (every node is manager-eligible and holds data), and keep their
# data in their own folder, apart from the single node's.

fetch() {  # $1 = group:artifact:version:packaging[:classifier]: the file, fetched once into $cache
  local name
  name=$(echo "$1" | awk -F: '{print $2 "-" $3 ($5 ? "-" $5 : "") "." $4}')
  if [ ! -s "$cache/$name" ]; then
    echo "fetching $1" >&2
    mvn -B -q -Dstyle.color=never dependency:copy -Dartifact="$1" -DoutputDirectory="$cache" >&2
  fi
  echo "$cache/$name"
}

unpack() {  # $1 = distribution zip, $2 = the folder it holds: unpacked as $home, whole or not at all
  local staging=$home.unpacking
  rm -rf "$home" "$staging"
  unzip -q "$1" -d "$staging"
  mv "$staging/$2" "$home"
  rmdir "$staging"
}

node_port() { echo $((port + $1 - 1)); }

node_data() {  # the single node keeps the folder it always had; a cluster's nodes get their own
  if [ "$nodes" -eq 1 ]; then echo "$cache/node-$port${variant:+-$variant}"
  else echo "$cache/cluster-$port-of-$nodes${variant:+-$variant}/node-$1"; fi
}

pidfile() { echo "$(node_data "$1")/node.pid"; }

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
  echo "-Ediscovery.seed_hosts=$seeds -E$manager_setting=$managers -Enode.name=node-$1 -Ecluster.name=hybrid-cluster-$port"
}

launch() {  # $1 = node: start it in the background
  local data pidfile
  data=$(node_data "$1")
  pidfile=$(pidfile "$1")
  if running "$1"; then echo "node $1 already running at http://127.0.0.1:$(node_port "$1") (pid $(cat "$pidfile"))"; return; fi
  mkdir -p "$data/data" "$data/logs"
  # shellcheck disable=SC2046,SC2086  # cluster_settings and extra_settings are lists of -E options
  as_runner env "$java_opts_var=-Xms$heap -Xmx$heap${extra_java_opts:+ $extra_java_opts}" "$home/$launcher" -d -p "$pidfile" \
    $(cluster_settings "$1") -Enetwork.host=127.0.0.1 -Ehttp.port="$(node_port "$1")" \
    -Etransport.port="$(($(node_port "$1") + 100))" -Epath.data="$data/data" -Epath.logs="$data/logs" \
    -Ecluster.routing.allocation.disk.threshold_enabled=false $extra_settings \
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
  echo "$engine did not become healthy; last log lines:" >&2
  for node in "${@:2}"; do
    tail -n 20 "$(node_data "$node")/logs/startup.log" >&2 || true
    tail -n 40 "$(node_data "$node")"/logs/hybrid-*.log >&2 || true
  done
  exit 1
}

start() {  # $1 = one node, or empty for all
  mkdir -p "$cache"
  install
  # The cache may sit under /root: let the unprivileged user traverse to it.
  if [ "$(id -u)" -eq 0 ]; then
    local d=$cache
    while [ "$d" != / ]; do chmod o+x "$d"; d=$(dirname "$d"); done
  fi
  local chosen
  if [ -n "$1" ]; then chosen=$1; else chosen=$(seq 1 "$nodes"); fi
  for node in $chosen; do launch "$node"; done
  # shellcheck disable=SC2086
  wait_healthy "${1:-1}" $chosen
  if [ "$nodes" -eq 1 ]; then
    echo "$engine $version running at http://127.0.0.1:$port (pid $(cat "$(pidfile 1)"))"
  else
    for node in $chosen; do
      echo "$engine $version node $node of $nodes running at http://127.0.0.1:$(node_port "$node") (pid $(cat "$(pidfile "$node")"))"
    done
  fi
}

stop() {  # $1 = one node, or empty for all; $2 = signal
  local chosen pid node
  if [ -n "$1" ]; then chosen=$1; else chosen=$(seq 1 "$nodes"); fi
  for node in $chosen; do
    if ! running "$node"; then echo "$engine node $node is not running"; rm -f "$(pidfile "$node")"; continue; fi
    pid=$(cat "$(pidfile "$node")")
    kill "-$2" "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$(pidfile "$node")"
    echo "$engine node $node stopped ($2)"
  done
}

status() {
  local node down=0
  for node in $(seq 1 "$nodes"); do
    if running "$node"; then
      echo "$engine node $node running at http://127.0.0.1:$(node_port "$node") (pid $(cat "$(pidfile "$node")"))"
    else
      echo "$engine node $node is not running"; down=1
    fi
  done
  [ "$down" -eq 0 ] && healthy 1
}

node_main() {  # COMMAND [--nodes N] [--node I] [OPTIONS the engine's parse_option takes]
  local command=${1:-} node=""
  shift || true
  while [ $# -gt 0 ]; do
    case "$1" in
      --nodes) nodes=$2; shift 2 ;;
      --node) node=$2; shift 2 ;;
      *) if ! parse_option "$1"; then echo "unknown option $1" >&2; exit 2; fi; shift ;;
    esac
  done
  home=$cache/$(installation)
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
}
