#!/usr/bin/env bash
# Build a new environment (from uv's wheel cache), check that every import is a declared dependency,
# start a real OpenSearch node, a three-node cluster and a node with neural-search (no Docker needed),
# run the whole test suite against the local backend and them, smoke-test the other supported Pythons,
# and stop the nodes whatever the outcome. Arguments are passed to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v unzip >/dev/null || missing+=(unzip)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
VENV=$ROOT/.venv-test  # made anew on every run: never an environment an earlier run left behind
new_env "$VENV" test
cd "$ROOT"
"$VENV/bin/deptry" .

# find_python X.Y: an interpreter of that version (PATH, then pyenv's folder), or nothing.
find_python() {
  local candidate
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python"$1" "$(type -P "python$1" || true)"; do
    if [ -x "$candidate" ] && "$candidate" -c 'import venv' 2>/dev/null; then echo "$candidate"; return; fi
  done
}

# One node for most tests; a three-node cluster for layout, shard and node-failure tests; a node with
# neural-search for OpenSearch's own hybrid query; Elasticsearch 9.x and 8.x nodes. What the nodes print goes
# to a log file, not the test log.
opensearch=$ROOT/docker/opensearch-node.sh
elasticsearch=$ROOT/docker/elasticsearch-node.sh
node_log=$ROOT/.test-logs/nodes.log
mkdir -p "$(dirname "$node_log")"
: >"$node_log"
cluster_port=${HYBRID_TEST_CLUSTER_PORT:-9210}
neural_port=${HYBRID_TEST_NEURAL_PORT:-9220}
es9=(env ELASTICSEARCH_VERSION=9.2.0 ELASTICSEARCH_PORT="${HYBRID_TEST_ES9_PORT:-9250}" "$elasticsearch")
es8=(env ELASTICSEARCH_VERSION=8.19.0 ELASTICSEARCH_PORT="${HYBRID_TEST_ES8_PORT:-9260}" "$elasticsearch")
nodes() {  # nodes SCRIPT ARGS...: run a node script, its output to the log; on failure say where to look
  if ! "$@" >>"$node_log" 2>&1; then
    echo "$* failed; its output (last lines below) is in $node_log" >&2
    tail -n 20 "$node_log" >&2
    return 1
  fi
}
stop_nodes() {
  nodes "$opensearch" stop || true
  OPENSEARCH_PORT=$cluster_port nodes "$opensearch" stop --nodes 3 || true
  OPENSEARCH_PORT=$neural_port nodes "$opensearch" stop --neural || true
  nodes "${es9[@]}" stop || true
  nodes "${es8[@]}" stop || true
}
trap stop_nodes EXIT
echo "starting OpenSearch and Elasticsearch nodes (output in $node_log)"
nodes "$opensearch" start
OPENSEARCH_PORT=$cluster_port nodes "$opensearch" start --nodes 3
OPENSEARCH_PORT=$neural_port nodes "$opensearch" start --neural
nodes "${es9[@]}" start
nodes "${es8[@]}" start
export HYBRID_TEST_NEURAL=http://127.0.0.1:$neural_port
export HYBRID_TEST_OPENSEARCH=http://127.0.0.1:${OPENSEARCH_PORT:-9200}
export HYBRID_TEST_CLUSTER=http://127.0.0.1:$cluster_port,http://127.0.0.1:$((cluster_port + 1)),http://127.0.0.1:$((cluster_port + 2))
export HYBRID_TEST_ELASTICSEARCH=http://127.0.0.1:${HYBRID_TEST_ES9_PORT:-9250},http://127.0.0.1:${HYBRID_TEST_ES8_PORT:-9260}
"$VENV/bin/python" -m pytest "$@"

# The suite ran on python3; the other supported Pythons get a quick install-and-use check. CI must have
# them all; elsewhere a missing one is said and skipped.
for version in ${HYBRID_SMOKE_PYTHONS:-3.12 3.13}; do
  python=$(find_python "$version")
  if [ -z "$python" ]; then
    if [ -n "${CI:-}" ]; then echo "Python $version not found (PATH, ${PYENV_ROOT:-$HOME/.pyenv}/versions)" >&2; exit 1; fi
    echo "smoke test skipped on Python $version: no python$version here (PATH, ${PYENV_ROOT:-$HOME/.pyenv}/versions)"
    continue
  fi
  bash "$ROOT/scripts/smoke.sh" "$python" "$HYBRID_TEST_OPENSEARCH"
done
