"""The OpenSearch backend's reads for asyncio: what an async searcher asks a cluster, on ``AsyncOpenSearch``.

Every request is built and every answer read by the same functions as the sync backend's
(``hybrid.backends.opensearch``); only the sending differs: awaited, and a retry waits with
``asyncio.sleep``, so an event loop keeps serving other requests meanwhile. Writing stays sync (the CLI).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from opensearchpy import AIOHttpConnection, AsyncOpenSearch

from ..errors import BadRequestError
from .base import LegHit, LegQuery, Snapshot, check_index_name
from .cluster_errors import announce_retry, short_reason, translated_errors, worth_retrying
from .opensearch import (
    LEG_RESPONSE,
    MAX_RESULT_WINDOW,
    NODE_NAMES,
    OPENSEARCH_ERRORS,
    PLUGIN_ROWS,
    Connection,
    IndexLayout,
    OpenSearchAnswers,
    OpenSearchBackend,
    client_location,
    failed_legs_raised,
    fused_request,
    knn_search,
    layout_from,
    leg_requests,
    legs_from,
    mget_request,
    snapshot_from,
    sources_from,
    unservable_model_said,
)

T = TypeVar("T")


class AsyncNodeConnection(OpenSearchAnswers, AIOHttpConnection):
    """opensearch-py's aiohttp connection to one node, with OpenSearch's answers told from others'."""


def async_client(connection: Connection) -> AsyncOpenSearch:
    """The sync backend's client for asyncio (aiohttp), with ``pool_size`` connections per node."""
    return AsyncOpenSearch(**connection.client_options(), connection_class=AsyncNodeConnection,
                           maxsize=connection.pool_size)


class AsyncOpenSearchBackend:
    """The reads a searcher makes (``snapshot``, ``retrieve``, ``sources``, server fusion's), as coroutines;
    the same answers, errors and retries as ``OpenSearchBackend``."""

    snapshot_ttl_s = OpenSearchBackend.snapshot_ttl_s
    max_depth: int | None = MAX_RESULT_WINDOW
    embeds_texts = True
    errors = OPENSEARCH_ERRORS
    vector_search = staticmethod(knn_search)

    def __init__(self, connection: Connection | None = None, client: Any = None) -> None:
        """On the cluster ``connection`` describes, or through an application's own ``client``, which
        closing the backend leaves open. Building one opens no connection."""
        self.connection = connection or Connection()
        self._owns_client = client is None
        self.client = self._client(client)
        self.location = self.connection.safe_url if client is None else self._located(client)

    def _located(self, client: Any) -> str:
        """Where an application's own client sends requests, for messages."""
        return client_location(client)

    def _client(self, given: Any) -> Any:
        """The application's ``given`` client, which must be of this engine's kind, or a client of our own."""
        if given is not None and not isinstance(given, AsyncOpenSearch):
            raise BadRequestError(f"an async searcher needs an AsyncOpenSearch client, not {type(given).__name__} "
                                  "(Searcher takes an OpenSearch one)")
        return async_client(self.connection) if given is None else given

    async def _read(self, target: str | None, call: Callable[[], Awaitable[T]]) -> T:
        """One read, sent again on a 5xx/429 or a lost connection after 1, 2, 4 ... s, without blocking the
        loop; its errors said as hybrid says them."""
        attempts = self.connection.search_attempts
        with translated_errors(self.errors, self.location, target):
            for attempt in range(1, attempts + 1):
                try:
                    return await call()
                except self.errors.any as error:
                    if not worth_retrying(self.errors, error, attempt, attempts):
                        raise
                    pause = announce_retry(f"search: {self.errors.product} at {self.location} did not answer "
                                           f"({short_reason(error)})", attempt, attempts)
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    async def server_fusion(self, target: str) -> str | None:
        """None: OpenSearch may fuse with its hybrid query (``hybrid.server_fusion`` finds out)."""
        return None

    async def snapshot(self, index: str) -> Snapshot:
        check_index_name(index)
        return snapshot_from(index, await self._read(index, lambda: self.client.indices.get_mapping(index=index)),
                             self.location)

    async def retrieve(self, target: str, query: LegQuery) -> dict[str, list[LegHit]]:
        legs, lines = leg_requests(target, query, self.vector_search)

        async def msearch() -> list[dict[str, Any]]:
            return failed_legs_raised(await self.client.msearch(body=lines, filter_path=LEG_RESPONSE))

        return legs_from(target, legs, await self._read(target, msearch), self.location, self.errors.product)

    async def sources(self, target: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        return sources_from(await self._read(target, lambda: self.client.mget(**mget_request(target, ids))))

    async def fused_search(self, target: str, body: dict[str, Any], explain: bool) -> list[dict[str, Any]]:
        request = fused_request(target, body, explain)
        with unservable_model_said(target):
            return list((await self._read(target, lambda: self.client.search(**request)))["hits"]["hits"])

    async def plugins(self) -> tuple[list[dict[str, str]], set[str]]:
        with translated_errors(self.errors, self.location):
            rows = await self.client.cat.plugins(**PLUGIN_ROWS)
            return rows, {row["name"] for row in await self.client.cat.nodes(**NODE_NAMES)}

    async def layout(self, concrete: str) -> IndexLayout:
        with translated_errors(self.errors, self.location, concrete):
            return layout_from(await self.client.indices.get_settings(index=concrete))

    async def close(self) -> None:
        """Close the client's connections, where the client is this backend's own."""
        if self._owns_client:
            await self.client.close()
