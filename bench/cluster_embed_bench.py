"""Issue #27 figures: the cluster embeds (ML Commons, ``hybrid model deploy``) against hybrid embedding, on
SciFact test (the default chunking: 128/64 windows), through the library calls the CLI makes.

    python bench/cluster_embed_bench.py --opensearch http://127.0.0.1:9220 [--cluster http://127.0.0.1:9210]
        [--docs N] [--cluster-docs N]

On each target (a neural-search node; ``--cluster``: a cluster whose every node may run models, on the first
``--cluster-docs`` documents, ingest and agreement only: how the work spreads, not relevance again):
1. ingest docs/s: client-side ``hybrid ingest`` against ``--embed-on server`` (same documents, same model,
   fresh indexes), and on a cluster which nodes ran the model (ML Commons' profile of it);
2. cosine between the cluster's and hybrid's stored vectors of 1,000 documents (every window), and of the
   300 test queries (``_predict``): min and mean;
3. text-only queries (item 3 of the issue): on the client-embedded index, ``embed_on="server"`` (the model
   recorded there by ``deploy_for``) against client-encoded queries: nDCG@10 (hybrid and vector) and the
   share of queries whose top 10 is the same, in the same order;
4. the same figures across indexes (item 2): client-embedded index and queries against server-embedded index
   and queries, with each query whose top 10 differs: the first rank that differs and how far apart the two
   documents there scored (a tie where that gap is under 1e-5 of the score: Lucene breaks ties by its
   internal document number, which differs between two indexes written apart); and again with each leg
   retrieving ``--wide-window`` candidates, where k-NN's graph search (HNSW, approximate, and each index's
   graph its own) comes closer to exact; what differs then is mostly BM25's order of equal scores, which
   RRF's positions carry;
5. query p50/p95, embedding included on both sides: a ``neural`` text query against a client-encoded one,
   on the same index.

Writes bench/results/cluster_embed.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import take_turns

from hybrid.backends.opensearch import VECTOR_FIELD, WINDOWS_FIELD, Connection, OpenSearchBackend
from hybrid.cluster_model import agreement, deploy_for, ingest_on_server
from hybrid.embed import DEFAULT_MODEL
from hybrid.evaluate import load_qrels, load_queries, score
from hybrid.ingest import ingest
from hybrid.onnx_encoder import document_encoder
from hybrid.searcher import Searcher

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def part_of_corpus(docs: int | None, folder: Path) -> Path:
    """The first ``docs`` documents of SciFact (all where None), as a file an ingest reads (nDCG is then only
    a check that both sides agree: most judged documents are missing)."""
    if docs is None:
        return DATA / "corpus.jsonl"
    path = folder / f"scifact-{docs}.jsonl"
    path.write_text("".join((DATA / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:docs]))
    return path


def ingested(backend: OpenSearchBackend, source: Path, where: str) -> dict:
    """Ingest ``source`` into a fresh index embedded on ``where``; docs/s."""
    index = f"bench-embed-{where}"
    if backend.exists(index):
        backend.delete(index)
    encoder = document_encoder(DEFAULT_MODEL)
    started = time.perf_counter()
    if where == "server":
        report = ingest_on_server(source, index, backend, encoder, progress=False)[1]
    else:
        report = ingest(source, index, backend, encoder, progress=False)
    seconds = time.perf_counter() - started
    return {"index": index, "documents": report.count, "seconds": round(seconds, 1),
            "docs_per_s": round(report.count / seconds, 1)}


def stored(backend: OpenSearchBackend, index: str, ids: list[str]) -> dict[str, np.ndarray]:
    """Each of ``ids``'s stored vectors (every window's), as rows."""
    found = backend.client.mget(index=index, body={"ids": ids}, _source=[VECTOR_FIELD, WINDOWS_FIELD])["docs"]
    return {doc["_id"]: np.array([w["vector"] for w in doc["_source"][WINDOWS_FIELD]]
                                 if WINDOWS_FIELD in doc["_source"] else [doc["_source"][VECTOR_FIELD]])
            for doc in found if doc.get("found")}


def vector_agreement(backend: OpenSearchBackend, client_index: str, server_index: str, how_many: int) -> dict:
    ids = [doc_id for doc_id, _ in zip(backend.hashes(client_index), range(how_many))]
    ours, theirs = stored(backend, client_index, ids), stored(backend, server_index, ids)
    cosines = np.concatenate([np.sum(ours[i] * theirs[i], axis=1) / np.linalg.norm(theirs[i], axis=1) for i in ids])
    return {"documents": len(ids), "vectors": len(cosines), "min": round(float(cosines.min()), 6),
            "mean": round(float(cosines.mean()), 6)}


Ranking = dict[str, list[tuple[str, float]]]


def ranked(searcher: Searcher, queries: dict[str, str], mode: str, window: int | None = None) -> Ranking:
    return {qid: [(hit.id, hit.score) for hit in searcher.search(text, k=10, mode=mode,  # type: ignore[arg-type]
                                                                 window=window)]
            for qid, text in queries.items()}


def first_difference(ours: list[tuple[str, float]], theirs: list[tuple[str, float]]) -> dict:
    """Where two top-10 lists part, and whether the two documents at that rank tie: their scores in the run
    that holds both (ours first), as a share of the higher one; None where neither run holds both. Ours
    absent from their top 10 is a document their search did not find (or ranked lower), not a swap."""
    rank = next(r for r, (a, b) in enumerate(zip(ours, theirs)) if a[0] != b[0])
    a, b = ours[rank][0], theirs[rank][0]
    gap = None
    for run in (dict(ours), dict(theirs)):
        if a in run and b in run:
            gap = abs(run[a] - run[b]) / max(abs(run[a]), abs(run[b]))
            break
    return {"rank": rank + 1, "ours": a, "theirs": b, "gap": gap, "tie": gap is not None and gap < 1e-5,
            "ours_absent_there": a not in dict(theirs)}


def compared(runs: dict[str, Ranking], qrels: dict) -> dict:
    """nDCG@10 of both runs, the share of queries with the same ordered top 10, and where the others part."""
    scores = score(qrels, {name: {q: dict(hits) for q, hits in run.items()} for name, run in runs.items()},
                   ["ndcg@10"])
    ours, theirs = runs["client"], runs["server"]
    differing = {q: first_difference(ours[q], theirs[q]) for q in ours
                 if [d for d, _ in ours[q]] != [d for d, _ in theirs[q]]}
    return {"ndcg@10_client": round(scores["client"]["ndcg@10"], 4),
            "ndcg@10_server": round(scores["server"]["ndcg@10"], 4),
            "same_top10": round(1 - len(differing) / len(ours), 4),
            "differing": differing, "differing_ties": sum(d["tie"] for d in differing.values())}


def relevance(backend: OpenSearchBackend, client_index: str, server_index: str, queries: dict[str, str],
              qrels: dict, wide_window: int) -> dict:
    """Text-only queries on one index (the query embedding alone differs), then across the two indexes, at
    the default window and at a wide one."""
    deploy_for(backend, client_index)
    here = Searcher(client_index, backend)
    there = Searcher(client_index, backend, embed_on="server")
    elsewhere = Searcher(server_index, backend, embed_on="server")
    wide = f"across indexes, window {wide_window}"
    figures: dict = {"same index": {}, "across indexes": {}, wide: {}}
    for mode in ("hybrid", "vector"):
        client = ranked(here, queries, mode)
        figures["same index"][mode] = compared({"client": client, "server": ranked(there, queries, mode)}, qrels)
        figures["across indexes"][mode] = compared({"client": client, "server": ranked(elsewhere, queries, mode)},
                                                   qrels)
        figures[wide][mode] = compared({"client": ranked(here, queries, mode, wide_window),
                                        "server": ranked(elsewhere, queries, mode, wide_window)}, qrels)
    figures["latency"] = take_turns({
        "vector, client-encoded": lambda q: here.search(q, k=10, mode="vector"),
        "vector, neural text query": lambda q: there.search(q, k=10, mode="vector"),
        "hybrid, client-encoded": lambda q: here.search(q, k=10),
        "hybrid, neural text query": lambda q: there.search(q, k=10)}, list(queries.values()))
    return figures


def model_profile(backend: OpenSearchBackend) -> dict:
    """Which nodes ran models, and how many predictions each made (ML Commons' profile API)."""
    answer = backend.request("GET", "/_plugins/_ml/profile/models")
    return {node: {model: info.get("model_inference_stats", {}).get("count")
                   for model, info in found.get("models", {}).items()}
            for node, found in answer.get("nodes", {}).items()}


def target(url: str, source: Path, queries: dict[str, str], qrels: dict | None, reuse_client: bool = False,
           wide_window: int = 1000) -> dict:
    """Every figure for one target; relevance and latency only where ``qrels`` are given. ``reuse_client``:
    the client-embedded index an earlier run left whole is kept (its ingest is not timed again)."""
    backend = OpenSearchBackend(Connection(url))
    if reuse_client and backend.exists("bench-embed-client"):
        figures: dict = {"client": {"index": "bench-embed-client", "documents": backend.count("bench-embed-client"),
                                    "reused": True}}
    else:
        figures = {"client": ingested(backend, source, "client")}
    figures["server"] = ingested(backend, source, "server")
    if "docs_per_s" in figures["client"]:
        figures["ingest_speedup"] = round(figures["server"]["docs_per_s"] / figures["client"]["docs_per_s"], 2)
    figures["nodes_that_embedded"] = model_profile(backend)
    client, server = figures["client"]["index"], figures["server"]["index"]
    model_id = backend.meta(server).server_model
    figures["document_cosine"] = vector_agreement(backend, client, server, 1000)
    least, mean = agreement(backend, model_id, DEFAULT_MODEL, "fp32", tuple(queries.values()))
    figures["query_cosine"] = {"queries": len(queries), "min": round(least, 6), "mean": round(mean, 6)}
    if qrels is not None:
        figures.update(relevance(backend, client, server, queries, qrels, wide_window))
    print(url, json.dumps(figures), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opensearch", required=True, help="a node with neural-search (ML Commons)")
    parser.add_argument("--cluster", help="a cluster with neural-search whose every node may run models")
    parser.add_argument("--docs", type=int, help="the first N SciFact documents only [default: all 5,183]")
    parser.add_argument("--cluster-docs", type=int, default=1000, help="the first N for --cluster")
    parser.add_argument("--reuse-client", action="store_true",
                        help="keep the whole client-embedded index of an earlier run on --opensearch")
    parser.add_argument("--wide-window", type=int, default=1000,
                        help="candidates per leg for the second comparison across indexes [default: 1000]")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cluster_embed.json")
    args = parser.parse_args()
    qrels = load_qrels(DATA / "qrels" / "test.tsv")
    queries = {q: text for q, text in load_queries(DATA / "queries.jsonl").items() if q in qrels}
    with tempfile.TemporaryDirectory(prefix="hybrid-bench-") as scratch:
        source = part_of_corpus(args.docs, Path(scratch))
        results = {"one node": target(args.opensearch, source, queries, qrels, args.reuse_client, args.wide_window)}
        if args.cluster:
            part = part_of_corpus(args.cluster_docs, Path(scratch))
            results[f"one node, first {args.cluster_docs}"] = target(args.opensearch, part, queries, None)
            results[f"cluster, first {args.cluster_docs}"] = target(args.cluster, part, queries, None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
