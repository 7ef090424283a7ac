"""AsyncSearcher: the same hits as Searcher on both backends (and fused on the server), its work off the
event loop, retries that let the loop run, the application's own client, and errors it can map."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from cluster import CLUSTERS, same
from loopback import answering
from opensearchpy import AsyncOpenSearch, OpenSearch

from hybrid import (
    AsyncSearcher,
    BadRequestError,
    ClusterUnavailableError,
    IndexNotFoundError,
    OverloadedError,
    Searcher,
)
from hybrid.backends.opensearch import Connection, OpenSearchBackend

QUERIES = ["boundary layer separation in supersonic flow", "heat transfer at hypersonic speeds", "shock waves"]
SEARCHES = [dict(query=query, k=10, mode=mode, offset=offset)
            for query in QUERIES for mode in ("hybrid", "bm25", "vector") for offset in (0, 5)]


def pages(hits_per_search: list) -> list:
    return [[hit.to_dict() for hit in hits] for hits in hits_per_search]


async def searched(searcher: AsyncSearcher, **options) -> list:
    """Every search of SEARCHES at once, as an application's concurrent requests would send them."""
    async with searcher:
        return list(await asyncio.gather(*(searcher.search(**search, **options) for search in SEARCHES)))


def as_async(backend, **options) -> AsyncSearcher:
    """An AsyncSearcher on the same index: a cluster through its own async client, not the sync one."""
    if isinstance(backend, OpenSearchBackend):
        return AsyncSearcher("cranfield", **{backend.engine: backend.connection}, **options)
    return AsyncSearcher("cranfield", backend, **options)


def test_async_hits_equal_sync_hits_on_every_backend(cranfield_backend):
    expected = [Searcher("cranfield", cranfield_backend).search(**search) for search in SEARCHES]
    searcher = as_async(cranfield_backend)
    if isinstance(cranfield_backend, OpenSearchBackend):
        assert type(searcher.backend).__name__ == f"Async{type(cranfield_backend).__name__}"
    assert same(pages(asyncio.run(searched(searcher))), pages(expected))


@pytest.mark.parametrize("cranfield_backend", [kind for kind in CLUSTERS if kind.startswith("elasticsearch")],
                         indirect=True)
def test_an_applications_own_elasticsearch_clients_are_used_and_left_open(cranfield_backend):
    """elasticsearch-py's own clients, as an application on Elasticsearch builds them (9.x speaks to 9.x)."""
    from elasticsearch import AsyncElasticsearch, Elasticsearch

    if not next(iter(
            cranfield_backend.client.nodes.info(node_id="_local")["nodes"].values()))["version"].startswith("9."):
        pytest.skip("an application's elasticsearch-py 9 client speaks to Elasticsearch 9.x clusters")
    url = cranfield_backend.connection.url
    expected = pages([Searcher("cranfield", cranfield_backend).search(query) for query in QUERIES])
    client = Elasticsearch(url)
    with Searcher("cranfield", client=client) as searcher:
        assert searcher.backend.client is client and searcher.backend.location == url
        assert same(pages([searcher.search(query) for query in QUERIES]), expected)
    assert client.cluster.health()["status"] in ("green", "yellow")  # still open
    client.close()

    async def main() -> None:
        own = AsyncElasticsearch(url)
        async with AsyncSearcher("cranfield", client=own) as searcher:
            assert searcher.backend.client is own
            assert same(pages([await searcher.search(query) for query in QUERIES]), expected)
        assert (await own.cluster.health())["status"] in ("green", "yellow")
        await own.close()

    asyncio.run(main())


def test_async_hits_fused_on_the_server_equal_sync_ones(neural, neural_cranfield):
    expected = [Searcher(neural_cranfield, neural, fusion_on="server").search(**search, explain=True)
                for search in SEARCHES]
    got = asyncio.run(searched(AsyncSearcher(neural_cranfield, opensearch=neural.connection, fusion_on="server"),
                               explain=True))
    assert same(pages(got), pages(expected))  # neural-search 3.x explains a k-NN score with last-digit jitter
    assert all(hit.explained for hits in got for hit in hits)


class Recording:
    """Wraps an encoder or a backend, noting the thread each call ran on."""

    def __init__(self, inner, *methods: str) -> None:
        self._inner, self.threads = inner, []
        for name in methods:
            setattr(self, name, self._noted(getattr(inner, name)))

    def _noted(self, method):
        def call(*args, **kwargs):
            self.threads.append(threading.current_thread())
            return method(*args, **kwargs)
        return call

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_encoding_and_embedded_reads_never_run_on_the_event_loop(local_cranfield, embedder):
    backend = Recording(local_cranfield, "snapshot", "retrieve", "sources")
    encoder = Recording(embedder, "encode")

    async def main() -> threading.Thread:
        async with AsyncSearcher("cranfield", backend, embedder=encoder, threads=2) as searcher:
            await asyncio.gather(*(searcher.search(query) for query in QUERIES))
        return threading.current_thread()

    loop_thread = asyncio.run(main())
    assert backend.threads and encoder.threads
    assert loop_thread not in backend.threads + encoder.threads
    assert len(set(backend.threads + encoder.threads)) <= 2  # the bounded pool


def test_a_retry_waits_without_blocking_the_loop():
    """The cluster answers 429 twice: the search waits a second between its attempts, and meanwhile the
    loop goes on running other coroutines (a time.sleep there would stall it for the whole second)."""
    body = json.dumps({"error": {"type": "rejected_execution_exception", "reason": "queue full"},
                       "status": 429}).encode()

    async def main(url: str) -> tuple[BaseException, int]:
        ticks = 0

        async def ticking() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(ticking())
        async with AsyncSearcher("anything", opensearch=Connection(url, search_attempts=2)) as searcher:
            started = time.monotonic()
            with pytest.raises(OverloadedError) as refused:
                await searcher.search("query")
            assert time.monotonic() - started >= 1.0  # it did wait before the second attempt
        ticker.cancel()
        return refused.value, ticks

    with answering(429, body) as url:
        error, ticks = asyncio.run(main(url))
    assert error.status == 429 and error.retriable
    assert ticks >= 30  # ~100 at 10 ms a tick; a blocked loop would tick once or twice


def test_errors_an_application_maps(local_cranfield, opensearch_cranfield):
    async def main() -> None:
        async with as_async(opensearch_cranfield) as searcher:
            with pytest.raises(BadRequestError):
                await searcher.search("  ")
            with pytest.raises(BadRequestError):
                await searcher.search("shock", k=0)
        async with AsyncSearcher("no-such-index", opensearch=opensearch_cranfield.connection) as missing:
            with pytest.raises(IndexNotFoundError) as not_found:
                await missing.search("shock")
        assert not_found.value.status == 404
        async with AsyncSearcher("cranfield", opensearch="http://127.0.0.1:9") as down:
            with pytest.raises(ClusterUnavailableError) as unavailable:
                await down.search("shock")
        assert unavailable.value.retriable and unavailable.value.__cause__ is not None

    asyncio.run(main())


def test_the_applications_own_clients_are_used_and_left_open(opensearch_cranfield):
    url = opensearch_cranfield.connection.url
    expected = pages([Searcher("cranfield", opensearch_cranfield).search(query) for query in QUERIES])

    client = OpenSearch(hosts=[url], pool_maxsize=4)
    with Searcher("cranfield", client=client) as searcher:
        assert searcher.backend.client is client and searcher.backend.location == url.replace("localhost", "127.0.0.1")
        assert pages([searcher.search(query) for query in QUERIES]) == expected
    assert client.ping()  # the application's client is still the application's
    client.close()

    async def main() -> None:
        own = AsyncOpenSearch(hosts=[url])
        async with AsyncSearcher("cranfield", client=own) as searcher:
            assert searcher.backend.client is own
            assert pages([await searcher.search(query) for query in QUERIES]) == expected
        assert await own.ping()
        await own.close()

    asyncio.run(main())


def test_the_built_in_clients_keep_pool_size_connections_per_node():
    connection = Connection("http://127.0.0.1:9", pool_size=24)
    sync = OpenSearchBackend(connection)
    assert sync.client.transport.connection_pool.connection.pool.pool.maxsize == 24  # urllib3's queue

    async def main() -> int:
        async with AsyncSearcher("anything", opensearch=connection) as searcher:
            return searcher.backend.client.transport.kwargs["maxsize"]

    assert asyncio.run(main()) == 24


@pytest.mark.parametrize("cranfield_backend", CLUSTERS, indirect=True)
@pytest.mark.parametrize("searcher_class", [Searcher, AsyncSearcher])
def test_a_host_answering_a_proxys_404_is_passed_over_for_the_next(cranfield_backend, searcher_class):
    """The first listed host is a proxy in front of a node being replaced (an HTML 404): the search goes
    to the healthy second one, on every attempt, sync and async alike, on either engine."""
    expected = pages([Searcher("cranfield", cranfield_backend).search(QUERIES[0])])
    with answering(404, b"<html>Not Found</html>", "text/html") as proxy:
        where = {cranfield_backend.engine: Connection(f"{proxy},{cranfield_backend.connection.url}")}
        if searcher_class is Searcher:
            with Searcher("cranfield", **where) as searcher:
                got = [searcher.search(QUERIES[0]) for _ in range(3)]
        else:
            async def main() -> list:
                async with AsyncSearcher("cranfield", **where) as searcher:
                    return [await searcher.search(QUERIES[0]) for _ in range(3)]
            got = asyncio.run(main())
    assert all(same(pages([hits]), expected) for hits in got)


def test_a_client_of_the_other_kind_is_refused_before_any_request():
    with pytest.raises(BadRequestError, match="AsyncOpenSearch client, not OpenSearch"):
        AsyncSearcher("anything", client=OpenSearch(hosts=["http://127.0.0.1:9"]))
    with pytest.raises(BadRequestError, match="OpenSearch client, not AsyncOpenSearch"):
        Searcher("anything", client=AsyncOpenSearch(hosts=["http://127.0.0.1:9"]))


def test_a_step_that_lets_out_stopiteration_fails_instead_of_hanging():
    """A future cannot hold a StopIteration: raised by a step's work, it would leave the search waiting forever."""
    from concurrent.futures import ThreadPoolExecutor

    from hybrid.steps import Compute, run_async

    def steps():
        yield Compute(lambda: next(iter([])))

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool, pytest.raises(RuntimeError, match="StopIteration"):
            await asyncio.wait_for(run_async(steps(), None, pool), timeout=10)

    asyncio.run(main())
