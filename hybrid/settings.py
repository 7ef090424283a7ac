"""Fusion settings: what a searcher fuses with unless a call says otherwise, as ``hybrid tune`` writes them.
Used by the searcher, server-side fusion, evaluation and fine-tuning alike, so it sits below all of them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .backends.base import LEGS, LegHit
from .errors import BadRequestError
from .fusion import DEFAULT_RANK_CONSTANT, Combination, FusedHit, Fusion, Method

DEFAULT_WINDOW = 100


@dataclass(frozen=True)
class SearchSettings:
    """Fusion settings a searcher uses unless a call overrides them; ``hybrid tune`` writes them as JSON.

    ``fusion`` is ``rrf`` (the default) or a score normalisation (``min_max``, ``l2``, ``z_score``)
    combined by the weighted ``combination`` mean; ``rank_constant`` applies to RRF only. ``window``
    is how many hits of each leg are fused."""

    fusion: Method = "rrf"
    combination: Combination = "arithmetic"
    rank_constant: int = DEFAULT_RANK_CONSTANT
    weights: Mapping[str, float] = field(default_factory=lambda: {"bm25": 1.0, "vector": 1.0})
    window: int = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if not isinstance(self.window, int):
            raise BadRequestError(f"window must be a whole number, got {self.window!r}")
        if self.window < 1:
            raise BadRequestError(f"window must be at least 1, got {self.window}")
        if not isinstance(self.weights, Mapping):
            raise BadRequestError(f"weights must map legs to numbers, got {self.weights!r}")
        if not set(self.weights) <= set(LEGS):
            raise BadRequestError(f"weights name unknown legs {sorted(set(self.weights) - set(LEGS))}; legs are {LEGS}")
        self._fusion(self.weights)  # validates method, combination, rank constant and weights

    def _fusion(self, weights: Mapping[str, float]) -> Fusion:
        return Fusion(self.fusion, self.combination, weights, self.rank_constant)

    def fuse(self, legs: Mapping[str, Sequence[LegHit]], depth: int | None = None,
             limit: int | None = None) -> list[FusedHit]:
        """The one step from retrieved legs to a fused list, taken by search, evaluation, tuning and
        fine-tuning alike: each leg cut to ``depth`` (default: the window), then fused; the best ``limit``
        hits where given (all else)."""
        cut = self.window if depth is None else depth
        lists = {leg: hits[:cut] for leg, hits in legs.items()}
        return self._fusion({leg: w for leg, w in self.weights.items() if leg in lists})(lists, limit)

    def but(self, **changes: Any) -> SearchSettings:
        """These settings with the given ones replaced (None keeps a setting; 0 is a value, and refused)."""
        return replace(self, **{name: value for name, value in changes.items() if value is not None})

    @classmethod
    def load(cls, path: str | Path) -> SearchSettings:
        """Settings from a JSON file; a setting it leaves out keeps its default."""
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise BadRequestError(f"{path}: expected a JSON object of settings, got {type(data).__name__}")
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "weights": dict(self.weights)}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))
