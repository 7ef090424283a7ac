"""Issue #13 figures on a three-node cluster (``docker/opensearch-node.sh start --nodes 3``), SciFact.

- shards: vector-leg recall@10/@100 against exact inner product on 3 shards, and nDCG@10 per mode on
  the embedded index, 1 shard, 3 shards with BM25 as query_then_fetch (per-shard statistics) and as
  dfs_query_then_fetch (what hybrid sends), with the hybrid p50/p95 of each;
- faults: kill -9 the node holding the primary (1) while `hybrid ingest` writes SciFact, (2) while a
  query loop runs (p50/p95 before, during and after; errors), (3) while `hybrid reindex` writes;
- throughput: 100,000 passages with vectors computed beforehand (random unit vectors: the encoder is
  not what is measured), hybrid's writer against a bare ``opensearchpy.helpers.parallel_bulk`` of the
  same actions, into indexes of the same mapping and layout, in the same run.

    OPENSEARCH_PORT=9210 docker/opensearch-node.sh start --nodes 3
    python bench/cluster_bench.py shards|faults|throughput [--urls http://127.0.0.1:9210,...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from cluster import Nodes, copy_index  # noqa: E402
from common import passages, percentiles, precomputed  # noqa: E402
from opensearchpy import helpers  # noqa: E402

from hybrid.backends import opensearch as os_backend  # noqa: E402
from hybrid.backends.base import IndexMeta, StoredDocument  # noqa: E402
from hybrid.backends.local import LocalBackend  # noqa: E402
from hybrid.backends.opensearch import Connection, OpenSearchBackend  # noqa: E402
from hybrid.embed import Embedder  # noqa: E402
from hybrid.evaluate import evaluate_modes, load_qrels, load_queries  # noqa: E402
from hybrid.searcher import Searcher  # noqa: E402
from hybrid.settings import DEFAULT_WINDOW  # noqa: E402

CACHE = Path.home() / ".cache" / "hybrid"
RESULTS = Path(__file__).parent / "results" / "cluster.json"
ADMIN_TIMEOUT = 300
"""Seconds for creating, refreshing and deleting a 100k-document index on a cluster still merging."""


def scifact(data: Path) -> tuple[dict[str, str], dict]:
    queries = load_queries(data / "scifact" / "queries.jsonl")
    qrels = load_qrels(data / "scifact" / "qrels" / "test.tsv")
    return {q: text for q, text in queries.items() if q in qrels}, qrels


def fresh(backend: OpenSearchBackend, index: str) -> str:
    if backend.exists(index):
        backend.delete(index)
    return index


def hybrid_latency(searcher: Searcher, queries: list[str]) -> dict[str, float]:
    samples = []
    for query in queries:
        started = time.perf_counter()
        searcher.search(query, k=10)
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


def shards_section(nodes: Nodes, data: Path) -> dict:
    queries, qrels = scifact(data)
    local = LocalBackend(CACHE / "bench-indexes")  # SciFact embedded by relevance_bench.py
    encoder = precomputed(Embedder(), list(queries.values()))
    layouts = {"1 shard": 1, "3 shards": 3}
    for shards in layouts.values():
        copy_index(local, "scifact-whole", OpenSearchBackend(Connection(nodes.urls, shards=shards, replicas=0)),
                   fresh(nodes.backend, f"bench-{shards}-shards"))
    exact = Searcher("scifact-whole", local, embedder=encoder)
    three = Searcher("bench-3-shards", nodes.backend, embedder=encoder)
    recall = {10: 0.0, 100: 0.0}
    for query in queries.values():
        for k in recall:
            best = {h.id for h in exact.search(query, k=k, mode="vector")}
            recall[k] += len(best & {h.id for h in three.search(query, k=k, mode="vector")}) / len(best)
    report: dict = {"window": DEFAULT_WINDOW, "vector_recall_vs_exact_3_shards": {
        f"@{k}": round(total / len(queries), 4) for k, total in recall.items()}}
    searchers = {"embedded": exact, **{name: Searcher(f"bench-{shards}-shards", nodes.backend, embedder=encoder)
                                       for name, shards in layouts.items()}}
    for name, searcher in searchers.items():
        report[name] = scores_and_latency(searcher, queries, qrels)
    dfs = os_backend.LEG_SEARCH_OPTIONS["bm25"]
    os_backend.LEG_SEARCH_OPTIONS["bm25"] = {k: v for k, v in dfs.items() if k != "search_type"}
    report["3 shards, per-shard BM25 statistics"] = scores_and_latency(searchers["3 shards"], queries, qrels)
    os_backend.LEG_SEARCH_OPTIONS["bm25"] = dfs
    return report


def scores_and_latency(searcher: Searcher, queries: dict[str, str], qrels: dict) -> dict:
    scores = evaluate_modes(searcher, queries, qrels, modes=("bm25", "vector", "hybrid"), metrics=["ndcg@10"],
                            progress=False)[0]
    return {"ndcg@10": {mode: round(values["ndcg@10"], 4) for mode, values in scores.items()},
            "hybrid": hybrid_latency(searcher, list(queries.values()))}


def hybrid_command(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hybrid", *args, "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def faults_section(nodes: Nodes, data: Path) -> dict:
    index = fresh(nodes.backend, "bench-faults")
    source = data / "scifact" / "corpus.jsonl"
    ids = [json.loads(line)["_id"] for line in source.open() if line.strip()]
    report = {"ingest": kill_during(nodes, hybrid_command("ingest", str(source), "--index", index, "--opensearch",
                                                          nodes.urls),
                                    lambda: nodes.backend.exists(index) and nodes.backend.count(index) > 1000,
                                    lambda: nodes.backend.snapshot(index).version)}
    stored = nodes.backend.hashes(index)
    report["ingest"].update(count=nodes.backend.count(index), expected=len(ids),
                            missing=len(set(ids) - set(stored)), unexpected=len(set(stored) - set(ids)))
    report["queries"] = queries_during_a_kill(nodes, index, data)
    client = nodes.backend.client
    new = f"{index}_v2"
    report["reindex"] = kill_during(
        nodes, hybrid_command("reindex", "--index", index, "--model", "all-MiniLM-L6-v2", "--precision", "int8",
                             "--opensearch", nodes.urls),
        lambda: client.indices.exists(index=new) and client.count(index=new)["count"] > 1000, lambda: new)
    report["reindex"].update(serving=nodes.backend.snapshot(index).version, count=nodes.backend.count(index))
    return report


def kill_during(nodes: Nodes, run: subprocess.Popen[str], ready, index) -> dict:
    started = time.perf_counter()
    victim, out, err = nodes.kill_during(run, ready, index, timeout=1800)
    return {"killed_node": victim, "exit_code": run.returncode, "seconds": round(time.perf_counter() - started, 1),
            "output": out, "errors": err[-2000:]}


def queries_during_a_kill(nodes: Nodes, index: str, data: Path, per_phase: int = 100) -> dict:
    """per_phase queries before, while the primary's node is dead, and after it is back."""
    queries = list(scifact(data)[0].values())
    searcher = Searcher(index, OpenSearchBackend(Connection(nodes.urls)),
                        embedder=precomputed(Embedder(), queries))
    victim = nodes.primary_of(nodes.backend.snapshot(index).version)
    phases: dict = {}
    for phase in ("before", "during", "after"):
        if phase == "during":
            nodes.kill(victim)
        if phase == "after":
            nodes.restart(victim)
        samples, errors = [], []
        for query in queries[:per_phase]:
            started = time.perf_counter()
            try:
                searcher.search(query, k=10)
            except Exception as error:  # counted: the figure is how many failed
                errors.append(f"{type(error).__name__}: {error}")
            samples.append(time.perf_counter() - started)
        phases[phase] = {**percentiles(samples), "queries": len(samples), "errors": len(errors),
                         "first_error": errors[0] if errors else None}
    return {"killed_node": victim, **phases}


def throughput_section(nodes: Nodes, data: Path, size: int, shards: int, replicas: int, rounds: int) -> dict:
    documents = passages(data, size)
    vectors = np.random.default_rng(0).standard_normal((size, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    stored = [StoredDocument(d.id, d.fields, d.hash, vectors[i : i + 1]) for i, d in enumerate(documents)]
    meta = IndexMeta("all-MiniLM-L6-v2", 384)
    cluster = OpenSearchBackend(Connection(nodes.urls, shards=shards, replicas=replicas))
    report: dict = {"documents": size, "shards": shards, "replicas": replicas, "runs": []}
    for _ in range(rounds):  # alternate, so that drift in the machine's speed hits both
        report["runs"].append({"hybrid": write_with_hybrid(cluster, stored, meta),
                               "parallel_bulk": write_with_parallel_bulk(cluster, stored, meta)})
    for name in ("hybrid", "parallel_bulk"):
        report[f"{name}_docs_per_s"] = round(float(np.median([run[name] for run in report["runs"]])), 1)
    report["ratio"] = round(report["hybrid_docs_per_s"] / report["parallel_bulk_docs_per_s"], 3)
    return report


def write_with_hybrid(cluster: OpenSearchBackend, stored: list[StoredDocument], meta: IndexMeta) -> float:
    index = fresh(cluster, "bench-throughput")
    started = time.perf_counter()
    with cluster.writer(index, meta) as writer:
        for start in range(0, len(stored), 256):  # the batches an ingest hands the writer
            writer.write(stored[start : start + 256])
        assert writer.commit() == []
    rate = len(stored) / (time.perf_counter() - started)
    cluster.delete(index)
    settle(cluster)
    return round(rate, 1)


def settle(cluster: OpenSearchBackend) -> None:
    """Let the cluster finish what the last run left (deletions, pending tasks) before the next is timed."""
    cluster.client.cluster.health(params={"wait_for_status": "green", "wait_for_events": "languid",
                                          "timeout": "300s"}, request_timeout=ADMIN_TIMEOUT)
    print(json.dumps({"settled_at": time.strftime("%H:%M:%S")}), file=sys.stderr, flush=True)


def write_with_parallel_bulk(cluster: OpenSearchBackend, stored: list[StoredDocument], meta: IndexMeta) -> float:
    """What a user would write by hand: the same documents and mapping, opensearch-py's defaults."""
    index = "bench-throughput-peer"
    cluster.client.indices.delete(index=index, params={"ignore_unavailable": "true"}, request_timeout=ADMIN_TIMEOUT)
    cluster.client.indices.create(index=index, body=cluster._index_body(meta, cluster._new_layout(None)),
                                  request_timeout=ADMIN_TIMEOUT)
    actions = ({"_index": index, "_id": d.id, "_source": {**d.fields, "hybrid_id": d.id, "hybrid_hash": d.hash,
                                                           "hybrid_vector": d.vectors[0].tolist()}} for d in stored)
    started = time.perf_counter()
    failed = sum(not ok for ok, _ in helpers.parallel_bulk(cluster.client, actions, request_timeout=120))
    cluster.client.indices.refresh(index=index, request_timeout=ADMIN_TIMEOUT)
    rate = len(stored) / (time.perf_counter() - started)
    assert failed == 0 and cluster.client.count(index=index)["count"] == len(stored)
    cluster.client.indices.delete(index=index, request_timeout=ADMIN_TIMEOUT)
    settle(cluster)
    return round(rate, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=["shards", "faults", "throughput"])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--urls", default="http://127.0.0.1:9210,http://127.0.0.1:9211,http://127.0.0.1:9212")
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    nodes = Nodes(args.urls)
    nodes.wait_green()
    if args.section == "shards":
        result = shards_section(nodes, args.data)
    elif args.section == "faults":
        result = faults_section(nodes, args.data)
    else:
        result = throughput_section(nodes, args.data, args.size, args.shards, args.replicas, args.rounds)
    print(json.dumps(result, indent=2))
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({**stored, args.section: result}, indent=2))


if __name__ == "__main__":
    main()
