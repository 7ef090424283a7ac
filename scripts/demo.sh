#!/usr/bin/env bash
# Install hybrid into .venv (made anew on each run, from uv's wheel cache), ingest a corpus into the
# embedded (local) index and run a hybrid query. Uses ../shared/data/cranfield when present, else the
# small sample shipped in examples/.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
VENV=$ROOT/.venv
new_env "$VENV" all
corpus=$ROOT/../shared/data/cranfield/corpus.jsonl
query=${1:-"boundary layer separation in supersonic flow"}
if [ ! -f "$corpus" ]; then
  corpus=$ROOT/examples/sample/corpus.jsonl
  query=${1:-"how do plants make energy from light"}
fi
"$VENV/bin/hybrid" ingest "$corpus" --index demo
"$VENV/bin/hybrid" search "$query" --index demo -k 5
echo "Try more: $VENV/bin/hybrid search \"your words\" --index demo   (or: source $VENV/bin/activate)"
