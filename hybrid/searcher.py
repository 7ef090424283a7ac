"""The query helper a Python backend builds once and calls per request.

It runs the BM25 and vector legs on whichever backend holds the index, fuses them with RRF and
returns typed hits that say how each leg ranked and scored every document.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .backends import open_backend
from .backends.base import LEGS, Backend, Filters, LegQuery
from .embed import Embedder
from .fusion import DEFAULT_RANK_CONSTANT, LegRank, rrf

Mode = Literal["hybrid", "bm25", "vector"]
MODES: tuple[Mode, ...] = ("hybrid", "bm25", "vector")
DEFAULT_WINDOW = 100


@dataclass(frozen=True)
class Hit:
    """One search result. ``score`` is the RRF score in hybrid mode and the leg's own score otherwise."""

    id: str
    score: float
    bm25: LegRank | None
    vector: LegRank | None
    source: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        def leg(rank: LegRank | None) -> dict[str, Any]:
            return {"rank": rank.rank if rank else None, "score": rank.score if rank else None}

        return {"id": self.id, "score": self.score, "bm25": leg(self.bm25), "vector": leg(self.vector),
                "source": self.source}


class Searcher:
    """Hybrid search over one index. Build it once; ``search`` is safe to call per request.

    The embedding model is the one recorded in the index, so queries and documents always share a
    vector space; it loads on the first query that needs it.
    """

    def __init__(
        self,
        index: str,
        backend: Backend | None = None,
        *,
        data_dir: str | Path | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.index = index
        self.backend = backend or open_backend(data_dir)
        self.meta = self.backend.meta(index)
        self.embedder = embedder or Embedder(self.meta.model)

    def search(
        self,
        query: str,
        k: int = 10,
        mode: Mode = "hybrid",
        filters: Filters | None = None,
        weights: Mapping[str, float] | None = None,
        rank_constant: int = DEFAULT_RANK_CONSTANT,
        window: int = DEFAULT_WINDOW,
        offset: int = 0,
    ) -> list[Hit]:
        """The hits ranked ``offset+1 .. offset+k``.

        Each leg retrieves its ``window`` best documents (after ``filters``); the fused list of those
        is cut into pages, so pages of one query never overlap or skip, and end with the fused list.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if k < 1 or window < 1 or offset < 0:
            raise ValueError("k and window must be positive and offset not negative")
        if weights and not set(weights) <= set(LEGS):
            raise ValueError(f"weights name unknown legs {sorted(set(weights) - set(LEGS))}; legs are {LEGS}")
        vector = self.embedder.encode_query(query) if mode != "bm25" else None
        legs = self.backend.retrieve(
            self.index,
            LegQuery(text=query if mode != "vector" else None, vector=vector, k=window, filters=filters or {}),
        )
        sources = {hit.id: hit.source for hits in legs.values() for hit in hits}
        fused = rrf({leg: [(hit.id, hit.score) for hit in hits] for leg, hits in legs.items()},
                    weights={leg: w for leg, w in (weights or {}).items() if leg in legs}, rank_constant=rank_constant)
        return [
            Hit(
                id=item.id,
                score=item.score if mode == "hybrid" else item.legs[mode].score,  # type: ignore[union-attr]
                bm25=item.legs.get("bm25"),
                vector=item.legs.get("vector"),
                source=sources[item.id],
            )
            for item in fused[offset : offset + k]
        ]

