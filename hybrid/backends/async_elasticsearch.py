"""The Elasticsearch backend's reads for asyncio, on ``AsyncElasticsearch``: ``AsyncOpenSearchBackend``'s
requests, answers, errors and retries, with Elasticsearch's client, errors and k-NN syntax."""

from __future__ import annotations

from typing import Any

from elasticsearch import AsyncElasticsearch

from ..errors import BadRequestError
from .async_opensearch import AsyncOpenSearchBackend
from .cluster_errors import translated_errors
from .elasticsearch import (
    ELASTICSEARCH_ERRORS,
    RRF_PROBE,
    AsyncCompatibleNode,
    client_location,
    client_options,
    rrf_verdict,
)
from .elasticsearch import knn_search as elasticsearch_knn
from .opensearch import Connection


class AsyncElasticsearchBackend(AsyncOpenSearchBackend):
    """The reads an async searcher makes of an Elasticsearch cluster (8.x or 9.x)."""

    errors = ELASTICSEARCH_ERRORS
    embeds_texts = False
    vector_search = staticmethod(elasticsearch_knn)

    def __init__(self, connection: Connection | None = None, client: AsyncElasticsearch | None = None) -> None:
        super().__init__(connection, client)
        self._rrf: str | None = None

    async def server_fusion(self, target: str) -> str:
        """What the cluster has of Elasticsearch's own fusion (asked once; see ``ElasticsearchBackend``)."""
        if self._rrf is None:
            with translated_errors(self.errors, self.location, target):
                try:
                    await self.client.search(index=target, body=RRF_PROBE)
                    self._rrf = rrf_verdict(None)
                except self.errors.answered as refused:
                    self._rrf = rrf_verdict(refused)
        return self._rrf

    def _client(self, given: Any) -> Any:
        if given is not None and not isinstance(given, AsyncElasticsearch):
            raise BadRequestError(f"an async searcher needs an AsyncElasticsearch client, not {type(given).__name__} "
                                  "(Searcher takes an Elasticsearch one)")
        if given is not None:
            return given
        return AsyncElasticsearch(**client_options(self.connection), node_class=AsyncCompatibleNode)

    def _located(self, client: Any) -> str:
        return client_location(client)
