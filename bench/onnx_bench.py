"""Issue #11: the ONNX query encoder against torch, every figure from one run on SciFact (../shared/data).

- encoding: one query at a time, 300 test queries, torch vs ONNX fp32 (p50/p95, ratio of p50s);
- ranking: SciFact test nDCG@10 of the vector leg and hybrid with queries encoded by torch vs ONNX, and the
  share of queries whose top 10 is identical (documents encoded once by torch, as ingest does);
- int8: documents and queries encoded by the int8 export: nDCG@10 against fp32, and documents/s against
  torch (and the fp32 export) on the same 1,500 documents;
- cli: wall time of `hybrid search` on the local SciFact index, median of 5 runs, ONNX vs torch forced;
- large: local hybrid search p50 at 100k passages with and without query encoding, interleaved (passages cut from
  SciFact, Cranfield and CISI as in local_bench.py; each carries its source document's vector, since
  encoding 100k passages takes most of an hour on 2 cores and search time does not depend on the values);
- install: the size of a new query-only environment (the base install, from this checkout).

Document vectors are cached under ~/.cache/hybrid (the first run encodes SciFact: ~4 min with torch,
~2 min int8); the indexes are rebuilt each run.

    python bench/onnx_bench.py [--only encoding,ranking,int8,cli,large,install] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from common import CachedEncoder, Lookup, passages, percentiles, precomputed  # noqa: E402

from hybrid.backends.local import LocalBackend  # noqa: E402
from hybrid.embed import Embedder, Encoder  # noqa: E402
from hybrid.evaluate import evaluate_modes, load_qrels, load_queries  # noqa: E402
from hybrid.ingest import ingest_documents  # noqa: E402
from hybrid.onnx_encoder import OnnxEncoder, ensure_export  # noqa: E402
from hybrid.searcher import Searcher  # noqa: E402
from hybrid.sources import read_documents  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "hybrid"
SECTIONS = ("encoding", "ranking", "int8", "cli", "large", "install")


def cached(encoder: Encoder, texts: list[str], name: str) -> dict[str, np.ndarray]:
    """``encoder``'s vectors of ``texts``, computed once and kept in the cache folder."""
    return dict(zip(texts, CachedEncoder(encoder, CACHE / f"{name}.npy").encode(texts)))


def encoding(torch: Embedder, onnx: OnnxEncoder, queries: list[str]) -> dict:
    def timed(encoder: Encoder) -> dict[str, float]:
        for query in queries[:10]:
            encoder.encode([query])
        samples = []
        for query in queries:
            started = time.perf_counter()
            encoder.encode([query])
            samples.append(time.perf_counter() - started)
        return percentiles(samples)

    result = {"torch": timed(torch), "onnx_fp32": timed(onnx)}
    result["p50_ratio"] = round(result["onnx_fp32"]["p50_ms"] / result["torch"]["p50_ms"], 3)
    return result


def scifact_index(folder: Path, documents, vectors: dict[str, np.ndarray], name: str, precision: str) -> Searcher:
    backend = LocalBackend(folder)
    ingest_documents(documents, "scifact", backend, Lookup(vectors, name, precision), progress=False)
    return Searcher("scifact", backend)


def ranking(searcher: Searcher, torch: Encoder, onnx: Encoder, queries: dict[str, str], qrels) -> dict:
    """nDCG@10 and top-10 agreement, queries encoded by torch vs by the ONNX export, same index."""
    runs, scores = {}, {}
    for name, encoder in (("torch", torch), ("onnx", onnx)):
        one = Searcher(searcher.index, searcher.backend, embedder=encoder)
        scores[name], runs[name] = evaluate_modes(one, queries, qrels, ["vector", "hybrid"], ["ndcg@10"],
                                                  progress=False)
    same = {mode: statistics.mean(top10(runs["torch"][mode][q]) == top10(runs["onnx"][mode][q])
                                  for q in runs["torch"][mode]) for mode in ("vector", "hybrid")}
    return {"ndcg@10": scores, "identical_top10_share": same, "queries": len(runs["torch"]["vector"])}


def top10(run: dict[str, float]) -> list[str]:
    return sorted(run, key=lambda doc: (-run[doc], doc))[:10]


def int8(folder: Path, documents, texts: list[str], torch_vectors, queries, qrels) -> dict:
    int8_encoder = OnnxEncoder(ensure_export(torch_vectors.name, "int8"))
    int8_vectors = cached(int8_encoder, texts, "scifact-vectors-int8")
    scores = {}
    for precision, vectors in (("fp32", torch_vectors.vectors), ("int8", int8_vectors)):
        searcher = scifact_index(folder / precision, documents, vectors, torch_vectors.name, precision)
        scores[precision] = evaluate_modes(searcher, queries, qrels, ["vector", "hybrid"], ["ndcg@10"],
                                           progress=False)[0]
    sample = [d.text for d in documents[:1500]]
    speed = {}
    fp32_encoder = OnnxEncoder(ensure_export(torch_vectors.name))
    for name, encoder in (("torch", torch_vectors.embedder), ("onnx_fp32", fp32_encoder), ("onnx_int8", int8_encoder)):
        started = time.perf_counter()
        encoder.encode(sample)
        speed[name] = round(len(sample) / (time.perf_counter() - started), 1)
    return {"ndcg@10": scores, "drop": {mode: round(scores["fp32"][mode]["ndcg@10"] - scores["int8"][mode]["ndcg@10"],
                                                    4) for mode in ("vector", "hybrid")},
            "docs_per_s": speed, "speedup": round(speed["onnx_int8"] / speed["torch"], 2)}


def cli(data_dir: Path, query: str) -> dict:
    hybrid = Path(sys.executable).parent / "hybrid"
    result = {}
    for kind in ("onnx", "torch"):
        walls = []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run([str(hybrid), "search", query, "--index", "scifact", "--data-dir", str(data_dir),
                            "--query-encoder", kind], check=True, capture_output=True)
            walls.append(time.perf_counter() - started)
        result[kind] = {"median_s": round(statistics.median(walls), 3), "runs_s": [round(w, 3) for w in walls]}
    result["ratio"] = round(result["onnx"]["median_s"] / result["torch"]["median_s"], 3)
    return result


def large(folder: Path, data: Path, size: int, onnx: OnnxEncoder, torch: Embedder, queries: list[str]) -> dict:
    """Hybrid p50 at ``size`` passages: query encoded by ONNX inside the timing, vs vectors given."""
    cut = passages(data, size)
    parents: dict[str, str] = {}
    for name in ("scifact", "cranfield", "cisi"):
        for doc in read_documents(data / name / "corpus.jsonl"):
            parents[f"{name}-{doc.id}"] = doc.text
    parent_vectors = cached(torch, list(parents.values()), "three-collections-vectors")
    vectors = {p.text: parent_vectors[parents[p.id.rsplit("-", 1)[0]]] for p in cut}
    backend = LocalBackend(folder)
    ingest_documents(cut, "large", backend, Lookup(vectors, torch.name, "fp32"), progress=True)
    searchers = {"with_encoding": Searcher("large", backend, embedder=onnx),
                 "without_encoding": Searcher("large", backend, embedder=precomputed(onnx, queries))}
    samples: dict[str, list[float]] = {name: [] for name in searchers}
    for query in queries[:10]:
        for searcher in searchers.values():
            searcher.search(query)
    # Interleaved, query by query, over three passes: both sides see the same machine at the same moment
    # (separate loops drifted by +-10% between runs here).
    for query in queries * 3:
        for name, searcher in searchers.items():
            started = time.perf_counter()
            searcher.search(query, k=10)
            samples[name].append(time.perf_counter() - started)
    result = {name: percentiles(times) for name, times in samples.items()}
    result["p50_ratio"] = round(result["with_encoding"]["p50_ms"] / result["without_encoding"]["p50_ms"], 3)
    result["documents"] = backend.count("large")
    return result


def install(folder: Path) -> dict:
    """A new environment with the base install only: its size, and that it has no torch."""
    venv = folder / "query-only"
    subprocess.run(["uv", "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    started = time.perf_counter()
    subprocess.run(["uv", "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(ROOT)],
                   check=True)
    seconds = time.perf_counter() - started
    size = int(subprocess.run(["du", "-sk", str(venv)], capture_output=True, text=True).stdout.split()[0])
    absent = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.util as u; print([m for m in "
                             "('torch', 'transformers', 'sentence_transformers') if u.find_spec(m)])"],
                            capture_output=True, text=True).stdout.strip()
    return {"size_mb": round(size / 1024, 1), "install_s": round(seconds, 1), "heavy_packages_present": absent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "onnx.json")
    args = parser.parse_args()
    only = set(args.only.split(","))

    scifact = args.data / "scifact"
    documents = list(read_documents(scifact / "corpus.jsonl"))
    queries = load_queries(scifact / "queries.jsonl")
    qrels = load_qrels(scifact / "qrels" / "test.tsv")
    test = {q: queries[q] for q in qrels if q in queries}
    torch = Embedder()
    torch.encode(["warm up"])
    onnx = OnnxEncoder(ensure_export(torch.name))
    texts = [d.text for d in documents]
    torch_vectors = Lookup(cached(torch, texts, "scifact-vectors"), torch.name, "fp32", embedder=torch)
    report: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if "encoding" in only:
            report["encoding"] = encoding(torch, onnx, list(test.values()))
            print(json.dumps(report["encoding"]), flush=True)
        if only & {"ranking", "cli"}:
            searcher = scifact_index(folder / "scifact", documents, torch_vectors.vectors, torch.name, "fp32")
        if "ranking" in only:
            report["ranking"] = ranking(searcher, torch, onnx, test, qrels)
            print(json.dumps(report["ranking"]), flush=True)
        if "int8" in only:
            report["int8"] = int8(folder / "int8", documents, texts, torch_vectors, test, qrels)
            print(json.dumps(report["int8"]), flush=True)
        if "cli" in only:
            report["cli"] = cli(folder / "scifact", test[next(iter(test))])
            print(json.dumps(report["cli"]), flush=True)
        if "large" in only:
            report["large"] = large(folder / "large", args.data, args.large, onnx, torch, list(test.values()))
            print(json.dumps(report["large"]), flush=True)
        if "install" in only:
            report["install"] = install(folder)
            print(json.dumps(report["install"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
