"""Fusion settings: what a searcher fuses with unless a call says otherwise, as ``hybrid tune`` writes them.
Used by the searcher, server-side fusion, evaluation and fine-tuning alike, so it sits below all of them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .backends.base import LEGS, IndexMeta, LegHit
from .errors import BadRequestError, SourceError
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
        # bool is an int to Python, but `"window": true` in a settings file is a mistake, not 1
        for name in ("window", "rank_constant"):
            if isinstance(getattr(self, name), bool):
                raise BadRequestError(f"{name} must be a whole number, got {getattr(self, name)!r}")
        if not isinstance(self.window, int):
            raise BadRequestError(f"window must be a whole number, got {self.window!r}")
        if self.window < 1:
            raise BadRequestError(f"window must be at least 1, got {self.window}")
        if not isinstance(self.weights, Mapping) or any(isinstance(w, bool) for w in self.weights.values()):
            raise BadRequestError(f"weights must map legs to numbers, got {self.weights!r}")
        if not set(self.weights) <= set(LEGS):
            raise BadRequestError(f"weights name unknown legs {sorted(set(self.weights) - set(LEGS))}; legs are {LEGS}")
        self._fusion(self.weights)  # validates method, combination, rank constant and weights
        if self.weights and not any(self.weights.get(leg, 1.0) > 0 for leg in LEGS):
            raise BadRequestError(f"weights {dict(self.weights)} give every leg 0: every hit would score 0, in no "
                                  "order; give at least one leg a weight above 0")

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
        """Settings from a JSON file; a setting it leaves out keeps its default. Anything else in it (an
        unknown key, a mistyped value, malformed JSON) is refused, naming the file and the key: a setting
        quietly ignored would rank with the defaults while the user believes otherwise."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise SourceError(f"{path}: cannot read the settings file ({getattr(error, 'strerror', None) or error})"
                              ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise SourceError(f"{path}, line {error.lineno} column {error.colno}: not JSON ({error.msg})") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Any, where: str = "settings") -> SearchSettings:
        """Settings from a JSON object (a file's, or an index's record), strictly: see ``load``."""
        if not isinstance(data, dict):
            raise SourceError(f"{where}: expected a JSON object of settings, got {type(data).__name__}")
        if unknown := sorted(set(data) - set(cls.__dataclass_fields__)):
            raise SourceError(f"{where}: unknown setting {unknown[0]!r}; the settings are "
                              f"{', '.join(cls.__dataclass_fields__)}")
        try:
            return cls(**data)
        except (BadRequestError, ValueError) as error:
            raise SourceError(f"{where}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "weights": dict(self.weights)}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))


def recorded_settings(meta: IndexMeta) -> SearchSettings | None:
    """The fusion settings ``hybrid tune --apply`` recorded in an index, if any: what its searches use
    unless told otherwise."""
    if not meta.tuned:
        return None
    where = "the fusion settings recorded in the index"
    if not isinstance(meta.tuned, Mapping):
        raise SourceError(f"{where}: expected a JSON object, got {type(meta.tuned).__name__}")
    return SearchSettings.from_dict(meta.tuned.get("settings"), where)
