"""Issue #25 measurements: OpenSearch 2.19 against 3.x, and k-NN choices on 3.x, SciFact, all in one run.

1. The same documents and vectors (the model's, computed once) on a 2.19 node and a 3.x node: nDCG@10 per
   mode on the 300 test queries, latency p50/p95 per mode (query vectors encoded beforehand), hybrid over
   the slower leg, and ingest docs/s with hybrid's writer.
2. On 3.x, k-NN variants of the same index, each force-merged to one segment: Lucene HNSW (hybrid's
   default) and, with ``--faiss``, faiss HNSW and faiss ``on_disk`` (binary-quantised vectors rescored at
   full precision) at compression 32x and 8x: vector recall@10 against the exact inner product, nDCG@10
   per mode, vector and hybrid p50, ingest docs/s. faiss needs the k-NN plugin's native libraries, which
   the official tarball and Docker image carry and the plugin zip on Maven Central (what
   docker/opensearch-node.sh installs) does not: there, the node exits at the first refresh of a faiss
   index (UnsatisfiedLinkError: opensearchknn_faiss).
3. The page's fields (one ``_mget`` of ten documents) and hybrid p50, and the index's size: on 3.x with
   the vector derived from the k-NN index (3.x's default, ``index.knn.derived_source.enabled``) and
   stored in ``_source``, and on 2.19 (stored), all taking turns.

    OPENSEARCH_VERSION=2.19.1 docker/opensearch-node.sh start
    OPENSEARCH_VERSION=3.6.0 OPENSEARCH_PORT=9230 docker/opensearch-node.sh start
    python bench/opensearch_versions_bench.py [--old URL] [--new URL]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Lookup, embedded_documents, latency, merge_to_one_segment, precomputed, take_turns, test_collection

from hybrid.backends.base import IndexMeta, LegQuery, StoredDocument
from hybrid.backends.local import LocalBackend
from hybrid.backends.opensearch import VECTOR_FIELD, Connection, IndexLayout, OpenSearchBackend
from hybrid.embed import Embedder
from hybrid.evaluate import evaluate_modes
from hybrid.searcher import Searcher

os.environ.setdefault("HF_HUB_OFFLINE", "1")
INDEX = "bench-scifact"


class Variant(OpenSearchBackend):
    """The OpenSearch backend creating its indexes with ``vector`` merged into the vector field's mapping and
    ``settings`` into the index settings (the k-NN choices compared here)."""

    def __init__(self, url: str, vector: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
                 engine: str = "lucene") -> None:
        super().__init__(Connection(url, engine=engine))
        self.vector, self.settings = vector or {}, settings or {}

    def _index_body(self, meta: IndexMeta, layout: IndexLayout, previous: str | None = None) -> dict[str, Any]:
        body = super()._index_body(meta, layout, previous)
        field = body["mappings"]["properties"][VECTOR_FIELD]
        field.update(self.vector)
        if "mode" in self.vector:  # a mode chooses the method's parameters itself; only the engine may be said
            field["method"] = {"name": "hnsw", "engine": "faiss", "space_type": field["method"]["space_type"]}
        body["settings"]["index"].update(self.settings)
        return body


VARIANTS = {
    "lucene": {},
    "faiss": {"engine": "faiss"},
    "faiss on_disk 32x": {"vector": {"mode": "on_disk", "compression_level": "32x"}},
    "faiss on_disk 8x": {"vector": {"mode": "on_disk", "compression_level": "8x"}},
}


def write(backend: OpenSearchBackend | LocalBackend, stored: list[StoredDocument], meta: IndexMeta,
          index: str = INDEX) -> float:
    """``stored`` into a fresh ``index`` with hybrid's writer, in the batches ingest hands it; docs/s."""
    if backend.exists(index):
        backend.delete(index)
    started = time.perf_counter()
    with backend.writer(index, meta) as writer:
        for start in range(0, len(stored), 256):
            writer.write(stored[start:start + 256])
        assert writer.commit() == []
    rate = len(stored) / (time.perf_counter() - started)
    if isinstance(backend, OpenSearchBackend):
        merge_to_one_segment(backend, index)
    return rate


def ndcg(searcher: Searcher, queries: dict[str, str], qrels: dict) -> dict[str, float]:
    found = evaluate_modes(searcher, queries, qrels, metrics=["ndcg@10"], progress=False)[0]
    return {mode: round(values["ndcg@10"], 4) for mode, values in found.items()}


def vector_recall(exact: LocalBackend, backend: OpenSearchBackend, query_vectors: Lookup) -> float:
    """Mean share of the exact top 10 by inner product that the cluster's k-NN search finds."""
    shares = []
    for vector in query_vectors.vectors.values():
        request = LegQuery(None, vector, 100)  # the searcher's default window
        truth, found = exact.retrieve(INDEX, request)["vector"][:10], backend.retrieve(INDEX, request)["vector"][:10]
        shares.append(len({h.id for h in truth} & {h.id for h in found}) / 10)
    return round(statistics.mean(shares), 4)


def timings(backend: OpenSearchBackend, query_vectors: Lookup, queries: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = latency(Searcher(INDEX, backend, embedder=query_vectors), queries)
    found["hybrid_over_slower_leg"] = round(
        found["hybrid"]["p50_ms"] / max(found["bm25"]["p50_ms"], found["vector"]["p50_ms"]), 3)
    return found


def measure(backend: OpenSearchBackend, stored: list[StoredDocument], meta: IndexMeta, exact: LocalBackend,
            query_vectors: Lookup, judged: dict[str, str], qrels: dict) -> dict[str, Any]:
    rates = [write(backend, stored, meta) for _ in range(2)]  # the second on a node that has warmed up
    report = {"ingest_docs_per_s": round(max(rates), 1),
              "ndcg@10": ndcg(Searcher(INDEX, backend, embedder=query_vectors), judged, qrels),
              "vector_recall@10_vs_exact": vector_recall(exact, backend, query_vectors),
              "latency_without_encoding": timings(backend, query_vectors, list(judged.values()))}
    print(json.dumps(report), flush=True)
    return report


def page_fetch(backends: dict[str, OpenSearchBackend], stored: list[StoredDocument], meta: IndexMeta,
               query_vectors: Lookup, queries: list[str]) -> dict[str, Any]:
    """The ``_mget`` of each query's hybrid top ten, and hybrid p50, each way (an index of its own on the
    same node) taking turns query by query."""
    indexes = {name: f"{INDEX}-{number}" for number, name in enumerate(backends)}
    searchers = {name: Searcher(indexes[name], backend, embedder=query_vectors) for name, backend in backends.items()}
    pages = {}
    for name, backend in backends.items():
        write(backend, stored, meta, indexes[name])
        pages[name] = {q: [hit.id for hit in searchers[name].search(q, k=10)] for q in queries}
    ways: dict[str, Any] = {}
    for name, backend in backends.items():
        ways[f"page fetch, {name}"] = lambda q, b=backend, n=name: b.sources(indexes[n], pages[n][q])
        ways[f"hybrid, {name}"] = lambda q, s=searchers[name]: s.search(q, k=10)
    found: dict[str, Any] = take_turns(ways, queries)
    found["index_bytes"] = {name: backend.client.indices.stats(index=indexes[name], metric="store")["_all"]
                            ["primaries"]["store"]["size_in_bytes"] for name, backend in backends.items()}
    for name, backend in backends.items():
        backend.delete(indexes[name])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--old", default="http://127.0.0.1:9200", help="an OpenSearch 2.19 node")
    parser.add_argument("--new", default="http://127.0.0.1:9230", help="an OpenSearch 3.x node")
    parser.add_argument("--faiss", action="store_true", help="also faiss (a node with k-NN's native libraries)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "opensearch_versions.json")
    args = parser.parse_args()
    docs, _, qrels, judged = test_collection(args.data / "scifact")
    embedder = Embedder()
    meta, stored = embedded_documents(embedder, docs)
    query_vectors = precomputed(embedder, list(judged.values()))
    versions = {url: OpenSearchBackend(Connection(url)).client.info()["version"]["number"]
                for url in (args.old, args.new)}
    report: dict[str, Any] = {"documents": len(docs), "queries": len(judged), "versions": versions}

    with tempfile.TemporaryDirectory() as data_dir:
        exact = LocalBackend(data_dir)
        write(exact, stored, meta)
        report["embedded_ndcg@10"] = ndcg(Searcher(INDEX, exact, embedder=query_vectors), judged, qrels)
        report["by_version"] = {versions[url]: measure(OpenSearchBackend(Connection(url)), stored, meta, exact,
                                                       query_vectors, judged, qrels)
                                for url in (args.old, args.new)}
        report["knn_on_3x"] = {name: measure(Variant(args.new, **options), stored, meta, exact, query_vectors,
                                             judged, qrels)
                               for name, options in VARIANTS.items() if args.faiss or name == "lucene"}
    report["page_fetch"] = page_fetch(
        {f"{versions[args.new]}, vector derived (its default)": Variant(args.new),
         f"{versions[args.new]}, vector in _source": Variant(args.new, settings={"knn.derived_source.enabled": False}),
         f"{versions[args.old]}, vector in _source": Variant(args.old)},
        stored, meta, query_vectors, list(judged.values()))
    print(json.dumps(report["page_fetch"]), flush=True)
    OpenSearchBackend(Connection(args.old)).delete(INDEX)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
