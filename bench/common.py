"""Helpers the benchmark scripts share: percentiles, and query latency with or without encoding."""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hybrid.backends.base import IndexMeta, StoredDocument
from hybrid.documents import Document
from hybrid.embed import Embedder, Encoder, Precision
from hybrid.evaluate import load_qrels, load_queries
from hybrid.searcher import MODES, Searcher
from hybrid.sources import read_documents

if TYPE_CHECKING:
    from hybrid.backends.opensearch import OpenSearchBackend


class Lookup:
    """An encoder serving vectors computed beforehand (text -> vector): timings exclude encoding, and runs
    reuse cached document vectors. ``embedder`` is the encoder that computed them."""

    def __init__(self, vectors: dict[str, np.ndarray], name: str, precision: Precision = "fp32",
                 embedder: Encoder | None = None) -> None:
        self.vectors, self.name, self.precision, self.embedder = vectors, name, precision, embedder
        self.dimension = len(next(iter(vectors.values())))

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self.vectors[text] for text in texts])


class CachedEncoder:
    """``encoder`` with its vectors kept on disk by text: bench runs re-encode only texts never seen before.
    Everything else (name, precision, tokenizer) is the encoder's, so an ingest through it is the real one."""

    def __init__(self, encoder: Encoder, path: Path) -> None:
        self.encoder, self.path = encoder, path
        self.name, self.precision = encoder.name, encoder.precision
        self.known: dict[str, np.ndarray] = {}
        if path.exists():
            self.known = dict(zip(json.loads(Path(f"{path}.texts.json").read_text()), np.load(path)))

    def __getattr__(self, name: str):  # dimension, tokenizer, max_tokens
        return getattr(self.encoder, name)

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.known))
        if missing:
            self.known.update(zip(missing, self.encoder.encode(missing, batch_size)))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            np.save(self.path, np.stack(list(self.known.values())))
            Path(f"{self.path}.texts.json").write_text(json.dumps(list(self.known)))
        if not texts:
            return np.zeros((0, self.encoder.dimension), dtype=np.float32)
        return np.stack([self.known[text] for text in texts])


def precomputed(embedder: Encoder, queries: list[str]) -> Lookup:
    """The real model's query vectors, computed before timing, so latency excludes encoding."""
    return Lookup(dict(zip(queries, embedder.encode(queries))), embedder.name, embedder.precision, embedder)


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2)}


def latency(searcher: Searcher, queries: list[str]) -> dict[str, dict[str, float]]:
    """p50/p95 of ``searcher.search(query, k=10, mode=...)`` per mode: legs, fusion and the page's fields."""
    return take_turns({mode: lambda query, mode=mode: searcher.search(query, k=10, mode=mode) for mode in MODES},
                      queries)


def take_turns(ways: dict[str, Callable[[str], object]], queries: list[str]) -> dict[str, dict[str, float]]:
    """p50/p95 of each way of answering a query. The ways take turns query by query, so that a change in
    the machine's speed (a merge after an ingest, another process) weighs on all of them alike; a first
    round warms caches and is not counted."""
    samples: dict[str, list[float]] = {way: [] for way in ways}
    for round_ in range(2):
        for query in queries:
            for way, call in ways.items():
                started = time.perf_counter()
                call(query)
                if round_:
                    samples[way].append(time.perf_counter() - started)
    return {way: percentiles(times) for way, times in samples.items()}


def merge_to_one_segment(node: OpenSearchBackend, index: str) -> int:
    """Force-merge ``index`` (as an operator does after a bulk load): no merge running in the background
    changes the HNSW graphs between two requests. Returns how many segments it had before."""
    before = node.client.indices.segments(index=index)["indices"]
    segments = sum(len(copy["segments"]) for found in before.values() for shard in found["shards"].values()
                   for copy in shard if copy["routing"]["primary"])
    node.client.indices.forcemerge(index=index, params={"max_num_segments": 1}, request_timeout=1800)
    return segments


def test_collection(folder: Path) -> tuple[list[Document], dict[str, str], dict, dict[str, str]]:
    """A BEIR collection's documents, queries, test judgments, and the queries that have judgments."""
    queries = load_queries(folder / "queries.jsonl")
    qrels = load_qrels(folder / "qrels" / "test.tsv")
    return (read_documents(folder / "corpus.jsonl"), queries, qrels,
            {query: text for query, text in queries.items() if query in qrels})


def embedded_documents(embedder: Embedder, docs: list[Document]) -> tuple[IndexMeta, list[StoredDocument]]:
    """``docs`` with the model's vectors (kept on disk between runs), as a writer takes them, and the index
    metadata they are written under."""
    vectors = CachedEncoder(embedder, Path.home() / ".cache" / "hybrid" / f"texts-{Path(embedder.name).name}-fp32.npy"
                            ).encode([d.text for d in docs])
    stored = [StoredDocument(d.id, d.fields, d.hash, v.reshape(1, -1)) for d, v in zip(docs, vectors)]
    return IndexMeta(embedder.name, embedder.dimension), stored


def passages(data: Path, size: int) -> list[Document]:
    """Sentences and pairs of adjacent sentences of every document of the three collections."""
    out: list[Document] = []
    for name in ("scifact", "cranfield", "cisi"):
        for doc in read_documents(data / name / "corpus.jsonl"):
            sentences = [s for s in re.split(r"(?<=[.!?])\s+", doc.fields["text"]) if len(s) > 20]
            spans = sentences + [" ".join(pair) for pair in zip(sentences, sentences[1:])]
            for number, span in enumerate(spans):
                out.append(Document(f"{name}-{doc.id}-{number}", {"title": doc.fields["title"], "text": span,
                                                                  "collection": name}))
    if len(out) < size:
        raise SystemExit(f"only {len(out)} passages available, fewer than {size}")
    return out[:size]
