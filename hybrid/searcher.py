"""The query helper a Python backend builds once and calls per request.

It runs the BM25 and vector legs on whichever backend holds the index, fuses them with RRF and
returns typed hits that say how each leg ranked and scored every document.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .backends import open_backend
from .backends.base import LEGS, Backend, Filters, LegHit, LegQuery
from .embed import Embedder
from .fusion import DEFAULT_RANK_CONSTANT, LegRank, rrf

if TYPE_CHECKING:
    from .backends.opensearch import Connection

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


@dataclass(frozen=True)
class SearchSettings:
    """Fusion settings a searcher uses unless a call overrides them; ``hybrid tune`` writes them as JSON."""

    rank_constant: int = DEFAULT_RANK_CONSTANT
    weights: Mapping[str, float] = field(default_factory=lambda: {"bm25": 1.0, "vector": 1.0})
    window: int = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if self.rank_constant < 1 or self.window < 1:
            raise ValueError("rank_constant and window must be at least 1")
        if not set(self.weights) <= set(LEGS):
            raise ValueError(f"weights name unknown legs {sorted(set(self.weights) - set(LEGS))}; legs are {LEGS}")

    @classmethod
    def load(cls, path: str | Path) -> SearchSettings:
        data = json.loads(Path(path).read_text())
        return cls(**{name: data[name] for name in ("rank_constant", "weights", "window") if name in data})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(
            {"rank_constant": self.rank_constant, "weights": dict(self.weights), "window": self.window}, indent=2))


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
        opensearch: str | Connection | None = None,
        embedder: Embedder | None = None,
        settings: SearchSettings | None = None,
        model_check_s: float = 10.0,
    ) -> None:
        """Search ``index`` on ``backend``; or on a cluster at ``opensearch`` (URL or Connection);
        or else in the local folder ``data_dir`` (default: $HYBRID_DATA_DIR or ~/.hybrid/indexes).
        ``settings`` (e.g. ``SearchSettings.load("tuned.json")``) sets the fusion defaults. Every
        ``model_check_s`` seconds the index's recorded model is looked up again, so that after a
        ``hybrid reindex`` switches models, queries are encoded with the new one."""
        self.index = index
        self.backend = backend or open_backend(data_dir, opensearch)
        self.meta = self.backend.meta(index)
        self.embedder = embedder or Embedder(self.meta.model)
        self.settings = settings or SearchSettings()
        self.model_check_s = model_check_s
        self._checked_at = time.monotonic()

    def _follow_index_model(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.model_check_s:
            return
        self._checked_at = now
        meta = self.backend.meta(self.index)
        if meta.model != self.meta.model:
            self.embedder = Embedder(meta.model)
        self.meta = meta

    def retrieve(self, query: str, mode: Mode = "hybrid", window: int | None = None,
                 filters: Filters | None = None, query_vector: np.ndarray | None = None) -> dict[str, list[LegHit]]:
        """Each leg's ``window`` best documents, unfused (what ``search`` fuses; evaluation reuses it).
        ``query_vector`` skips encoding when the caller has already encoded the query."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self._follow_index_model()
        vector = None
        if mode != "bm25":
            vector = self.embedder.encode_query(query) if query_vector is None else query_vector
        text = query if mode != "vector" else None
        return self.backend.retrieve(self.index, LegQuery(text, vector, window or self.settings.window, filters or {}))

    def search(
        self,
        query: str,
        k: int = 10,
        mode: Mode = "hybrid",
        filters: Filters | None = None,
        weights: Mapping[str, float] | None = None,
        rank_constant: int | None = None,
        window: int | None = None,
        offset: int = 0,
    ) -> list[Hit]:
        """The hits ranked ``offset+1 .. offset+k``; unset fusion arguments come from ``settings``.

        Each leg retrieves its ``window`` best documents (after ``filters``); the fused list of those
        is cut into pages, so pages of one query never overlap or skip, and end with the fused list.
        """
        settings = SearchSettings(
            rank_constant=rank_constant or self.settings.rank_constant,
            weights=self.settings.weights if weights is None else weights,
            window=window or self.settings.window,
        )
        if k < 1 or offset < 0:
            raise ValueError("k must be positive and offset not negative")
        legs = self.retrieve(query, mode, settings.window, filters)
        fused = rrf({leg: [(hit.id, hit.score) for hit in hits] for leg, hits in legs.items()},
                    weights={leg: w for leg, w in settings.weights.items() if leg in legs},
                    rank_constant=settings.rank_constant)
        page = fused[offset : offset + k]
        sources = self.backend.sources(self.index, [item.id for item in page])
        return [
            Hit(
                id=item.id,
                score=item.score if mode == "hybrid" else item.legs[mode].score,  # type: ignore[union-attr]
                bm25=item.legs.get("bm25"),
                vector=item.legs.get("vector"),
                source=sources.get(item.id, {}),
            )
            for item in page
        ]
