#!/usr/bin/env bash
# A quick check that hybrid installs and works on one Python: a fresh `[all]` environment ingests the sample
# corpus, searches it embedded (and on OpenSearch where OPENSEARCH_URL is set) and scores it with `hybrid
# eval`; a fresh base (query-only) environment then searches the same index. test.sh runs it on the
# Pythons the full suite does not run on.
#
#   scripts/smoke.sh PYTHON [OPENSEARCH_URL]      e.g. scripts/smoke.sh python3.13 http://127.0.0.1:9200
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
python=${1:?usage: scripts/smoke.sh PYTHON [OPENSEARCH_URL]}
opensearch=${2:-}
# The embedded steps must stay embedded: the CLI would take a cluster or data folder from these.
unset OPENSEARCH_URL HYBRID_DATA_DIR HYBRID_FUSION_ON HYBRID_QUERY_ENCODER
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sample=$ROOT/examples/sample
export HYBRID_ENCODER_DIR=$work/encoders
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# expect_top JSON ID: the first hit of a `hybrid search --json` answer is ID.
expect_top() {
  "$work/all/bin/python" -c 'import json, sys; hits = json.loads(sys.argv[1]); sys.exit(hits[0]["id"] != sys.argv[2])' \
    "$1" "$2" || { echo "smoke $version: expected $2 first, got: $1" >&2; exit 1; }
}

new_env "$work/all" all "$python"
hybrid=$work/all/bin/hybrid
"$hybrid" ingest "$sample/corpus.jsonl" --index smoke --data-dir "$work/indexes" --quiet >/dev/null
expect_top "$("$hybrid" search "planets around other stars" --index smoke --data-dir "$work/indexes" --json)" exoplanets
"$hybrid" eval --index smoke --data-dir "$work/indexes" --queries "$sample/queries.jsonl" \
  --qrels "$sample/qrels/test.tsv" --json >"$work/eval.json"
"$work/all/bin/python" - "$work/eval.json" <<'PY'
import json, sys
scores = json.load(open(sys.argv[1]))
assert scores["hybrid"]["ndcg@10"] > 0.5, scores
PY
if [ -n "$opensearch" ]; then
  index=smoke-py${version/./}
  "$hybrid" ingest "$sample/corpus.jsonl" --index "$index" --opensearch "$opensearch" --quiet >/dev/null
  expect_top "$("$hybrid" search "planets around other stars" --index "$index" --opensearch "$opensearch" --json)" exoplanets
  "$hybrid" index delete "$index" --opensearch "$opensearch" --yes >/dev/null
fi

new_env "$work/base" "" "$python"  # query-only: no torch; reads the index and the encoder made above
expect_top "$("$work/base/bin/hybrid" search "planets around other stars" --index smoke --data-dir "$work/indexes" --json)" exoplanets
"$work/base/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("torch") is not None)' \
  || { echo "smoke $version: the base install brought torch" >&2; exit 1; }
echo "smoke test passed on Python $("$python" -c 'import platform; print(platform.python_version())')"
