"""No password, token or credentials in a URL is ever printed: not by repr or str, a log line, an error
message (nor the causes chained to it), or the CLI, whatever the password holds."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import traceback
from email.message import Message
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback import answering

from hybrid import AsyncSearcher
from hybrid.backends.elasticsearch import ElasticsearchBackend
from hybrid.backends.opensearch import Connection, OpenSearchBackend
from hybrid.cli import cli
from hybrid.errors import HybridError
from hybrid.searcher import Searcher

# A marker no message holds by chance, then anything a password may hold (a ':', '@', '/', '%', non-ASCII).
passwords = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs")), min_size=4, max_size=24) \
    .map(lambda tail: "Pw!" + tail)


def closed_port() -> int:
    """A port on loopback where nothing listens: a cluster that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def leaks(password: str, *texts: str) -> list[str]:
    forms = {password, quote(password, safe=""), quote(password)}
    return [text for text in texts if any(form in text for form in forms)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=passwords, token=passwords)
def test_a_connection_never_shows_its_credentials(password, token):
    url = f"http://admin:{quote(password, safe='')}@127.0.0.1:9200,https://svc:{quote(token, safe='')}@node-2:9201"
    bare = Connection(f"admin:{quote(password, safe='')}@127.0.0.1:9200/?api_key={quote(token, safe='')}")
    assert leaks(password, repr(bare), bare.safe_url) == [] and leaks(token, repr(bare), bare.safe_url) == []
    assert bare.safe_url == "http://127.0.0.1:9200/"  # no scheme: the client reads it as http, and so do we
    connection = Connection(url, user="admin", password=token)
    shown = [repr(connection), str(connection), connection.safe_url, repr([connection]), f"{connection!r:>10}"]
    assert leaks(password, *shown) == [] and leaks(token, *shown) == []
    assert "127.0.0.1:9200" in repr(connection) and "password='***'" in repr(connection)
    # an auth object (a SigV4 signer holds keys) and headers (an API key) are shown by type and name only
    signed = Connection("http://127.0.0.1:9200", http_auth=("admin", password), headers={"x-api-key": token})
    assert leaks(password, repr(signed)) == [] and leaks(token, repr(signed)) == []
    assert "http_auth='<tuple>'" in repr(signed) and "headers=['x-api-key']" in repr(signed)
    keyed = Connection("http://127.0.0.1:9200", api_key=token)  # an Elasticsearch API key
    assert leaks(token, repr(keyed)) == [] and "api_key='***'" in repr(keyed)


@pytest.mark.parametrize("backend_class", [OpenSearchBackend, ElasticsearchBackend])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=passwords)
def test_a_failing_search_never_shows_the_credentials(caplog, password, backend_class):
    """Against a cluster that is down: the error (and what it was raised from), every log line at DEBUG of
    every logger (ours, the client's, urllib3's), and the searcher's and backend's reprs."""
    url = f"http://admin:{quote(password, safe='')}@127.0.0.1:{closed_port()}"
    caplog.clear()
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        backend = backend_class(Connection(url, password=password, user="admin", api_key=quote(password), timeout=1,
                                           search_attempts=1))
        texts += [repr(backend)]
        try:
            searcher = Searcher("docs", backend)
            texts.append(repr(searcher))
            searcher.search("anything", mode="bm25")
        except HybridError as error:
            texts += [str(error), repr(error), "".join(traceback.format_exception(error))]
        else:
            raise AssertionError("a search against a closed port answered")
    texts += [record.getMessage() for record in caplog.records]
    assert leaks(password, *texts) == []


@pytest.mark.parametrize("engine", ["opensearch", "elasticsearch"])
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=passwords)
def test_a_failing_async_search_never_shows_the_credentials(caplog, password, engine):
    """The same for AsyncSearcher, through AsyncOpenSearch or AsyncElasticsearch (aiohttp's errors and logs
    included)."""
    url = f"http://admin:{quote(password, safe='')}@127.0.0.1:{closed_port()}"

    async def failing() -> list[str]:
        connection = Connection(url, timeout=1, search_attempts=1, api_key=quote(password))
        async with AsyncSearcher("docs", **{engine: connection}) as searcher:
            try:
                await searcher.search("anything", mode="bm25")
            except HybridError as error:
                return [repr(searcher), repr(searcher.backend), str(error), repr(error),
                        "".join(traceback.format_exception(error))]
        raise AssertionError("a search against a closed port answered")

    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        texts = asyncio.run(failing())
    texts += [record.getMessage() for record in caplog.records]
    assert leaks(password, *texts) == []


@settings(max_examples=5, deadline=None)
@given(password=passwords)
def test_the_cli_never_shows_the_credentials(password):
    url = f"http://admin:{quote(password, safe='')}@127.0.0.1:{closed_port()}"
    secrets = {"OPENSEARCH_USER": "admin", "OPENSEARCH_PASSWORD": password, "ELASTICSEARCH_USER": "admin",
               "ELASTICSEARCH_PASSWORD": password, "ELASTICSEARCH_API_KEY": quote(password)}
    for args in (["search", "q", "--index", "docs", "--json"], ["index", "list"], ["index", "info", "docs"]):
        for engine in ("--opensearch", "--elasticsearch"):
            result = CliRunner().invoke(cli, [*args, engine, url], env=secrets)
            assert result.exit_code != 0 and leaks(password, result.output) == [], result.output


@settings(max_examples=10, deadline=None)
@given(password=passwords, in_url=st.booleans())
def test_any_password_reaches_the_cluster_as_utf8_basic_auth(password, in_url):
    """A real HTTP server on loopback sees what OpenSearch's security plugin decodes (UTF-8), from
    ``user``/``password`` or from the URL, whatever the password holds (the client's own Latin-1 encoding
    raised UnicodeEncodeError on anything else)."""
    seen: list[Message] = []
    with answering(200, b'{"ok": true}', seen=seen) as url:
        port = url.rsplit(":", 1)[1]
        connection = Connection(f"http://admin:{quote(password, safe='')}@127.0.0.1:{port}") if in_url else \
            Connection(url, user="admin", password=password)
        assert connection.client().transport.perform_request("GET", "/") == {"ok": True}
    [header] = [headers.get("Authorization", "") for headers in seen]
    assert base64.b64decode(header.removeprefix("Basic ")).decode("utf-8") == f"admin:{password}"
