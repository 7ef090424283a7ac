"""Issue #10: what the embedded store's safety costs (writer lock, numbered versions, fsync before the
swap, checks on load, a snapshot per query), measured against an earlier commit in the same run.

Both sides ingest SciFact (5,183 documents) into a new embedded index and then answer the 300 test
queries in hybrid mode (k=10). Vectors come from the bundled model once, up front, and are served
from memory to both sides: the safety lives in reading, hashing, writing and loading, and embedding
(about 260 s on 2 cores) would be the same for both and drown the difference. Sides alternate, each
round in a fresh process, and the medians over the rounds are reported.

    python bench/safety_cost.py [--before 3109982] [--rounds 3] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]

SIDE = """
import json, statistics, sys, tempfile, time
import numpy as np
from hybrid.backends.local import LocalBackend
from hybrid.embed import Embedder
from hybrid.ingest import ingest
from hybrid.searcher import Searcher

corpus, queries, cache = sys.argv[1:4]
store = np.load(cache, allow_pickle=False)
texts = json.loads(open(cache + ".texts.json").read())
lookup = dict(zip(texts, store))


class Cached(Embedder):
    dimension = 384

    def encode(self, items, batch_size=32):
        return np.stack([lookup[t] for t in items]) if items else np.zeros((0, 384), np.float32)

    def encode_query(self, query):
        return lookup[query]


embedder = Cached()
questions = [json.loads(line)["text"] for line in open(queries)]
with tempfile.TemporaryDirectory() as folder:
    started = time.perf_counter()
    ingest(corpus, "scifact", LocalBackend(folder), embedder, progress=False)
    ingest_s = time.perf_counter() - started
    searcher = Searcher("scifact", LocalBackend(folder), embedder=embedder)
    for q in questions[:20]:
        searcher.search(q, k=10)
    samples = []
    for q in questions:
        started = time.perf_counter()
        searcher.search(q, k=10)
        samples.append(time.perf_counter() - started)
import hybrid
print(json.dumps({"ingest_s": ingest_s, "search_p50_ms": statistics.median(samples) * 1000, "code": hybrid.__file__}))
"""


def cache_vectors(corpus: Path, queries: Path, cache: Path) -> None:
    """Encode every document text (as ingest builds it) and query once with the bundled model."""
    if cache.exists():
        return
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from hybrid.embed import Embedder
    from hybrid.sources import read_documents

    texts = [d.text for d in read_documents(corpus)] + [json.loads(line)["text"] for line in queries.open()]
    texts = list(dict.fromkeys(texts))
    print(f"encoding {len(texts)} texts once (a few minutes)", flush=True)
    np.save(cache, Embedder().encode(texts))
    Path(f"{cache}.texts.json").write_text(json.dumps(texts))


def checkout(revision: str, folder: Path) -> Path:
    archive = folder / "before.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), revision, "hybrid"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder / "before", filter="data")
    return folder / "before"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--before", default="3109982", help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "hybrid" / "scifact-vectors.npy")
    args = parser.parse_args()
    corpus, queries = args.data / "scifact" / "corpus.jsonl", args.data / "scifact" / "queries.jsonl"
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    cache_vectors(corpus, queries, args.cache)
    results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"before": checkout(args.before, Path(scratch)), "after": ROOT}
        for _ in range(args.rounds):
            for side, tree in trees.items():
                run = subprocess.run([sys.executable, "-c", SIDE, str(corpus), str(queries), str(args.cache)],
                                     capture_output=True, text=True, check=True,
                                     env={**os.environ, "PYTHONPATH": str(tree)}, cwd=scratch)
                results[side].append(json.loads(run.stdout.strip().splitlines()[-1]))
                print(side, results[side][-1], flush=True)
    for side, tree in trees.items():  # each side really ran its own code
        assert all(Path(r.pop("code")).is_relative_to(tree) for r in results[side]), side
    summary = {side: {key: round(statistics.median(r[key] for r in rows), 3) for key in rows[0]}
               for side, rows in results.items()}
    summary["ratio_after_to_before"] = {key: round(summary["after"][key] / summary["before"][key], 3)
                                        for key in summary["after"]}
    print(json.dumps({"before": args.before, "rounds": args.rounds, **summary}, indent=2))


if __name__ == "__main__":
    main()
