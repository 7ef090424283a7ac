"""Issue #14 figures: OpenSearch's own hybrid query (neural-search 2.19) against hybrid's client-side
fusion, same node, same SciFact index, same query vectors (encoded beforehand, so no timing includes
encoding).

For RRF and min_max: the share of test queries whose top 10 is identical, nDCG@10 of each side, and
hybrid p50/p95 of `Searcher.search` (one `_msearch` of both legs, fusion in Python, one `_mget` of the
page) against one `hybrid` query through the pipeline hybrid writes (interleaved, query by query).

    OPENSEARCH_PORT=9220 docker/opensearch-node.sh start --neural
    python bench/server_fusion_bench.py [--url http://127.0.0.1:9220]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cluster import copy_index  # noqa: E402
from common import percentiles, precomputed  # noqa: E402

from hybrid.backends.local import LocalBackend  # noqa: E402
from hybrid.backends.opensearch import Connection, OpenSearchBackend  # noqa: E402
from hybrid.embed import Embedder  # noqa: E402
from hybrid.evaluate import load_qrels, load_queries, score  # noqa: E402
from hybrid.searcher import Searcher, SearchSettings  # noqa: E402
from hybrid.server_fusion import create_pipeline, delete_pipeline, hybrid_query  # noqa: E402

INDEX, PIPELINE = "bench-server-fusion", "bench-server-fusion"
RESULTS = Path(__file__).parent / "results" / "server_fusion.json"


def compare(node: OpenSearchBackend, settings: SearchSettings, queries: dict[str, str], qrels: dict) -> dict:
    create_pipeline(node, PIPELINE, settings)
    encoder = precomputed(Embedder(), list(queries.values()))
    searcher = Searcher(INDEX, node, embedder=encoder, settings=settings)
    client_run, server_run, client_times, server_times, same = {}, {}, [], [], 0
    for query_id, text in queries.items():
        started = time.perf_counter()
        client = searcher.search(text, k=10)
        client_times.append(time.perf_counter() - started)
        body = hybrid_query(text, encoder.vectors[text].tolist(), 10, settings, windows=False)
        started = time.perf_counter()
        served = node.client.search(index=INDEX, body=body, params={"search_pipeline": PIPELINE})["hits"]["hits"]
        server_times.append(time.perf_counter() - started)
        client_run[query_id] = {hit.id: hit.score for hit in client}
        server_run[query_id] = {hit["_id"]: hit["_score"] for hit in served}
        same += [hit.id for hit in client] == [hit["_id"] for hit in served]
    delete_pipeline(node, PIPELINE)
    ndcg = score(qrels, {"client": client_run, "server": server_run}, ["ndcg@10"])
    return {"same_top10": round(same / len(queries), 4), "ndcg@10": {side: v["ndcg@10"] for side, v in ndcg.items()},
            "client_p50_p95": percentiles(client_times), "server_p50_p95": percentiles(server_times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--url", default="http://127.0.0.1:9220")
    args = parser.parse_args()
    node = OpenSearchBackend(Connection(args.url))
    if node.exists(INDEX):
        node.delete(INDEX)
    copy_index(LocalBackend(Path.home() / ".cache" / "hybrid" / "bench-indexes"), "scifact-whole", node, INDEX)
    qrels = load_qrels(args.data / "scifact" / "qrels" / "test.tsv")
    queries = {q: t for q, t in load_queries(args.data / "scifact" / "queries.jsonl").items() if q in qrels}
    result = {name: compare(node, settings, queries, qrels) for name, settings in
              {"rrf": SearchSettings(), "min_max": SearchSettings(fusion="min_max")}.items()}
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
