"""Index backends behind one interface (see ``base.Backend``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import Backend

if TYPE_CHECKING:
    from .opensearch import Connection


def open_backend(data_dir: str | Path | None = None, opensearch: str | Connection | None = None) -> Backend:
    """The OpenSearch backend when ``opensearch`` (a URL or Connection) is given, else the local one."""
    if opensearch is not None:
        from .opensearch import Connection, OpenSearchBackend

        connection = opensearch if isinstance(opensearch, Connection) else Connection.from_env(opensearch)
        return OpenSearchBackend(connection)
    from .local import LocalBackend

    return LocalBackend(data_dir)
