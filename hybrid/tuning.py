"""Tuned fusion settings that travel with the index: ``hybrid tune --apply`` records its choice in the index
(with what it was chosen on), and every searcher, evaluation, pipeline and fine-tune of that index then uses
it unless told otherwise. The gate lives here: a choice that scored below the defaults on held-out queries
(or that no held-out query checked) is not recorded unless the caller forces it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from .backends.base import Backend
from .errors import GateError
from .evaluate import TuneResult


def refusal(result: TuneResult) -> str | None:
    """Why ``result`` should not become the index's settings without ``force``; None when it may."""
    if not result.heldout_queries:
        return "no held-out query checked it against the defaults (give --heldout-qrels or a --dev-share below 1)"
    if result.heldout_score < result.default_heldout_score:
        return (f"on the {result.heldout_queries} held-out queries it scored {result.metric} "
                f"{result.heldout_score:.4f}, below the defaults' {result.default_heldout_score:.4f} "
                f"(paired t-test p = {result.p_value:.3f})")
    return None


def chosen_on(result: TuneResult, **inputs: Any) -> dict[str, Any]:
    """What a choice was made on, as recorded beside it: the inputs (files named as given) and its scores;
    a figure that could not be computed is null (JSON has no NaN)."""
    figures = {"metric": result.metric, "tuning_queries": result.tuning_queries, "tuning_score": result.tuning_score,
               "heldout_queries": result.heldout_queries, "heldout_score": result.heldout_score,
               "default_heldout_score": result.default_heldout_score, "p_value": result.p_value,
               "settings_tried": result.settings_tried}
    return {**inputs, **{name: None if isinstance(value, float) and math.isnan(value) else value
                         for name, value in figures.items()}}


def record(backend: Backend, index: str, result: TuneResult, inputs: Mapping[str, Any],
           force: bool = False) -> dict[str, Any]:
    """Record ``result.best`` as ``index``'s fusion settings, with what it was chosen on (``inputs``: the
    queries and judgments files, say); refused (``GateError``) where ``refusal`` objects, unless ``force``.
    Returns what was recorded."""
    why_not = refusal(result)
    if why_not and not force:
        raise GateError(f"not applied to {index!r}: {why_not}; the index keeps its settings")
    with backend.lock(index):
        meta = backend.meta(index)
        tuned = {"settings": result.best.to_dict(),  # with the model and windows whose legs it fused
                 "chosen_on": {**chosen_on(result, **inputs), "model": meta.model, "chunking": meta.chunking or "off",
                               "forced": bool(why_not), "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")}}
        backend.record_meta(index, replace(meta, tuned=tuned))
    return tuned


def clear(backend: Backend, index: str) -> bool:
    """Remove ``index``'s recorded fusion settings (its searches use the defaults again); False if it had none."""
    with backend.lock(index):
        meta = backend.meta(index)
        if not meta.tuned:
            return False
        backend.record_meta(index, replace(meta, tuned=None))
    return True
