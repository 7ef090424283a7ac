"""Helpers the benchmark scripts share: percentiles, and query latency with or without encoding."""

from __future__ import annotations

import statistics
import time

import numpy as np

from hybrid.embed import Embedder
from hybrid.searcher import MODES, Searcher


class PrecomputedQueries(Embedder):
    """The real model's query vectors, computed before timing, so latency excludes encoding."""

    def __init__(self, embedder: Embedder, queries: list[str]) -> None:
        super().__init__(embedder.name)
        self._vectors = dict(zip(queries, embedder.encode(queries)))

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return np.stack([self._vectors[text] for text in texts])


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2)}


def latency(searcher: Searcher, queries: list[str]) -> dict[str, dict[str, float]]:
    """p50/p95 of ``searcher.search(query, k=10, mode=...)`` per mode: legs, fusion and the page's fields."""
    results = {}
    for mode in MODES:
        for query in queries[:10]:
            searcher.search(query, mode=mode)  # warm caches
        samples = []
        for query in queries:
            started = time.perf_counter()
            searcher.search(query, k=10, mode=mode)
            samples.append(time.perf_counter() - started)
        results[mode] = percentiles(samples)
    return results
