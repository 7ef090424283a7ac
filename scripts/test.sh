#!/usr/bin/env bash
# Build a new environment (from uv's wheel cache), check that every import is a declared dependency,
# start a real OpenSearch node (no Docker needed), run the whole test suite against the local backend
# and that node, and stop the node whatever the outcome.
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
"$ROOT/docker/opensearch-node.sh" start
trap '"$ROOT/docker/opensearch-node.sh" stop' EXIT
export HYBRID_TEST_OPENSEARCH=http://127.0.0.1:${OPENSEARCH_PORT:-9200}
"$VENV/bin/python" -m pytest "$@"
