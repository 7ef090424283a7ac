"""Issue #2 measurements for the embedded (local) backend, on real data from ../shared/data.

1. SciFact: ingest docs/s and raw ``model.encode`` docs/s in the same run (target ratio >= 0.9).
2. Re-ingest of the unchanged corpus as a share of the first ingest (target <= 0.05).
3. Query latency p50/p95 for bm25, vector and hybrid, with and without query encoding, at SciFact's
   5k documents and at 100k passages cut from SciFact, Cranfield and CISI (target: hybrid p50 <= 15 ms
   at 100k without encoding).

    python bench/local_bench.py [--data ../shared/data] [--large 100000] [--queries 300]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import latency, passages, precomputed  # noqa: E402

from hybrid.backends.local import LocalBackend  # noqa: E402
from hybrid.embed import Embedder  # noqa: E402
from hybrid.ingest import ingest, ingest_documents  # noqa: E402
from hybrid.searcher import Searcher  # noqa: E402
from hybrid.sources import read_documents  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--large", type=int, default=100_000, help="passages in the large corpus")
    parser.add_argument("--queries", type=int, default=300, help="queries timed per mode")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "local.json")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "hybrid" / "bench-indexes",
                        help="where the large index is kept between runs")
    args = parser.parse_args()

    embedder = Embedder()
    embedder.encode(["warm up"])
    docs = read_documents(args.data / "scifact" / "corpus.jsonl")
    queries = [json.loads(line)["text"] for line in (args.data / "scifact" / "queries.jsonl").open()][: args.queries]
    report: dict = {"documents": len(docs)}
    with tempfile.TemporaryDirectory() as folder:
        backend = LocalBackend(folder)
        started = time.perf_counter()
        embedder.model.encode([d.text for d in docs], batch_size=32, normalize_embeddings=True)
        encode_s = time.perf_counter() - started
        corpus = args.data / "scifact" / "corpus.jsonl"
        started = time.perf_counter()  # whole ingests: reading and hashing the source included
        ingest(corpus, "scifact", backend, embedder, progress=False)
        ingest_s = time.perf_counter() - started
        started = time.perf_counter()
        ingest(corpus, "scifact", backend, embedder, progress=False)
        reingest_s = time.perf_counter() - started
        started = time.perf_counter()
        Searcher("scifact", backend=LocalBackend(folder), embedder=embedder)
        load_s = time.perf_counter() - started
        report["ingest"] = {
            "encode_docs_per_s": round(len(docs) / encode_s, 2),
            "ingest_docs_per_s": round(len(docs) / ingest_s, 2),
            "ratio": round(encode_s / ingest_s, 3),
            "reingest_s": round(reingest_s, 3),
            "reingest_share": round(reingest_s / ingest_s, 4),
            "load_index_s": round(load_s, 3),
        }
        print(json.dumps(report["ingest"]), flush=True)
        searcher = Searcher("scifact", backend, embedder=embedder)
        report["latency_5k_with_encoding"] = latency(searcher, queries)
        searcher = Searcher("scifact", backend, embedder=precomputed(embedder, queries))
        report["latency_5k_without_encoding"] = latency(searcher, queries)
        print(json.dumps({k: v for k, v in report.items() if k.startswith("latency")}), flush=True)

        # The large index is kept between runs (encoding 100k passages takes a while on 2 cores);
        # re-ingesting it embeds nothing when the passages are unchanged.
        large_backend = LocalBackend(args.cache)
        large = passages(args.data, args.large)
        built = ingest_documents(large, "large", large_backend, embedder, progress=True)
        report["large"] = {"documents": large_backend.count("large"), "ingest_s": round(built.seconds, 1),
                           "embedded_now": built.embedded}
        searcher = Searcher("large", large_backend, embedder=embedder)
        report["latency_large_with_encoding"] = latency(searcher, queries)
        searcher = Searcher("large", large_backend, embedder=precomputed(embedder, queries))
        report["latency_large_without_encoding"] = latency(searcher, queries)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
