"""The promotion gate's verdict travels with a fine-tuned model (``hybrid-finetune.json`` in its folder)
and is enforced where an index switches models (``ingest.reindex``): a caller cannot serve a model that
its own evaluation refused without saying ``force``."""

from __future__ import annotations

import json
from pathlib import Path

from .embed import looks_like_path
from .errors import GateError

REPORT_FILE = "hybrid-finetune.json"


def refused(model: str) -> str | None:
    """Why ``model`` should not serve an index: the gate's verdict where its fine-tuning report refused it;
    None for a model without a report (a base model, one trained elsewhere) and for one that passed."""
    if not looks_like_path(model):
        return None
    path = Path(model).expanduser() / REPORT_FILE
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        return None if report["promote"] is True else str(report.get("verdict") or "it was not marked for promotion")
    except (OSError, ValueError, KeyError, TypeError):
        return f"its report {path} cannot be read, so nothing shows it passed"


def check_promotion(model: str, force: bool = False) -> None:
    """Refuse (``GateError``) a model the gate refused, unless ``force``."""
    if (why := refused(model)) and not force:
        raise GateError(f"model {model} did not pass its evaluation ({why})")
