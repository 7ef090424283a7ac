"""The query helper for asyncio applications (FastAPI, Starlette, aiohttp, Django's async views).

``AsyncSearcher`` takes ``Searcher``'s arguments and gives its hits: both carry out the same steps
(``hybrid.steps``), so request building, fusion and errors are one code. On a cluster it talks through
``AsyncOpenSearch`` and waits for a retry with ``asyncio.sleep``; query encoding and an embedded index's
numpy work run in a bounded thread pool, so the event loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backends.base import Backend, Filters, IndexMeta, LegHit
from .embed import Encoder
from .fusion import Combination, Method
from .hits import Hit
from .onnx_encoder import EncoderKind
from .searcher import BaseSearcher, EmbedSite, FusionSite, Mode, SearchTarget
from .settings import SearchSettings
from .steps import Steps, run_async

if TYPE_CHECKING:
    from elasticsearch import AsyncElasticsearch
    from opensearchpy import AsyncOpenSearch

    from .backends.async_opensearch import AsyncOpenSearchBackend
    from .backends.opensearch import Connection


class AsyncSearcher(BaseSearcher):
    """Hybrid search over one index from coroutines: ``await searcher.search(...)``. Build it once (no I/O),
    ``await warm_up()`` at the application's start, share it between requests; ``async with`` or
    ``await close()`` at shutdown releases its connections and threads.

    ``threads``: queries encoded (and embedded indexes searched) at once, off the event loop; default:
    the CPUs this process may run on, which the work is bound by. A cluster's ``Connection.pool_size`` (or the client
    handed in) sets how many requests go to each node at once.
    """

    backend: AsyncOpenSearchBackend | Backend

    def __init__(
        self,
        index: str,
        backend: AsyncOpenSearchBackend | Backend | None = None,
        *,
        data_dir: str | Path | None = None,
        opensearch: str | Connection | None = None,
        client: AsyncOpenSearch | AsyncElasticsearch | None = None,
        elasticsearch: str | Connection | None = None,
        embedder: Encoder | None = None,
        settings: SearchSettings | None = None,
        snapshot_ttl_s: float | None = None,
        query_encoder: EncoderKind | None = None,
        fusion_on: FusionSite = "client",
        embed_on: EmbedSite = "client",
        threads: int | None = None,
    ) -> None:
        """The arguments of ``Searcher`` (``client`` here an ``AsyncOpenSearch`` or ``AsyncElasticsearch``), and
        ``threads``."""
        super().__init__(index, backend, data_dir=data_dir, opensearch=opensearch, client=client,
                         elasticsearch=elasticsearch, embedder=embedder,
                         settings=settings, snapshot_ttl_s=snapshot_ttl_s, query_encoder=query_encoder,
                         fusion_on=fusion_on, embed_on=embed_on)
        self._pool = ThreadPoolExecutor(max_workers=threads or len(os.sched_getaffinity(0)),
                                        thread_name_prefix="hybrid")

    def _open(self, data_dir: str | Path | None, opensearch: str | Connection | None, client: Any,
              elasticsearch: str | Connection | None) -> SearchTarget:
        from .backends import connection, is_elasticsearch_client, open_backend

        if elasticsearch is not None or is_elasticsearch_client(client):
            from .backends.async_elasticsearch import AsyncElasticsearchBackend

            return AsyncElasticsearchBackend(connection(elasticsearch, "ELASTICSEARCH"), client)
        if opensearch is None and client is None:
            return open_backend(data_dir)
        from .backends.async_opensearch import AsyncOpenSearchBackend

        return AsyncOpenSearchBackend(connection(opensearch), client)

    async def _run(self, steps: Steps[Any]) -> Any:
        return await run_async(steps, self.backend, self._pool)

    async def meta(self) -> IndexMeta:
        """What the serving version of the index was built with."""
        snapshot = await self._run(self._current())
        return snapshot.meta  # type: ignore[no-any-return]

    async def settings(self) -> SearchSettings:
        """The fusion settings searches use now: the ones given, else the index's recorded ones, else the
        defaults."""
        return self._settings(await self._run(self._current()))

    async def warm_up(self) -> AsyncSearcher:
        """Check the index and load its query encoder now (at the application's start), so the first query
        is as fast as the rest (``embed_on="server"``: one neural search, as ``Searcher.warm_up``). Raises
        what a search would: the index is missing, the cluster is down."""
        await self._run(self._warm_up())
        return self

    async def close(self) -> None:
        """Release the connections of a backend this searcher opened itself (a client or backend handed in
        stays the caller's to close), and its threads."""
        if self._owns_backend:
            closing = self.backend.close()
            if inspect.isawaitable(closing):
                await closing
        self._pool.shutdown(wait=False)

    async def __aenter__(self) -> AsyncSearcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def retrieve_many(self, queries: Sequence[str], mode: Mode = "hybrid", window: int | None = None,
                            filters: Filters | None = None) -> list[dict[str, list[LegHit]]]:
        """Each query's legs, unfused (see ``Searcher.retrieve_many``)."""
        legs: list[dict[str, list[LegHit]]] = await self._run(self._retrieve_many(queries, mode, window, filters))
        return legs

    async def search(
        self,
        query: str,
        k: int = 10,
        mode: Mode = "hybrid",
        filters: Filters | None = None,
        weights: Mapping[str, float] | None = None,
        rank_constant: int | None = None,
        window: int | None = None,
        offset: int = 0,
        fusion: Method | None = None,
        combination: Combination | None = None,
        explain: bool = False,
    ) -> list[Hit]:
        """The hits ranked ``offset+1 .. offset+k``, as ``Searcher.search`` gives them."""
        hits: list[Hit] = await self._run(self._search_steps(query, k, mode, filters, weights, rank_constant,
                                                             window, offset, fusion, combination, explain))
        return hits

