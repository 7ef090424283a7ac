"""Fusion of ranked lists, as pure functions: reciprocal rank fusion and score-normalisation fusion.

Every backend returns each leg as a ranked list of ``(id, score)``; fusing them here, and only here,
is what makes the local index and OpenSearch rank alike. The methods are OpenSearch's (neural-search's
``score-ranker-processor`` and ``normalization-processor``), with 1-based ranks:

- ``rrf``: ``score(d) = sum over legs of weight_leg / (rank_constant + rank_leg(d))``; a leg that did not
  return ``d`` adds nothing.
- ``min_max``, ``l2``, ``z_score``: each leg's scores are normalised over the hits that leg returned, then
  combined per document by the weighted ``arithmetic``, ``geometric`` or ``harmonic`` mean.

Where this differs from OpenSearch (2.19 / 3.x source), and why:

- A leg that did not return a document counts as 0 in the arithmetic mean, as in OpenSearch (its
  per-document score array starts at 0 — the ``-1`` fill its comment mentions is never written — and its
  arithmetic mean keeps scores ``>= 0``; Elasticsearch's ``linear`` retriever does the same). Since every
  normalisation floors a returned hit at ``MIN_SCORE``, a document a leg placed last still ranks above
  one that leg did not return. The geometric and harmonic means cannot take a 0 (its logarithm and
  inverse are undefined): OpenSearch leaves the leg out, which ranks a document one leg placed first
  level with one both legs placed first; here a missed leg counts ``MIN_SCORE`` in them instead.
- ``min_max`` raises every normalised score below ``MIN_SCORE`` to it; OpenSearch raises only a leg's
  exact minimum (0), so a hit just above that minimum (say 0.0001) ranks below the minimum itself. On
  SciFact this moved three queries' scores by up to 0.0005, never their top 10.
- ``l2`` is floored at ``MIN_SCORE`` too: an inner product below zero (the vector leg's raw score) would
  otherwise be negative, which OpenSearch's means leave out, ranking such a document as if that leg
  liked it. (OpenSearch normalises the k-NN score ``1 + ip`` instead of ``ip``; for ``l2`` alone, of the
  three, that shift changes the result.)
- ``z_score``: OpenSearch returns a leg's raw maximum for a score equal to the mean and its raw minimum
  when all scores are equal, mixing raw and normalised scales; here a score at or below the mean gets
  ``MIN_SCORE`` (as OpenSearch does below it) and equal scores all get 1.0 (as its ``min_max`` does).
  The standard deviation is the sample one (n - 1), as OpenSearch's.
- Weights need not sum to 1 (OpenSearch requires it); the means divide by the weights' sum, so only
  their ratio matters. A weight of 0 drops a leg.
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

Method = Literal["rrf", "min_max", "l2", "z_score"]
Combination = Literal["arithmetic", "geometric", "harmonic"]
METHODS: tuple[Method, ...] = get_args(Method)
COMBINATIONS: tuple[Combination, ...] = get_args(Combination)
DEFAULT_RANK_CONSTANT = 60
MIN_SCORE = 0.001
"""OpenSearch's floor for a normalised score (min_max's minimum, z_score's at or below the mean)."""


@dataclass(frozen=True)
class LegRank:
    """Where one leg placed a document: its 1-based rank, that leg's raw score, and the value fusion
    combined for it (``1 / (rank_constant + rank)`` for RRF, the normalised score otherwise). ``rank`` is
    None only where OpenSearch fused on the server with a score normalisation: its explanation gives
    the scores, not the rank."""

    rank: int | None
    score: float
    normalized: float


Place = tuple[int, float, float]
"""A ``LegRank``'s fields, kept as a plain tuple while fusing: most candidates never make the page."""


@dataclass(frozen=True)
class FusedHit:
    """A document in the fused list, with its fused score and each leg's rank (None where it missed)."""

    id: str
    score: float
    legs: Mapping[str, LegRank | None]


@dataclass(frozen=True)
class Fusion:
    """How to fuse: the method, the combination (score-normalisation methods only), per-leg weights
    (1.0 where not given) and RRF's rank constant."""

    method: Method = "rrf"
    combination: Combination = "arithmetic"
    weights: Mapping[str, float] | None = None
    rank_constant: int = DEFAULT_RANK_CONSTANT

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"fusion method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.combination not in COMBINATIONS:
            raise ValueError(f"combination must be one of {', '.join(COMBINATIONS)}, got {self.combination!r}")
        if not isinstance(self.rank_constant, int):
            raise ValueError(f"rank_constant must be a whole number, got {self.rank_constant!r}")
        if self.rank_constant < 1:
            raise ValueError(f"rank_constant must be at least 1, got {self.rank_constant}")
        weights = self.weights or {}
        if not isinstance(weights, Mapping) or not all(isinstance(w, int | float) for w in weights.values()):
            raise ValueError(f"weights must map legs to numbers, got {weights!r}")
        if negative := {leg: w for leg, w in weights.items() if not 0 <= w < math.inf}:
            raise ValueError(f"weights must be zero or more (and finite), got {negative}")

    def __call__(self, legs: Mapping[str, Sequence[tuple[str, float]]], limit: int | None = None) -> list[FusedHit]:
        """Fuse ranked ``(id, score)`` lists, best first; only the best ``limit`` hits where given (a page
        needs its own: building every candidate's breakdown took most of the time). Ties go to the
        smaller id (RRF), or to the document with the better rank in either leg, then the smaller id
        (score fusion, whose floors make ties in the tail), so pages are stable. A document listed twice
        by one leg keeps its first place."""
        weights = self.weights or {}
        if unknown := set(weights) - set(legs):
            raise ValueError(f"weights given for unknown legs: {sorted(unknown)}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        places: dict[str, dict[str, Place]] = {}
        leg_weights = {leg: weights.get(leg, 1.0) for leg in legs}
        rrf_scores: dict[str, float] = {}  # summed as each place is seen: the same sum, in the same order
        for leg, hits in legs.items():
            unique = _first_places(hits)
            values = self._leg_values([score for _, score in unique])
            for position, ((doc_id, score), value) in enumerate(zip(unique, values), start=1):
                places.setdefault(doc_id, {})[leg] = (position, score, value)
                if self.method == "rrf":
                    rrf_scores[doc_id] = rrf_scores.get(doc_id, 0) + leg_weights[leg] / (self.rank_constant + position)
        keys: Iterable[tuple[Any, ...]]  # (-score, id) or (-score, best rank, id): the sort order
        if self.method == "rrf":
            keys = ((-score, doc_id) for doc_id, score in rrf_scores.items())
        else:
            keys = ((-self._combine(by_leg, leg_weights), min(rank for rank, _, _ in by_leg.values()), doc_id)
                    for doc_id, by_leg in places.items())
        ranked = sorted(keys) if limit is None else heapq.nsmallest(limit, keys)
        return [_fused_hit(key[-1], -key[0], places[key[-1]], legs) for key in ranked]

    def _leg_values(self, scores: Sequence[float]) -> list[float]:
        if self.method == "rrf":
            return [1.0 / (self.rank_constant + rank) for rank in range(1, len(scores) + 1)]
        return normalize(scores, self.method)

    def _combine(self, by_leg: Mapping[str, Place], weights: Mapping[str, float]) -> float:
        """A document's fused score by score normalisation (RRF sums as it goes)."""
        missed = 0.0 if self.combination == "arithmetic" else MIN_SCORE
        values = {leg: by_leg[leg][2] if leg in by_leg else missed for leg in weights}
        return combine(values, weights, self.combination)


def _fused_hit(doc_id: str, score: float, by_leg: Mapping[str, Place], legs: Iterable[str]) -> FusedHit:
    return FusedHit(doc_id, score, {leg: LegRank(*by_leg[leg]) if leg in by_leg else None for leg in legs})


def _first_places(hits: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """Each document at its first (best) place only."""
    first: dict[str, float] = {}
    for doc_id, score in hits:
        first.setdefault(doc_id, score)
    return list(first.items())


def normalize(scores: Sequence[float], method: Method) -> list[float]:
    """One leg's raw scores -> normalised scores over that leg's hits (``min_max``, ``l2``, ``z_score``)."""
    if not scores:
        return []
    if method == "min_max":
        low, high = min(scores), max(scores)
        if high == low:
            return [1.0] * len(scores)
        return [max((score - low) / (high - low), MIN_SCORE) for score in scores]
    if method == "l2":
        norm = math.sqrt(sum(score * score for score in scores))
        return [max(score / norm, MIN_SCORE) if norm else MIN_SCORE for score in scores]
    if method == "z_score":
        deviation = statistics.stdev(scores) if len(scores) > 1 else 0.0
        if deviation == 0:
            return [1.0] * len(scores)
        mean = statistics.fmean(scores)
        return [max((score - mean) / deviation, MIN_SCORE) for score in scores]
    raise ValueError(f"no normalisation called {method!r}")


def combine(values: Mapping[str, float], weights: Mapping[str, float], combination: Combination) -> float:
    """The weighted mean of one document's normalised leg scores. As in OpenSearch, the geometric and
    harmonic means leave out values that are not positive (their logarithm or inverse is undefined; the
    normalisations here never give one) and legs of weight 0."""
    if combination == "arithmetic":
        total = sum(weights.values())
        return sum(weights[leg] * value for leg, value in values.items()) / total if total else 0.0
    positive = {leg: value for leg, value in values.items() if value > 0 and weights[leg] > 0}
    total = sum(weights[leg] for leg in positive)
    if not total:
        return 0.0
    if combination == "geometric":
        return math.exp(sum(weights[leg] * math.log(value) for leg, value in positive.items()) / total)
    if combination == "harmonic":
        return total / sum(weights[leg] / value for leg, value in positive.items())
    raise ValueError(f"no combination called {combination!r}")


def rrf(
    legs: Mapping[str, Sequence[tuple[str, float]]],
    weights: Mapping[str, float] | None = None,
    rank_constant: int = DEFAULT_RANK_CONSTANT,
) -> list[FusedHit]:
    """Reciprocal rank fusion of ranked ``(id, score)`` lists (``Fusion("rrf", ...)``)."""
    return Fusion("rrf", weights=weights, rank_constant=rank_constant)(legs)
