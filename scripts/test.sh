#!/usr/bin/env bash
# Build a new environment (from uv's wheel cache), check that every import is a declared dependency,
# start a real OpenSearch node, a three-node cluster and a node with neural-search (no Docker needed),
# run the whole test suite against the local backend and them, and stop them whatever the outcome.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v unzip >/dev/null || missing+=(unzip)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
VENV=$ROOT/.venv-test  # made anew on every run: never an environment an earlier run left behind
new_env "$VENV" test
cd "$ROOT"
"$VENV/bin/deptry" .
# One node for most tests; a three-node cluster for layout, shard and node-failure tests; a node with
# neural-search for OpenSearch's own hybrid query.
cluster_port=${HYBRID_TEST_CLUSTER_PORT:-9210}
neural_port=${HYBRID_TEST_NEURAL_PORT:-9220}
stop_nodes() {
  "$ROOT/docker/opensearch-node.sh" stop || true
  OPENSEARCH_PORT=$cluster_port "$ROOT/docker/opensearch-node.sh" stop --nodes 3 || true
  OPENSEARCH_PORT=$neural_port "$ROOT/docker/opensearch-node.sh" stop --neural || true
}
trap stop_nodes EXIT
"$ROOT/docker/opensearch-node.sh" start
OPENSEARCH_PORT=$cluster_port "$ROOT/docker/opensearch-node.sh" start --nodes 3
OPENSEARCH_PORT=$neural_port "$ROOT/docker/opensearch-node.sh" start --neural
export HYBRID_TEST_NEURAL=http://127.0.0.1:$neural_port
export HYBRID_TEST_OPENSEARCH=http://127.0.0.1:${OPENSEARCH_PORT:-9200}
export HYBRID_TEST_CLUSTER=http://127.0.0.1:$cluster_port,http://127.0.0.1:$((cluster_port + 1)),http://127.0.0.1:$((cluster_port + 2))
"$VENV/bin/python" -m pytest "$@"
