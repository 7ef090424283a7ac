#!/usr/bin/env bash
# Build a new environment (from uv's wheel cache), check that every import is a declared dependency,
# start real OpenSearch (2.19 and 3.x) and Elasticsearch (9.x and 8.x) nodes (no Docker needed), run the
# whole test suite against the local backend and them, smoke-test the other supported Pythons, run the
# OpenSearch backend's tests on the oldest OpenSearch supported, and stop the nodes whatever the outcome.
# Arguments are passed to pytest (and then the version-floor run is left out).
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

# OpenSearch 2.19 and 3.x (each a plain node and a node with neural-search, for OpenSearch's own hybrid
# query), a three-node 3.x cluster for layout, shard and node-failure tests, Elasticsearch 9.x and 8.x; after
# the suite, the oldest OpenSearch we promise (2.13) for the OpenSearch backend's tests. What the nodes print
# goes to a log file, not the test log.
opensearch=$ROOT/docker/opensearch-node.sh
elasticsearch=$ROOT/docker/elasticsearch-node.sh
node_log=$ROOT/.test-logs/nodes.log
mkdir -p "$(dirname "$node_log")"
: >"$node_log"
os2=(env OPENSEARCH_VERSION=2.19.1 OPENSEARCH_PORT=9200 "$opensearch")
os3=(env OPENSEARCH_VERSION=3.6.0 OPENSEARCH_PORT=9230 "$opensearch")
neural2=(env OPENSEARCH_VERSION=2.19.1 OPENSEARCH_PORT=9220 "$opensearch")
neural3=(env OPENSEARCH_VERSION=3.6.0 OPENSEARCH_PORT=9240 "$opensearch")
cluster3=(env OPENSEARCH_VERSION=3.6.0 OPENSEARCH_PORT=9210 "$opensearch")
floor=(env OPENSEARCH_VERSION=2.13.0 OPENSEARCH_PORT=9290 "$opensearch")
es9=(env ELASTICSEARCH_VERSION=9.2.0 ELASTICSEARCH_PORT=9250 "$elasticsearch")
es8=(env ELASTICSEARCH_VERSION=8.19.0 ELASTICSEARCH_PORT=9260 "$elasticsearch")
nodes() {  # nodes SCRIPT ARGS...: run a node script, its output to the log; on failure say where to look
  if ! "$@" >>"$node_log" 2>&1; then
    echo "$* failed; its output (last lines below) is in $node_log" >&2
    tail -n 20 "$node_log" >&2
    return 1
  fi
}
stop_nodes() {
  local node
  for node in os2 os3 es9 es8 floor; do
    local -n script=$node
    nodes "${script[@]}" stop || true
  done
  nodes "${neural2[@]}" stop --neural || true
  nodes "${neural3[@]}" stop --neural || true
  nodes "${cluster3[@]}" stop --nodes 3 || true
}
trap stop_nodes EXIT
echo "starting OpenSearch and Elasticsearch nodes (output in $node_log)"
nodes "${os2[@]}" start
nodes "${os3[@]}" start
nodes "${cluster3[@]}" start --nodes 3
nodes "${neural2[@]}" start --neural
nodes "${neural3[@]}" start --neural
nodes "${es9[@]}" start
nodes "${es8[@]}" start
export HYBRID_TEST_OPENSEARCH=http://127.0.0.1:9200,http://127.0.0.1:9230
export HYBRID_TEST_NEURAL=http://127.0.0.1:9220,http://127.0.0.1:9240
export HYBRID_TEST_CLUSTER=http://127.0.0.1:9210,http://127.0.0.1:9211,http://127.0.0.1:9212
export HYBRID_TEST_ELASTICSEARCH=http://127.0.0.1:9250,http://127.0.0.1:9260
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
  bash "$ROOT/scripts/smoke.sh" "$python" http://127.0.0.1:9230
done

# The version floor: the OpenSearch backend's tests (its own file, and the search, chunking and lifecycle
# tests on OpenSearch), alone, on the oldest OpenSearch the README promises.
if [ $# -gt 0 ]; then exit 0; fi
stop_nodes
echo "starting OpenSearch 2.13.0, the oldest version supported"
nodes "${floor[@]}" start
env -u HYBRID_TEST_NEURAL -u HYBRID_TEST_CLUSTER -u HYBRID_TEST_ELASTICSEARCH HYBRID_TEST_OPENSEARCH=http://127.0.0.1:9290 \
  "$VENV/bin/python" -m pytest tests/test_opensearch.py tests/test_search.py tests/test_chunking.py tests/test_lifecycle.py \
  -k "opensearch and not elasticsearch"
