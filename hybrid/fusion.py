"""Reciprocal rank fusion (RRF) of ranked lists, as a pure function.

Every backend returns each leg as a ranked list of ``(id, score)``; fusing them here, and only here,
is what makes the local index and OpenSearch rank alike. The formula is OpenSearch's:

    score(d) = sum over legs of weight_leg / (rank_constant + rank_leg(d))

with 1-based ranks; a leg that did not return ``d`` adds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_RANK_CONSTANT = 60


@dataclass(frozen=True)
class LegRank:
    """Where one leg placed a document: its 1-based rank and that leg's raw score."""

    rank: int
    score: float


@dataclass(frozen=True)
class FusedHit:
    """A document in the fused list, with its RRF score and each leg's rank (None where it missed)."""

    id: str
    score: float
    legs: Mapping[str, LegRank | None]


def rrf(
    legs: Mapping[str, Sequence[tuple[str, float]]],
    weights: Mapping[str, float] | None = None,
    rank_constant: int = DEFAULT_RANK_CONSTANT,
) -> list[FusedHit]:
    """Fuse ranked ``(id, score)`` lists, best first; ties go to the smaller id so pages are stable.

    ``weights`` defaults to 1.0 for each leg. A document listed twice by one leg keeps its best rank.
    """
    if rank_constant < 1:
        raise ValueError(f"rank_constant must be at least 1, got {rank_constant}")
    weights = weights or {}
    unknown = set(weights) - set(legs)
    if unknown:
        raise ValueError(f"weights given for unknown legs: {sorted(unknown)}")
    ranks: dict[str, dict[str, LegRank]] = {}
    for leg, hits in legs.items():
        for position, (doc_id, score) in enumerate(hits, start=1):
            ranks.setdefault(doc_id, {}).setdefault(leg, LegRank(position, score))
    fused = [
        FusedHit(
            id=doc_id,
            score=sum(weights.get(leg, 1.0) / (rank_constant + r.rank) for leg, r in by_leg.items()),
            legs={leg: by_leg.get(leg) for leg in legs},
        )
        for doc_id, by_leg in ranks.items()
    ]
    fused.sort(key=lambda hit: (-hit.score, hit.id))
    return fused
