"""Issue #3 measurements against a running OpenSearch node, on SciFact from ../shared/data.

1. Ingest docs/s into OpenSearch versus raw ``model.encode`` docs/s in the same run (target >= 0.9).
2. Parity with the embedded backend, both holding the same vectors: nDCG@10 per mode on the 300
   test queries (target: BM25 within 0.01), BM25 top-10 overlap, and recall@10 of HNSW against exact
   inner product.
3. Query latency p50/p95 of ``Searcher.search`` on the node for bm25-only, knn-only and hybrid, query
   vectors encoded beforehand (target: hybrid p50 <= 1.2 x the slower leg, since both legs go in one
   _msearch; every mode then fetches the page's fields with one _mget): as ingested (merges may still
   run), then again once force-merged to one segment, as an operator does after a bulk load.

    docker/opensearch-node.sh start
    python bench/opensearch_bench.py [--url http://127.0.0.1:9200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import latency, merge_to_one_segment, precomputed, test_collection  # noqa: E402

from hybrid.backends.base import LegQuery, StoredDocument  # noqa: E402
from hybrid.backends.local import LocalBackend  # noqa: E402
from hybrid.backends.opensearch import Connection, OpenSearchBackend  # noqa: E402
from hybrid.embed import Embedder  # noqa: E402
from hybrid.evaluate import evaluate_modes  # noqa: E402
from hybrid.ingest import ingest_documents  # noqa: E402
from hybrid.searcher import Searcher  # noqa: E402

INDEX = "bench-scifact"


def timed(searcher: Searcher, texts: list[str]) -> dict:
    """Each mode's p50/p95, and hybrid's p50 over the slower leg's."""
    timings: dict = latency(searcher, texts)
    timings["hybrid_over_slower_leg"] = round(
        timings["hybrid"]["p50_ms"] / max(timings["bm25"]["p50_ms"], timings["vector"]["p50_ms"]), 3)
    print(json.dumps(timings), flush=True)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--url", default=os.environ.get("OPENSEARCH_URL", "http://127.0.0.1:9200"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "opensearch.json")
    args = parser.parse_args()
    docs, queries, qrels, judged = test_collection(args.data / "scifact")

    embedder = Embedder()
    embedder.encode(["warm up"])
    cluster = OpenSearchBackend(Connection.from_env(args.url))
    if cluster.exists(INDEX):
        cluster.delete(INDEX)
    report: dict = {"documents": len(docs), "queries": len(judged)}

    started = time.perf_counter()
    vectors = embedder.encode([d.text for d in docs])
    encode_s = time.perf_counter() - started
    ingested = ingest_documents(docs, INDEX, cluster, embedder, progress=False)
    report["ingest"] = {"encode_docs_per_s": round(len(docs) / encode_s, 2),
                        "ingest_docs_per_s": round(len(docs) / ingested.seconds, 2),
                        "ratio": round(encode_s / ingested.seconds, 3), "count": ingested.count}
    print(json.dumps(report["ingest"]), flush=True)

    with tempfile.TemporaryDirectory() as data_dir:
        local = LocalBackend(data_dir)
        with local.writer(INDEX, cluster.meta(INDEX)) as writer:
            writer.write([StoredDocument(d.id, d.fields, d.hash, v.reshape(1, -1)) for d, v in zip(docs, vectors)])
            writer.commit()
        searchers = {"local": Searcher(INDEX, local, embedder=embedder),
                     "opensearch": Searcher(INDEX, cluster, embedder=embedder)}
        report["ndcg@10"] = {
            name: {mode: values["ndcg@10"] for mode, values in
                   evaluate_modes(searcher, queries, qrels, metrics=["ndcg@10"], progress=False)[0].items()}
            for name, searcher in searchers.items()
        }
        print(json.dumps(report["ndcg@10"]), flush=True)

        query_vectors = dict(zip(judged, embedder.encode(list(judged.values()))))
        overlap, recall = [], []
        for query_id, text in judged.items():
            request = LegQuery(text, query_vectors[query_id], 100)  # the searcher's default window
            exact, approximate = local.retrieve(INDEX, request), cluster.retrieve(INDEX, request)
            overlap.append(len({h.id for h in exact["bm25"][:10]} & {h.id for h in approximate["bm25"][:10]}) / 10)
            recall.append(len({h.id for h in exact["vector"][:10]} & {h.id for h in approximate["vector"][:10]}) / 10)
        report["bm25_top10_overlap"] = round(statistics.mean(overlap), 4)
        report["hnsw_recall@10_vs_exact"] = round(statistics.mean(recall), 4)

    texts = list(judged.values())
    searcher = Searcher(INDEX, cluster, embedder=precomputed(embedder, texts))
    report["latency_without_encoding"] = timed(searcher, texts)
    report["segments_as_ingested"] = merge_to_one_segment(cluster, INDEX)
    report["latency_merged"] = timed(searcher, texts)
    cluster.delete(INDEX)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
