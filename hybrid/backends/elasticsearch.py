"""The Elasticsearch backend (8.x and 9.x): OpenSearch's indexes, versions, ingest and reads, spoken with
elasticsearch-py, where Elasticsearch differs only in its client, its errors, its k-NN syntax (a top-level
``knn`` search on a ``dense_vector`` field) and the analyzers a cluster has.

The index mapping is ``hybrid/mappings/description.json`` rendered for Elasticsearch (``mappings/
elasticsearch.json``): ``dense_vector`` with ``max_inner_product``, whose scores are OpenSearch's inner-product
scores, so reading a vector leg's hits, fusion and score breakdowns are the same code for both engines.

Client-side fusion needs nothing beyond the basic licence. Elasticsearch's own fusion (the ``rrf`` retriever)
needs a licence above basic and a module that Elasticsearch's integration-test distribution lacks; hybrid does
not fuse with it: ``server_fusion`` asks the cluster whether it has it, for the message said once before a
``fusion_on="server"`` searcher fuses here.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from elastic_transport import AiohttpHttpNode, HttpHeaders, Urllib3HttpNode
from elastic_transport import ConnectionError as NoAnswer
from elasticsearch import AsyncElasticsearch, Elasticsearch, helpers
from elasticsearch import exceptions as es_errors
from elasticsearch.serializer import JsonSerializer, NdjsonSerializer

from ..errors import BadRequestError
from .base import LegQuery, ServerEmbedded
from .cluster_errors import ClientErrors, reason
from .mapping import Engine
from .opensearch import VECTOR_FIELD, WINDOWS_FIELD, Connection, OpenSearchBackend

COMPATIBLE_WITH = "compatible-with=8"
"""The REST API our own client asks for: Elasticsearch 9 answers requests made for 8 as 8 did, and 8.x refuses
the ``compatible-with=9`` that elasticsearch-py 9 sends, so one install speaks to both."""
ASKED_FOR = re.compile(r"compatible-with=\d+")
MAX_CANDIDATES = 10_000
"""Elasticsearch's largest ``num_candidates``."""
RRF_PROBE: dict[str, Any] = {"size": 0, "retriever": {"rrf": {"retrievers": [
    {"standard": {"query": {"match_none": {}}}}, {"standard": {"query": {"match_none": {}}}}]}}}
"""The cheapest search with the rrf retriever: what the cluster answers says whether it has one."""


class NotElasticsearchAnswer(NoAnswer):
    """A 404 or 5xx page that no Elasticsearch node gives (a proxy in front of a node being replaced, another
    service on the port): raised by the node, so the client sets it aside and asks the next, as it does for a
    node that does not answer at all."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status} without an Elasticsearch response")
        self.status_code = status


ELASTICSEARCH_ERRORS = ClientErrors(
    "Elasticsearch", es_errors.NotFoundError, (es_errors.AuthenticationException, es_errors.AuthorizationException),
    (NotElasticsearchAnswer, es_errors.UnsupportedProductError), (es_errors.TransportError,), (es_errors.ApiError,),
    (es_errors.SerializationError,))
log = logging.getLogger("hybrid")


class AsciiJson(JsonSerializer):
    """Request bodies as ASCII JSON, as for OpenSearch: a lone surrogate in a text has no UTF-8 form."""

    def json_dumps(self, data: Any) -> bytes:
        return json.dumps(data, default=self.default, separators=(",", ":")).encode("ascii")


class AsciiNdjson(NdjsonSerializer):
    def json_dumps(self, data: Any) -> bytes:
        return json.dumps(data, default=self.default, separators=(",", ":")).encode("ascii")


class ElasticsearchNode:
    """Mixed into a node class: asks for the 8.x REST API whichever elasticsearch-py major is installed, and
    tells a page of something else at a node's address (``NotElasticsearchAnswer``) from Elasticsearch's
    answers."""

    @staticmethod
    def _compatible(headers: HttpHeaders | None) -> HttpHeaders | None:
        if headers is None:
            return None
        return HttpHeaders({name: ASKED_FOR.sub(COMPATIBLE_WITH, value) for name, value in headers.items()})

    @staticmethod
    def _checked(response: Any) -> Any:
        """``response``, unless it is an error page that is not JSON (elasticsearch-py would fail to read it
        and lose its status): a 404 or 5xx, another node may answer; any other status is raised as the
        client raises it (a proxy's 401 page is a refusal, its 413 a page of something else)."""
        meta = response.meta
        if meta.status < 400 or "json" in (meta.mimetype or ""):
            return response
        if meta.status == 404 or meta.status >= 500:
            raise NotElasticsearchAnswer(meta.status)
        kind = es_errors.HTTP_EXCEPTIONS.get(meta.status, es_errors.ApiError)
        page = response.body.decode(errors="replace")
        raise kind(f"HTTP {meta.status} without an Elasticsearch response", meta, page)


class CompatibleNode(ElasticsearchNode, Urllib3HttpNode):
    def perform_request(self, method: str, target: str, body: bytes | None = None,  # type: ignore[override]
                        headers: HttpHeaders | None = None, **options: Any) -> Any:
        return self._checked(super().perform_request(method, target, body, self._compatible(headers), **options))


class AsyncCompatibleNode(ElasticsearchNode, AiohttpHttpNode):
    async def perform_request(self, method: str, target: str, body: bytes | None = None,  # type: ignore[override]
                              headers: HttpHeaders | None = None, **options: Any) -> Any:
        return self._checked(await super().perform_request(method, target, body, self._compatible(headers),
                                                           **options))


def client_options(connection: Connection) -> dict[str, Any]:
    """What the sync and the async client are both built with: the nodes of ``connection``, the same
    credentials, certificates and timeouts as an OpenSearch client's (``Connection.client_options``), an API
    key where one is set; the client moves on to the next node when one fails, and waiting to try again is
    ours alone."""
    if connection.http_auth is not None and not isinstance(connection.http_auth, tuple | list | str):
        raise BadRequestError(f"Elasticsearch takes a user and password or an API key, not a "
                              f"{type(connection.http_auth).__name__}: hand the searcher a client of your own")
    opensearch = connection.client_options()
    tls = {}  # elasticsearch-py refuses TLS options for plain-HTTP nodes; opensearch-py ignores them
    if any(url.startswith("https://") for url in opensearch["hosts"]):
        tls = dict(verify_certs=connection.verify_certs, ca_certs=connection.ca_certs,
                   client_cert=connection.client_cert, client_key=connection.client_key,
                   ssl_show_warn=connection.verify_certs)
    return dict(
        hosts=opensearch["hosts"], headers=opensearch["headers"], **tls, request_timeout=connection.timeout,
        http_compress=False, max_retries=opensearch["max_retries"], retry_on_timeout=False,
        retry_on_status=(502, 503, 504),  # another node at once; a 429 waits for our own backoff
        connections_per_node=connection.pool_size, serializers={"application/json": AsciiJson(),
                                                                "application/x-ndjson": AsciiNdjson()},
    )


def client_location(client: Elasticsearch | AsyncElasticsearch) -> str:
    """The nodes an application's own client talks to, for messages: scheme, host and port only."""
    return ",".join(f"{node.scheme}://{f'[{node.host}]' if ':' in node.host else node.host}:{node.port}" for node in
                    (node.config for node in client.transport.node_pool.all()))


def rrf_verdict(refusal: Exception | None) -> str:
    """Why a searcher fuses here, given how the cluster answered ``RRF_PROBE`` (None: it ran it)."""
    if refusal is None:
        return ("Elasticsearch's rrf retriever is there, but hybrid fuses Elasticsearch's legs itself (same "
                "ranking on every licence)")
    return f"Elasticsearch's rrf retriever is not available here ({reason(refusal)})"


def knn_search(query: LegQuery, filters: list[dict[str, Any]]) -> dict[str, Any]:
    """Elasticsearch's vector leg: a top-level ``knn`` search of ``k`` documents among ``num_candidates``
    per shard (1.5 k, Elasticsearch's own default since 8.13, given for older 8.x), with the filters applied
    while searching. On a chunked index the field is the nested windows' vector, and each document comes back
    once, scored by its best window."""
    assert query.vector is not None and not isinstance(query.vector, ServerEmbedded)  # a searcher embeds for it
    knn: dict[str, Any] = {"field": f"{WINDOWS_FIELD}.vector" if query.windows else VECTOR_FIELD,
                           "query_vector": query.vector.astype("float32").tolist(), "k": query.k,
                           "num_candidates": min(MAX_CANDIDATES, math.ceil(1.5 * query.k))}
    if filters:
        knn["filter"] = {"bool": {"filter": filters}}
    return {"knn": knn}


class ElasticsearchBackend(OpenSearchBackend):
    """Indexes on an Elasticsearch cluster (8.x or 9.x, the basic licence is enough); the same interface,
    versions behind an alias, guarantees and errors as ``OpenSearchBackend``."""

    engine: Engine = "elasticsearch"
    errors = ELASTICSEARCH_ERRORS
    embeds_texts = False
    helpers: Any = helpers
    vector_search = staticmethod(knn_search)

    def __init__(self, connection: Connection | None = None, client: Elasticsearch | None = None) -> None:
        super().__init__(connection, client)
        self._analyzer_found: str | None = None
        self._rrf: str | None = None

    def server_fusion(self, target: str) -> str:
        """What the cluster has of Elasticsearch's own fusion (asked once), to say why searches fuse here."""
        if self._rrf is None:
            with self._errors(target):  # a cluster that does not answer fails the search, as it would anyway
                try:
                    self.client.search(index=target, body=RRF_PROBE)
                    self._rrf = rrf_verdict(None)
                except self.errors.answered as refused:
                    self._rrf = rrf_verdict(refused)
        return self._rrf

    def _client(self, given: Any) -> Any:
        if given is not None and not isinstance(given, Elasticsearch):
            raise BadRequestError(f"an Elasticsearch backend needs an Elasticsearch client, not {type(given).__name__} "
                                  "(AsyncSearcher takes an AsyncElasticsearch one)")
        if given is not None:
            return given
        return Elasticsearch(**client_options(self.connection), node_class=CompatibleNode)

    def _located(self, client: Any) -> str:
        return client_location(client)

    def _opensearch_only(self, *args: Any, **kwargs: Any) -> Any:
        """Search pipelines and the ``hybrid`` query are OpenSearch's (neural-search)."""
        raise BadRequestError(f"search pipelines and the hybrid query are OpenSearch's; {self.location} is "
                              "Elasticsearch")

    search_pipeline = put_search_pipeline = delete_search_pipeline = fused_search = _opensearch_only

    def set_aside(self) -> list[str]:
        """Nothing: elastic-transport's pool does not say which nodes it set aside (requests still move on)."""
        return []

    def _write_client(self) -> tuple[Any, dict[str, Any]]:
        return self.client.options(request_timeout=self.connection.write_timeout), {}

    def _analyzer(self) -> str:
        """``english`` where the cluster has it (the analysis-common module, in every full distribution), else
        ``standard``: the integration-test distribution has no language analyzer, and its BM25 then neither
        stems nor drops stop words (said once)."""
        if self._analyzer_found is None:
            with self._errors():
                try:
                    self.client.indices.analyze(analyzer="english", text="running")
                    self._analyzer_found = "english"
                except self.errors.refused:  # a user without cluster rights may not ask: every full
                    self._analyzer_found = "english"  # distribution has it
                except es_errors.BadRequestError:
                    log.warning("Elasticsearch at %s has no english analyzer (the analysis-common module): text "
                                "fields are analysed by the standard analyzer, without stemming", self.location)
                    self._analyzer_found = "standard"
        return self._analyzer_found
