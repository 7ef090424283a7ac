"""Index backends behind one interface (see ``base.Backend``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import Backend

if TYPE_CHECKING:
    from .mapping import Engine
    from .opensearch import Connection


def open_backend(data_dir: str | Path | None = None, opensearch: str | Connection | None = None,
                 client: Any = None, elasticsearch: str | Connection | None = None) -> Backend:
    """The Elasticsearch backend for ``elasticsearch`` (a URL or Connection) or an application's own
    ``Elasticsearch`` client; the OpenSearch backend for ``opensearch`` or an ``OpenSearch`` client; else the
    local one."""
    if elasticsearch is not None or is_elasticsearch_client(client):
        from .elasticsearch import ElasticsearchBackend

        return ElasticsearchBackend(connection(elasticsearch, "ELASTICSEARCH"), client)
    if opensearch is not None or client is not None:
        from .opensearch import OpenSearchBackend

        return OpenSearchBackend(connection(opensearch), client)
    from .local import LocalBackend

    return LocalBackend(data_dir)


def engine_at(where: Connection) -> Engine:
    """Which engine answers at ``where``: ``GET /`` names OpenSearch's distribution or Elasticsearch's build
    flavour; where it does not answer that (a stripped distribution answers 405, a user may lack the right),
    the local node's info, where only Elasticsearch says its build flavour. OpenSearch where nothing answers,
    so that the command that follows says why."""
    from .opensearch import OPENSEARCH_ERRORS

    client = where.client()
    try:
        for path, params in (("/", None), ("/_nodes/_local", {"filter_path": "nodes.*.build_flavor"})):
            try:
                answer = client.transport.perform_request("GET", path, params=params)
            except OPENSEARCH_ERRORS.no_answer:
                break
            except OPENSEARCH_ERRORS.any:
                continue
            if "build_flavor" in json.dumps(answer):
                return "elasticsearch"
            if path == "/" and isinstance(answer, dict) and "distribution" in answer.get("version", {}):
                break
    finally:
        client.close()
    return "opensearch"


def is_elasticsearch_client(client: Any) -> bool:
    """Whether ``client`` is elasticsearch-py's (sync or async), told without importing it."""
    return any(kind.__module__.split(".")[0] == "elasticsearch" for kind in type(client).__mro__)


def connection(url: str | Connection | None, prefix: str = "OPENSEARCH") -> Connection:
    """A Connection as given, or one for the URL (None: $OPENSEARCH_URL, or ``prefix``'s) with the environment's
    settings (``OPENSEARCH_USER`` ..., ``ELASTICSEARCH_USER`` ...)."""
    from .opensearch import Connection

    return url if isinstance(url, Connection) else Connection.from_env(url, prefix)
