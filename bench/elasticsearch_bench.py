"""Issue #24 measurements on Elasticsearch, on SciFact from ../shared/data, all in one run on one machine.

1. nDCG@10 per mode on the 300 test queries: Elasticsearch vs the embedded index vs OpenSearch, all three
   holding the same documents and vectors (the model's, computed once).
2. Vector recall@10 of Elasticsearch's HNSW search (at its default ``num_candidates``) against the exact
   inner product, and BM25 top-10 overlap with the embedded index.
3. Latency p50/p95 per mode on Elasticsearch (query vectors encoded beforehand), and hybrid over the slower
   leg: both legs go in one ``_msearch``.
4. Ingest docs/s with vectors computed beforehand: hybrid's writer vs elasticsearch-py's bare
   ``helpers.parallel_bulk`` (same documents, same mapping, its default four threads).
5. With ``--cluster``: a three-node Elasticsearch cluster, the node holding the primary killed while
   hybrid's writer ingests: every document must be there exactly once.

    docker/elasticsearch-node.sh start; docker/opensearch-node.sh start
    ELASTICSEARCH_PORT=9270 docker/elasticsearch-node.sh start --nodes 3
    python bench/elasticsearch_bench.py [--url URL] [--opensearch URL] [--cluster URL,URL,URL]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the cluster's node handling

from cluster import Nodes, wait_for  # noqa: E402
from common import embedded_documents, latency, precomputed, test_collection  # noqa: E402
from elasticsearch import helpers  # noqa: E402

from hybrid.backends.base import IndexMeta, LegQuery, StoredDocument  # noqa: E402
from hybrid.backends.elasticsearch import ElasticsearchBackend  # noqa: E402
from hybrid.backends.local import LocalBackend  # noqa: E402
from hybrid.backends.opensearch import Connection, OpenSearchBackend  # noqa: E402
from hybrid.embed import Embedder  # noqa: E402
from hybrid.evaluate import evaluate_modes  # noqa: E402
from hybrid.searcher import Searcher  # noqa: E402

INDEX, PEER = "bench-scifact", "bench-scifact-peer"


def write(backend: OpenSearchBackend | LocalBackend, stored: list[StoredDocument], meta: IndexMeta) -> float:
    """Write ``stored`` into a fresh ``INDEX`` with hybrid's writer, in the batches ingest hands it; docs/s."""
    if backend.exists(INDEX):
        backend.delete(INDEX)
    if isinstance(backend, OpenSearchBackend):  # created beforehand, as the peer's index is
        backend.create(INDEX, meta)
    started = time.perf_counter()
    with backend.writer(INDEX, meta) as writer:
        for start in range(0, len(stored), 256):  # the batches ingest hands the writer
            writer.write(stored[start:start + 256])
        assert writer.commit() == []
    return len(stored) / (time.perf_counter() - started)


def write_with_parallel_bulk(cluster: ElasticsearchBackend, stored: list[StoredDocument], meta: IndexMeta) -> float:
    """What a user would write by hand: the same documents and mapping, elasticsearch-py's defaults."""
    client = cluster._writes
    client.indices.delete(index=PEER, ignore_unavailable=True)
    client.indices.create(index=PEER, body=cluster._index_body(meta, cluster._new_layout(None)))
    actions = ({"_index": PEER, "_id": d.id, "_source": {**d.fields, "hybrid_id": d.id, "hybrid_hash": d.hash,
                                                          "hybrid_vector": d.vectors[0].tolist()}} for d in stored)
    started = time.perf_counter()
    for ok, item in helpers.parallel_bulk(client, actions, chunk_size=500):
        assert ok, item
    client.indices.refresh(index=PEER)
    rate = len(stored) / (time.perf_counter() - started)
    assert client.count(index=PEER)["count"] == len(stored)
    client.indices.delete(index=PEER)
    return rate


def ndcg(searcher: Searcher, queries: dict[str, str], qrels: dict) -> dict[str, float]:
    found = evaluate_modes(searcher, queries, qrels, metrics=["ndcg@10"], progress=False)[0]
    return {mode: values["ndcg@10"] for mode, values in found.items()}


def killed_mid_ingest(urls: str, stored: list[StoredDocument], meta: IndexMeta) -> dict:
    """Kill the node holding the index's primary while hybrid's writer sends the documents, then count."""
    nodes = Nodes(urls, engine="elasticsearch")
    nodes.wait_green()
    cluster = nodes.backend
    if cluster.exists(INDEX):
        cluster.delete(INDEX)
    errors: list[BaseException] = []
    written: list[int] = []

    def ingest() -> None:
        try:
            with cluster.writer(INDEX, meta) as writer:
                for start in range(0, len(stored), 256):
                    writer.write(stored[start:start + 256])
                    written.append(start)
                failures = writer.commit()
            assert failures == [], failures[:3]
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    runner = threading.Thread(target=ingest)
    runner.start()
    wait_for(lambda: len(written) * 256 >= len(stored) // 3 or not runner.is_alive(), 600)
    victim = nodes.primary_of(f"{INDEX}_v1") if runner.is_alive() else None
    if victim is not None:
        nodes.kill(victim)
    runner.join()
    if victim is not None:
        nodes.restart(victim)
    ids = {hit["_id"] for hit in helpers.scan(cluster.client, index=INDEX, _source=False)}
    report = {"documents": len(stored), "killed_node": victim, "count": cluster.count(INDEX),
              "distinct_ids": len(ids), "missing": len({d.id for d in stored} - ids),
              "errors": [str(error) for error in errors]}
    cluster.delete(INDEX)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--url", default=os.environ.get("ELASTICSEARCH_URL", "http://127.0.0.1:9250"))
    parser.add_argument("--opensearch", default=os.environ.get("OPENSEARCH_URL", "http://127.0.0.1:9200"))
    parser.add_argument("--cluster", help="a three-node Elasticsearch cluster's URLs, for the node-kill run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "elasticsearch.json")
    args = parser.parse_args()
    docs, queries, qrels, judged = test_collection(args.data / "scifact")

    embedder = Embedder()
    meta, stored = embedded_documents(embedder, docs)
    elastic = ElasticsearchBackend(Connection.from_env(args.url, "ELASTICSEARCH"))
    opensearch = OpenSearchBackend(Connection.from_env(args.opensearch))
    report: dict = {"documents": len(docs), "queries": len(judged), "elasticsearch": elastic.location}

    rates: dict[str, list[float]] = {"hybrid": [], "parallel_bulk": []}
    for _ in range(3):  # taking turns, so that neither gains from a node that has warmed up
        rates["hybrid"].append(write(elastic, stored, meta))
        rates["parallel_bulk"].append(write_with_parallel_bulk(elastic, stored, meta))
    report["ingest_docs_per_s"] = {way: round(statistics.median(runs), 1) for way, runs in rates.items()}
    report["ingest_docs_per_s"]["ratio"] = round(statistics.median(rates["hybrid"])
                                                 / statistics.median(rates["parallel_bulk"]), 3)
    print(json.dumps(report["ingest_docs_per_s"]), flush=True)
    write(opensearch, stored, meta)

    query_vectors = precomputed(embedder, list(judged.values()))
    with tempfile.TemporaryDirectory() as data_dir:
        local = LocalBackend(data_dir)
        write(local, stored, meta)
        backends = {"embedded": local, "opensearch": opensearch, "elasticsearch": elastic}
        report["ndcg@10"] = {name: ndcg(Searcher(INDEX, backend, embedder=query_vectors), judged, qrels)
                             for name, backend in backends.items()}
        print(json.dumps(report["ndcg@10"]), flush=True)
        overlap, recall = [], []
        for text in judged.values():
            request = LegQuery(text, query_vectors.encode([text])[0], 100)  # the searcher's default window
            exact, approximate = local.retrieve(INDEX, request), elastic.retrieve(INDEX, request)
            overlap.append(len({h.id for h in exact["bm25"][:10]} & {h.id for h in approximate["bm25"][:10]}) / 10)
            recall.append(len({h.id for h in exact["vector"][:10]} & {h.id for h in approximate["vector"][:10]}) / 10)
        report["bm25_top10_overlap_with_embedded"] = round(statistics.mean(overlap), 4)
        report["vector_recall@10_vs_exact"] = round(statistics.mean(recall), 4)
        print(json.dumps({key: report[key] for key in ("bm25_top10_overlap_with_embedded",
                                                      "vector_recall@10_vs_exact")}), flush=True)

    timings: dict = latency(Searcher(INDEX, elastic, embedder=query_vectors), list(judged.values()))
    timings["hybrid_over_slower_leg"] = round(
        timings["hybrid"]["p50_ms"] / max(timings["bm25"]["p50_ms"], timings["vector"]["p50_ms"]), 3)
    report["latency_without_encoding"] = timings
    print(json.dumps(timings), flush=True)
    elastic.delete(INDEX)
    opensearch.delete(INDEX)

    if args.cluster:
        report["node_killed_mid_ingest"] = killed_mid_ingest(args.cluster, stored, meta)
        print(json.dumps(report["node_killed_mid_ingest"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
