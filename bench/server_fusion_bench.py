"""Issue #14 figures: OpenSearch's own hybrid query (neural-search 2.19) against hybrid's client-side
fusion, same node, same index, same query vectors (encoded beforehand, so no timing includes encoding).

- parity, SciFact test, RRF and min_max: the share of queries whose top 10 is the same for
  `Searcher(fusion_on="server")` as for client-side fusion, the same for a caller in another language
  sending hybrid's pipeline request (`?search_pipeline=NAME`, OpenSearch's own tie order), and nDCG@10 each.
- latency, SciFact (5,183 documents) and 100,000 passages (`--large`, cut from the three collections, with
  random unit vectors: search time does not depend on the values), interleaved query by query: p50/p95 of
  `Searcher.search` fused here and on the server (with and without `explain`), each leg alone, the
  request a caller in another language sends through hybrid's pipeline (the peer), and, to say why one
  side is faster, the bare requests for ids alone: the legs' `_msearch` as sent (both legs at once) and
  one leg after the other, against the `hybrid` query.

    OPENSEARCH_PORT=9220 docker/opensearch-node.sh start --neural
    python bench/server_fusion_bench.py [--url http://127.0.0.1:9220] [--large 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cluster import copy_index  # noqa: E402
from common import merge_to_one_segment, passages, precomputed, take_turns  # noqa: E402

from hybrid.backends.base import IndexMeta, StoredDocument  # noqa: E402
from hybrid.backends.local import LocalBackend  # noqa: E402
from hybrid.backends.opensearch import IDS_ONLY, Connection, OpenSearchBackend  # noqa: E402
from hybrid.embed import Embedder  # noqa: E402
from hybrid.evaluate import load_qrels, load_queries, score  # noqa: E402
from hybrid.searcher import MODES, Searcher  # noqa: E402
from hybrid.server_fusion import create_pipeline, delete_pipeline, hybrid_query  # noqa: E402
from hybrid.settings import SearchSettings  # noqa: E402

SCIFACT, LARGE, PIPELINE = "bench-server-fusion", "bench-server-fusion-large", "bench-server-fusion"
RESULTS = Path(__file__).parent / "results" / "server_fusion.json"
SETTINGS = {"rrf": SearchSettings(), "min_max": SearchSettings(fusion="min_max")}
SCORE_TOLERANCE = 1e-5
"""OpenSearch fuses in float32, and min_max normalises the k-NN score ``1 + ip``: its scores differ from
hybrid's in the sixth or seventh decimal."""


def parity(node: OpenSearchBackend, settings: SearchSettings, queries: dict[str, str], qrels: dict,
           encoder) -> dict:
    create_pipeline(node, PIPELINE, settings)
    client = Searcher(SCIFACT, node, embedder=encoder, settings=settings)
    server = Searcher(SCIFACT, node, embedder=encoder, settings=settings, fusion_on="server")
    runs: dict[str, dict] = {"client": {}, "server": {}, "pipeline": {}}
    same = {"server": 0, "pipeline": 0, "pipeline_same_scores_in_same_places": 0}
    for query_id, text in queries.items():
        here = client.search(text, k=10)
        there = server.search(text, k=10)
        body = hybrid_query(text, encoder.vectors[text].tolist(), 10, settings, windows=False)
        piped = node.client.search(index=SCIFACT, body=body, params={"search_pipeline": PIPELINE})["hits"]["hits"]
        runs["client"][query_id] = {hit.id: hit.score for hit in here}
        runs["server"][query_id] = {hit.id: hit.score for hit in there}
        runs["pipeline"][query_id] = {hit["_id"]: hit["_score"] for hit in piped}
        same["server"] += [hit.id for hit in here] == [hit.id for hit in there]
        same["pipeline"] += [hit.id for hit in here] == [hit["_id"] for hit in piped]
        same["pipeline_same_scores_in_same_places"] += len(here) == len(piped) and all(
            abs(hit.score - found["_score"]) <= SCORE_TOLERANCE for hit, found in zip(here, piped))
    delete_pipeline(node, PIPELINE)
    ndcg = score(qrels, runs, ["ndcg@10"])
    return {"same_top10": {side: round(count / len(queries), 4) for side, count in same.items()},
            "ndcg@10": {side: values["ndcg@10"] for side, values in ndcg.items()}}


def timings(node: OpenSearchBackend, index: str, queries: list[str], encoder) -> dict:
    """p50/p95 per way of answering a query, and the client-side hybrid over its slower leg."""
    client = Searcher(index, node, embedder=encoder)
    server = Searcher(index, node, embedder=encoder, fusion_on="server")
    create_pipeline(node, PIPELINE, SearchSettings())

    def bare(text: str) -> tuple[dict, list[dict], dict]:
        """The hybrid query for ids alone (as ``--fusion-on server`` sends it), its legs as one ``_msearch`` (as
        client-side fusion sends them), and the query as a caller sends it (the hits' fields included)."""
        body = hybrid_query(text, encoder.vectors[text].tolist(), 10, SearchSettings(), windows=False)
        legs = [{**IDS_ONLY, "size": 100, "query": leg} for leg in body["query"]["hybrid"]["queries"]]
        return {**body, **IDS_ONLY}, [line for leg in legs for line in ({"index": index}, leg)], body

    ways: dict[str, Callable[[str], object]] = {
        **{f"client {mode}": (lambda text, mode=mode: client.search(text, k=10, mode=mode)) for mode in MODES},
        "server hybrid": lambda text: server.search(text, k=10),
        "peer: hybrid query through the pipeline, 10 hits with fields": lambda text: node.client.search(
            index=index, body=bare(text)[2], params={"search_pipeline": PIPELINE}),
        "bare: _msearch of both legs": lambda text: node.client.msearch(body=bare(text)[1]),
        "bare: _msearch, one leg after the other": lambda text: node.client.msearch(
            body=bare(text)[1], params={"max_concurrent_searches": 1}),
        "bare: hybrid query": lambda text: node.client.search(
            index=index, body=bare(text)[0], params={"search_pipeline": PIPELINE}),
    }
    result = take_turns(ways, queries)
    # Explaining costs several searches: timed on its own, so that it does not slow the others down.
    result |= take_turns({"server hybrid, explain": lambda text: server.search(text, k=10, explain=True)}, queries)
    delete_pipeline(node, PIPELINE)
    slower_leg = max(result["client bm25"]["p50_ms"], result["client vector"]["p50_ms"])
    result["client hybrid p50 / slower leg p50"] = round(result["client hybrid"]["p50_ms"] / slower_leg, 3)
    return result


def large_index(node: OpenSearchBackend, data: Path, size: int) -> None:
    """``size`` passages with random unit vectors, kept between runs (writing them takes minutes)."""
    if node.exists(LARGE) and node.count(LARGE) == size:
        return
    if node.exists(LARGE):
        node.delete(LARGE)
    documents = passages(data, size)
    vectors = np.random.default_rng(0).standard_normal((size, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with node.writer(LARGE, IndexMeta("all-MiniLM-L6-v2", 384)) as writer:
        for start in range(0, size, 256):
            writer.write([StoredDocument(d.id, d.fields, d.hash, vectors[i : i + 1])
                          for i, d in enumerate(documents[start : start + 256], start=start)])
        assert writer.commit() == []
    merge_to_one_segment(node, LARGE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--url", default="http://127.0.0.1:9220")
    parser.add_argument("--large", type=int, default=100_000)
    args = parser.parse_args()
    node = OpenSearchBackend(Connection(args.url))
    if node.exists(SCIFACT):
        node.delete(SCIFACT)
    copy_index(LocalBackend(Path.home() / ".cache" / "hybrid" / "bench-indexes"), "scifact-whole", node, SCIFACT)
    merge_to_one_segment(node, SCIFACT)
    qrels = load_qrels(args.data / "scifact" / "qrels" / "test.tsv")
    queries = {q: t for q, t in load_queries(args.data / "scifact" / "queries.jsonl").items() if q in qrels}
    encoder = precomputed(Embedder(), list(queries.values()))
    result: dict = {"parity": {name: parity(node, settings, queries, qrels, encoder)
                               for name, settings in SETTINGS.items()}}
    print(json.dumps(result, indent=2), flush=True)
    result["latency_scifact"] = timings(node, SCIFACT, list(queries.values()), encoder)
    print(json.dumps(result["latency_scifact"], indent=2), flush=True)
    large_index(node, args.data, args.large)
    result[f"latency_{args.large}"] = timings(node, LARGE, list(queries.values()), encoder)
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
