"""A searcher's life in an application: built at import or start-up with no I/O (a cluster briefly down
must not stop a service from starting), checked and warmed by ``warm_up()``, closed by ``close()`` or
``with``, on both backends."""

from __future__ import annotations

import multiprocessing

import pytest

import hybrid
from hybrid.backends.local import LocalBackend
from hybrid.backends.opensearch import Connection, OpenSearchBackend


def test_building_a_searcher_does_no_io_and_warm_up_checks(tmp_path):
    down = hybrid.Searcher("docs", OpenSearchBackend(Connection("http://127.0.0.1:9", timeout=1, search_attempts=1)))
    with pytest.raises(hybrid.ClusterUnavailableError):
        down.warm_up()
    missing = hybrid.Searcher("docs", LocalBackend(tmp_path))
    with pytest.raises(hybrid.IndexNotFoundError):
        missing.warm_up()


def test_a_warmed_up_searcher_answers_as_a_cold_one(local_cranfield):
    warm = hybrid.Searcher("cranfield", local_cranfield).warm_up()
    cold = hybrid.Searcher("cranfield", local_cranfield)
    query = "shock waves on blunt bodies"
    assert [hit.id for hit in warm.search(query)] == [hit.id for hit in cold.search(query)]


def test_with_closes_the_connections_it_opened_and_leaves_a_given_backend_alone(opensearch_cranfield):
    url = opensearch_cranfield.connection.url
    with hybrid.Searcher("cranfield", opensearch=url) as searcher:
        assert searcher.search("shock waves", k=3)
    pools = [node.pool for node in searcher.backend.client.transport.connection_pool.connections]
    assert pools == [None]  # the client's connection pool to the node was closed
    given = hybrid.Searcher("cranfield", opensearch_cranfield)
    given.close()
    assert given.search("shock waves", k=3)  # the application's backend still works


def search_in(queue, searcher, query):  # the forked worker: what it answers, or why it failed
    try:
        queue.put([hit.id for hit in searcher.search(query)])
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which fails the test
        queue.put(repr(error))


@pytest.mark.parametrize("encoder", ["onnx", "torch"])
def test_a_worker_forked_after_a_query_answers_like_its_parent(cranfield_backend, encoder):
    """What gunicorn --preload does: the parent builds a searcher and warms it up with a query, then forks
    workers. Both encoders once hung the child (ONNX Runtime's session destroyed there; torch's OpenMP)."""
    searcher = hybrid.Searcher("cranfield", cranfield_backend, query_encoder=encoder)
    query = "shock waves on blunt bodies"
    parent = [hit.id for hit in searcher.search(query)]
    forking = multiprocessing.get_context("fork")
    queue = forking.Queue()
    worker = forking.Process(target=search_in, args=(queue, searcher, query))
    worker.start()
    worker.join(timeout=120)
    if worker.is_alive():
        worker.kill()
        pytest.fail(f"a worker forked after a query ({encoder}) did not answer within 120 s")
    assert queue.get(timeout=10) == parent
