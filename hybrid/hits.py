"""What a search returns: one typed hit per document, saying how each leg ranked and scored it. It sits
below both the searcher and server-side fusion, which both build hits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .fusion import LegRank


@dataclass(frozen=True)
class Hit:
    """One search result. ``score`` is the fused score in hybrid mode and the leg's own score otherwise;
    each leg's rank, raw score and the value fusion combined are in ``bm25`` and ``vector`` (None: that
    leg did not retrieve the document). ``explained`` is False where OpenSearch fused on the server and
    was not asked to explain (``search(explain=True)``) or could not: the legs are then unknown, not missed."""

    id: str
    score: float
    bm25: LegRank | None
    vector: LegRank | None
    source: dict[str, Any]
    explained: bool = True

    def to_dict(self) -> dict[str, Any]:
        def leg(rank: LegRank | None) -> dict[str, Any]:
            return {"rank": rank.rank, "score": rank.score, "normalized": rank.normalized} if rank else \
                {"rank": None, "score": None, "normalized": None}

        return {"id": self.id, "score": self.score, "bm25": leg(self.bm25), "vector": leg(self.vector),
                "explained": self.explained, "source": self.source}
