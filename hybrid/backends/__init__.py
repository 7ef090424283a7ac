"""Index backends behind one interface (see ``base.Backend``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import Backend

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from .opensearch import Connection


def open_backend(data_dir: str | Path | None = None, opensearch: str | Connection | None = None,
                 client: OpenSearch | None = None) -> Backend:
    """The OpenSearch backend when ``opensearch`` (a URL or Connection) or an application's own ``client`` is
    given, else the local one."""
    if opensearch is not None or client is not None:
        from .opensearch import OpenSearchBackend

        return OpenSearchBackend(connection(opensearch), client)
    from .local import LocalBackend

    return LocalBackend(data_dir)


def connection(opensearch: str | Connection | None) -> Connection:
    """A Connection as given, or one for the URL (None: $OPENSEARCH_URL) with the environment's settings."""
    from .opensearch import Connection

    return opensearch if isinstance(opensearch, Connection) else Connection.from_env(opensearch)
