"""Errors an application can map to its own answers: each failure of a search is one exported class, keeps
the client's error as its cause and the HTTP status the cluster gave; the CLI adds its own advice."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from loopback import answering
from opensearchpy import exceptions as os_errors

import hybrid
from hybrid.backends.elasticsearch import ElasticsearchBackend
from hybrid.backends.local import LocalBackend
from hybrid.backends.opensearch import Connection, OpenSearchBackend
from hybrid.cli import cli


def opensearch_error(status: int, kind: str) -> bytes:
    return json.dumps({"error": {"type": kind, "reason": f"{kind} here"}, "status": status}).encode()


@pytest.mark.parametrize(("status", "body", "error", "retriable", "sends"), [
    (429, opensearch_error(429, "rejected_execution_exception"), hybrid.OverloadedError, True, 2),
    (503, opensearch_error(503, "cluster_block_exception"), hybrid.ClusterUnavailableError, True, 2),
    (400, opensearch_error(400, "parsing_exception"), hybrid.BadRequestError, False, 1),
    (401, opensearch_error(401, "security_exception"), hybrid.CredentialsRefusedError, False, 1),
    (404, b"<html>Not here</html>", hybrid.NotAClusterError, True, 2),  # a node being replaced may come back
    # the security plugin's own refusals in plain text (older 2.x, and 2.19 without a challenge)
    (401, b"Unauthorized", hybrid.CredentialsRefusedError, False, 1),
    (401, b"Authentication finally failed", hybrid.CredentialsRefusedError, False, 1),
    # a proxy refusing a large body: not OpenSearch's answer, and sending it again would not help
    (413, b"<html>413 Request Entity Too Large</html>", hybrid.NotAClusterError, True, 1),
])
@pytest.mark.parametrize("backend_class", [OpenSearchBackend, ElasticsearchBackend])
def test_each_answer_is_an_error_an_application_can_map(status, body, error, retriable, sends, backend_class):
    content_type = {b"<": "text/html", b"{": "application/json"}.get(body[:1], "text/plain; charset=UTF-8")
    seen: list = []
    with answering(status, body, content_type, seen) as url:
        backend = backend_class(Connection(url, timeout=2, search_attempts=2, retries=1))
        with pytest.raises(error) as raised:
            hybrid.Searcher("docs", backend).search("anything")
    assert raised.value.status == status and raised.value.retriable is retriable
    assert len(seen) == sends  # sent again only where the same request may pass
    assert isinstance(raised.value, hybrid.HybridError)
    assert isinstance(raised.value.__cause__, backend_class.errors.any)  # the client's error, kept
    if body.startswith(b"{"):  # the cluster's own answer: the message says whose
        assert f"{backend_class.errors.product} at http://" in str(raised.value)


def test_a_cluster_that_is_down_is_unavailable_and_retriable():
    backend = OpenSearchBackend(Connection("http://127.0.0.1:9", timeout=1, search_attempts=1))
    with pytest.raises(hybrid.ClusterUnavailableError) as raised:
        hybrid.Searcher("docs", backend).search("anything")
    assert raised.value.retriable and raised.value.status is None
    assert isinstance(raised.value.__cause__, os_errors.ConnectionError)
    assert "opensearch-node.sh" not in str(raised.value)  # the CLI's advice is the CLI's
    result = CliRunner().invoke(cli, ["search", "anything", "--index", "docs", "--opensearch", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and "cannot reach OpenSearch at http://127.0.0.1:9" in result.output
    assert "docker/opensearch-node.sh start" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_missing_index_is_not_found_on_both_backends(tmp_path, opensearch):
    for backend in (LocalBackend(tmp_path), opensearch):
        with pytest.raises(hybrid.IndexNotFoundError) as raised:
            hybrid.Searcher("no-such-index", backend).search("anything")
        assert raised.value.index == "no-such-index" and not raised.value.retriable
        assert "hybrid ingest" not in str(raised.value)
    result = CliRunner().invoke(cli, ["search", "x", "--index", "no-such-index", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "create it with `hybrid ingest SOURCE --index no-such-index`" in result.output


def test_a_bad_query_is_a_bad_request_and_still_a_value_error(local_cranfield):
    searcher = hybrid.Searcher("cranfield", local_cranfield)
    for call in (lambda: searcher.search(""), lambda: searcher.search("shock", k=0),
                 lambda: searcher.search("shock", mode="fuzzy")):  # type: ignore[arg-type]
        with pytest.raises(hybrid.BadRequestError) as raised:
            call()
        assert isinstance(raised.value, ValueError) and not raised.value.retriable
