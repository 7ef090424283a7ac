"""Relevance of fusion methods and chunking (issue 12): settings chosen on train queries, scored on test.

    python bench/relevance_bench.py chunking   # SciFact: window/stride on train, vector leg and tuned hybrid
    python bench/relevance_bench.py fusion     # SciFact, Cranfield, CISI: RRF defaults vs the tuned fusion
    python bench/relevance_bench.py opensearch # the same indexes on OpenSearch (OPENSEARCH_URL): |local - OS|

Documents are encoded by the encoder ingest uses (ONNX fp32), through a cache by text, so a second run
re-encodes nothing; the first run's ingest seconds are the real cost. Results go to
bench/results/relevance.json (one entry per section).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import CachedEncoder, merge_to_one_segment  # noqa: E402

from hybrid.backends.base import Backend  # noqa: E402
from hybrid.backends.local import LocalBackend  # noqa: E402
from hybrid.evaluate import evaluate_modes, load_qrels, load_queries, tune  # noqa: E402
from hybrid.ingest import ingest_documents  # noqa: E402
from hybrid.onnx_encoder import document_encoder  # noqa: E402
from hybrid.searcher import Searcher  # noqa: E402
from hybrid.settings import SearchSettings  # noqa: E402
from hybrid.sources import read_documents  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CACHE = Path.home() / ".cache" / "hybrid"
RESULTS = ROOT / "bench" / "results" / "relevance.json"
CHUNKINGS = ("", "128/64", "200/100")
COLLECTIONS = ("scifact", "cranfield", "cisi")


def encoder(model: str = "all-MiniLM-L6-v2") -> CachedEncoder:
    inner = document_encoder(model)
    return CachedEncoder(inner, CACHE / f"texts-{Path(model).name}-fp32.npy")


def build(backend: Backend, collection: str, chunking: str, cached: CachedEncoder, name: str) -> dict:
    """Ingest ``collection`` (if not already there) and say what it cost; an index kept from an earlier
    run says its size only (``main`` keeps that run's ingest figures)."""
    cost: dict[str, float] = {}
    if not backend.exists(name):
        started, before = time.perf_counter(), len(cached.known)
        ingest_documents(read_documents(DATA / collection / "corpus.jsonl"), name, backend, cached,
                         chunking=chunking or "off", progress=False)
        cost = {"ingest_seconds": round(time.perf_counter() - started, 1), "texts_encoded": len(cached.known) - before}
    if isinstance(backend, LocalBackend):
        loaded = backend.load(name)
        cost |= {"vectors": len(loaded.vectors), "index_mb": round(sum(
            f.stat().st_size for f in loaded.folder.rglob("*") if f.is_file()) / 2**20, 1)}
    else:  # primaries' store, after a force merge so that segment counts do not decide the figure
        merge_to_one_segment(backend, name)
        store = backend.client.indices.stats(index=name)["_all"]["primaries"]["store"]["size_in_bytes"]
        cost |= {"index_mb": round(store / 2**20, 1)}
    return cost


def split(collection: str, name: str) -> dict:
    path = DATA / collection / "qrels" / f"{name}.tsv"
    return load_qrels(path) if path.exists() else {}


def chunking_section(backend: Backend) -> dict:
    """SciFact: each chunking's vector and tuned hybrid nDCG@10, chosen on train, scored on test."""
    queries, train, test = load_queries(DATA / "scifact" / "queries.jsonl"), split("scifact", "train"), split(
        "scifact", "test")
    cached = encoder()
    results = {}
    for chunking in CHUNKINGS:
        name = f"scifact-{chunking.replace('/', '-') or 'whole'}"
        cost = build(backend, "scifact", chunking, cached, name)
        searcher = Searcher(name, backend)
        figures = {split_name: evaluate_modes(searcher, queries, qrels, metrics=["ndcg@10", "recall@100"],
                                              progress=False)[0] for split_name, qrels in (("train", train),
                                                                                            ("test", test))}
        tuned = tune(searcher, queries, train, heldout_qrels=test, progress=False)
        results[chunking or "whole"] = {**cost, **figures, "tuned": describe(tuned)}
        print(json.dumps({chunking or "whole": results[chunking or "whole"]}), flush=True)
    return results


def describe(result) -> dict:
    return {"setting": result.best.to_dict(),
            "tuning_ndcg@10": result.tuning_score, "heldout_ndcg@10": result.heldout_score,
            "default_heldout_ndcg@10": result.default_heldout_score, "p_value": round(result.p_value, 4),
            "significant": result.significant, "tuning_queries": result.tuning_queries,
            "heldout_queries": result.heldout_queries, "settings_tried": result.settings_tried}


def fusion_section(backend: Backend, chunking: str, settings: SearchSettings) -> dict:
    """Every collection: RRF defaults vs ``settings`` (chosen on SciFact train) vs a tuning on each
    collection's own dev half, all with ``chunking``."""
    cached = encoder()
    results = {}
    for collection in COLLECTIONS:
        name = f"{collection}-{chunking.replace('/', '-') or 'whole'}"
        cost = build(backend, collection, chunking, cached, name)
        queries, test = load_queries(DATA / collection / "queries.jsonl"), split(collection, "test")
        default = evaluate_modes(Searcher(name, backend), queries, test, metrics=["ndcg@10"], progress=False)[0]
        chosen = evaluate_modes(Searcher(name, backend, settings=settings), queries, test, modes=["hybrid"],
                                metrics=["ndcg@10"], progress=False)[0]["hybrid"]
        own = tune(Searcher(name, backend), queries, test, progress=False)
        results[collection] = {**cost, "default": default, "scifact_tuned_hybrid": chosen, "own_tuning": describe(own)}
        print(json.dumps({collection: results[collection]}), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=("chunking", "fusion", "opensearch"))
    parser.add_argument("--chunking", default="128/64", help="fusion/opensearch: the chunking to use (off: none)")
    parser.add_argument("--settings", type=Path, help="fusion/opensearch: settings chosen on SciFact train")
    args = parser.parse_args()
    args.chunking = "" if args.chunking == "off" else args.chunking
    settings = SearchSettings.load(args.settings) if args.settings else SearchSettings()
    if args.section == "opensearch":
        from hybrid.backends.opensearch import Connection, OpenSearchBackend

        backend: Backend = OpenSearchBackend(Connection.from_env(os.environ.get("OPENSEARCH_URL")))
    else:
        backend = LocalBackend(CACHE / "bench-indexes")
    if args.section == "chunking":
        result = chunking_section(backend)
    else:
        result = fusion_section(backend, args.chunking, settings)
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    key = args.section if args.section == "chunking" else f"{args.section}-{args.chunking or 'whole'}"
    stored[key] = renewed(stored.get(key, {}), result)
    RESULTS.write_text(json.dumps(stored, indent=2))


def renewed(previous: dict, result: dict) -> dict:
    """``result``, keeping what an earlier run measured and this one did not (the ingest of a kept index)."""
    return {name: {**previous.get(name, {}), **figures} for name, figures in result.items()}


if __name__ == "__main__":
    main()
