"""Index backends behind one interface (see ``base.Backend``)."""

from __future__ import annotations

from pathlib import Path

from .base import Backend


def open_backend(data_dir: str | Path | None = None, opensearch: object | None = None) -> Backend:
    """The local backend under ``data_dir``, or an OpenSearch backend when connection settings are given."""
    if opensearch is not None:
        from .opensearch import OpenSearchBackend

        return OpenSearchBackend(opensearch)  # type: ignore[arg-type]
    from .local import LocalBackend

    return LocalBackend(data_dir)
