"""The OpenSearch backend: k-NN (HNSW, inner product) next to BM25 text fields, both legs in one ``_msearch``.

Works on any OpenSearch >= 2.13 with the k-NN plugin: no search pipeline or neural-search plugin.
The index mapping is ``hybrid/mappings/description.json`` rendered for OpenSearch (``mapping.py``; the result
is ``mappings/opensearch.json``, ``mappings/`` at the repository top linking to ``hybrid/mappings``).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np
from opensearchpy import ConnectionPool, JSONSerializer, OpenSearch, Urllib3HttpConnection, helpers
from opensearchpy import exceptions as os_errors

if TYPE_CHECKING:
    from opensearchpy import AsyncOpenSearch

from ..documents import INTERNAL_FIELDS, LONE_SURROGATE
from ..errors import (
    BadRequestError,
    HybridError,
    IncompatibleIndexError,
    IndexNotFoundError,
    ServerModelError,
    VersionGoneError,
)
from .base import (
    VERSION_NAME,
    Filters,
    IndexInfo,
    IndexMeta,
    IndexWriter,
    LegHit,
    LegQuery,
    ServerEmbedded,
    Snapshot,
    StoredDocument,
    ToEmbed,
    Version,
    WriteFailure,
    check_index_name,
)
from .cluster_errors import (
    RETRY_STATUSES,
    ClientErrors,
    LegFailed,
    announce_retry,
    answered,
    short_reason,
    translated_errors,
    worth_retrying,
)
from .mapping import Engine, index_mapping

ID_FIELD, HASH_FIELD, TEXT_FIELD, VECTOR_FIELD, WINDOWS_FIELD = INTERNAL_FIELDS
TO_EMBED_FIELD = "hybrid_to_embed"
"""Where a document written as texts carries them to the ingest pipeline that embeds them (and removes it)."""
STORED_ONLY = [VECTOR_FIELD, WINDOWS_FIELD, HASH_FIELD, ID_FIELD, TEXT_FIELD]
"""Internal fields kept in each document's source, and left out of what searches return."""
TRANSIENT_STATUSES = (429, 500, *RETRY_STATUSES[1:])
"""A document refused with one of these (a node left, a shard is being promoted) is sent again."""
MAX_RESULT_WINDOW = 10_000
"""OpenSearch's default index.max_result_window and the k-NN plugin's largest k."""
LEG_SEARCH_OPTIONS: dict[str, dict[str, Any]] = {
    # BM25 with the index's term statistics, not each shard's (as the embedded index scores); OpenSearch
    # skips the extra round when the index has one shard.
    "bm25": {"search_type": "dfs_query_then_fetch", "allow_partial_search_results": False},
    "vector": {"allow_partial_search_results": False},
}
"""Per-leg ``_msearch`` headers: a leg that misses a shard fails instead of answering from the rest."""
IDS_ONLY: dict[str, Any] = {"_source": False, "stored_fields": "_none_", "docvalue_fields": [ID_FIELD]}
"""A leg's candidates by their ids alone, read from doc values: reading ``_id`` from stored fields unpacks
each hit's stored block, vectors and all, which took 5-6 ms of a leg's 7-8 on SciFact."""
UNANALYSABLE = re.compile("[\ud800-\udbff]\\Z")
"""A value that Lucene's standard tokenizer makes no words of (see ``analysable``)."""
LEG_RESPONSE = "responses.hits.hits._score,responses.hits.hits.fields,responses.error,responses.status"
"""What the client reads of the legs' ``_msearch`` response (its ``filter_path``): each hit's score and id,
and a leg's failure; not each hit's index name, nor each leg's timing, shard counts and totals."""
LEG_ONLY: dict[str, Any] = {**IDS_ONLY, "track_total_hits": False}
"""A leg asks for no count of its matches: counting them (to 10,000 by default) keeps BM25 from skipping
blocks of documents that cannot reach the top k."""
URL_START = re.compile(r",(?=\s*(?:[A-Za-z][A-Za-z0-9+.-]*://|[\w.-]+:\d+/?\s*(?:,|$)|\[[0-9A-Fa-f:.]+\]:\d+))")
"""A comma that starts another node's URL: before a scheme, or a bare ``host:port``."""
T = TypeVar("T")
log = logging.getLogger("hybrid")


class AsciiJSONSerializer(JSONSerializer):
    """Request bodies as ASCII JSON: text may hold lone surrogates (a JSON escape can make one), which have
    no UTF-8 form, so the client's UTF-8 bodies would fail on them; escaped, OpenSearch keeps them as sent."""

    def dumps(self, data: Any) -> Any:
        if isinstance(data, (str, bytes)):  # bytes: a body sent as it is (a model's chunk), as the client does
            return data
        try:
            return json.dumps(data, default=self.default, separators=(",", ":"))
        except (ValueError, TypeError) as error:
            raise os_errors.SerializationError(data, error) from None


@dataclass(frozen=True)
class Connection:
    """How to reach a cluster, and how to lay out the indexes made there. Credentials come from the
    environment (or the arguments) and are never printed.

    ``url`` may list several nodes, comma-separated: requests go round-robin to the nodes that answer,
    and one that fails (or answers as no OpenSearch node does: a proxy's 404 page) is set aside and the
    request sent to the next at once, so the client keeps working while a node is down. The list is used
    as given: no sniffing, which would replace it with the addresses nodes publish, unreachable behind a
    load balancer, a proxy or Docker's port mapping.

    An application that needs more (AWS SigV4, a proxy, its own transport) builds its own ``OpenSearch`` or
    ``AsyncOpenSearch`` client and hands it to the searcher (``client=``) instead.
    """

    url: str = "http://127.0.0.1:9200"
    user: str | None = None
    password: str | None = None
    verify_certs: bool = True
    ca_certs: str | None = None
    client_cert: str | None = None
    """A PEM client certificate (with its key, or ``client_key`` beside it) for clusters that ask for one."""
    client_key: str | None = None
    http_auth: Any = None
    """An auth object that signs requests, instead of ``user``/``password`` (e.g. opensearch-py's
    ``AWSV4SignerAuth``, or ``AWSV4SignerAsyncAuth`` for an async searcher), or a ``(user, password)`` pair
    (sent as UTF-8 basic auth); shown by its type only."""
    headers: Mapping[str, str] | None = None
    """Headers sent with every request (a tenant, a trace id); shown by their names only."""
    api_key: str | None = None
    """An Elasticsearch API key (the encoded form Kibana shows; ``$ELASTICSEARCH_API_KEY``), sent instead of
    a user and password; never shown."""
    pool_size: int = 10
    """Connections kept open to each node: set it to the searches in flight at once (an application's
    request threads, or its concurrent requests when async). Fewer, and requests open and discard
    connections; urllib3 alone keeps one."""
    engine: str = "lucene"
    timeout: float = 10.0
    """Seconds a request may take (bulk requests and index changes get ``write_timeout``)."""
    write_timeout: float = 120.0
    """Seconds a bulk request or a change of indexes (create, delete, switch) may take: a busy cluster
    applies those slowly."""
    retries: int = 5
    """Attempts for a write that fails with 429, 5xx or no answer, waiting 1, 2, 4, 8 s between them."""
    search_attempts: int = 2
    """Attempts for a search: a search against a cluster that is down fails within
    ``search_attempts * timeout`` seconds per listed node that hangs (about a second when nothing
    listens at the URLs)."""
    bulk_threads: int = 4
    """Bulk requests in flight at once, as opensearch-py's ``parallel_bulk``: with one, a cluster's nodes
    wait between requests (see bench/cluster_bench.py throughput)."""
    shards: int | None = None
    """Primary shards of a new index; None: one (see ``IndexLayout``), or the replaced version's."""
    replicas: int | None = None
    """Replicas of each shard of a new index; None: one where the cluster has two data nodes or more,
    else none, or the replaced version's."""

    @classmethod
    def from_env(cls, url: str | None = None, prefix: str = "OPENSEARCH", **overrides: Any) -> Connection:
        """The settings in the environment, ``OPENSEARCH_URL`` etc. (``prefix="ELASTICSEARCH"``:
        ``ELASTICSEARCH_URL`` ...), with ``url`` and ``overrides`` given winning."""
        verify = os.environ.get(f"{prefix}_VERIFY_CERTS", "true").lower() not in ("0", "false", "no")
        settings: dict[str, Any] = {
            "url": url or os.environ.get(f"{prefix}_URL") or cls.url,
            "user": os.environ.get(f"{prefix}_USER"),
            "password": os.environ.get(f"{prefix}_PASSWORD"),
            "api_key": os.environ.get(f"{prefix}_API_KEY") if prefix == "ELASTICSEARCH" else None,
            "verify_certs": verify,
            "ca_certs": os.environ.get(f"{prefix}_CA_CERTS"),
            "client_cert": os.environ.get(f"{prefix}_CLIENT_CERT"),
            "client_key": os.environ.get(f"{prefix}_CLIENT_KEY"),
            "engine": os.environ.get(f"{prefix}_KNN_ENGINE", cls.engine),
            "shards": _count_from_env(f"{prefix}_SHARDS", minimum=1),
            "replicas": _count_from_env(f"{prefix}_REPLICAS", minimum=0),
            "pool_size": _count_from_env(f"{prefix}_POOL_SIZE", minimum=1),
        }
        settings.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**{name: value for name, value in settings.items() if value is not None})  # unset: the default

    def __repr__(self) -> str:
        """Every setting, with the URLs' ``user:password@`` parts dropped, a password shown as ``***``, an auth
        object by its type and headers by their names: an application logs ``%r`` of what it holds, and an
        error report prints locals."""
        shown: dict[str, Any] = {item.name: getattr(self, item.name) for item in fields(self)}
        shown.update(url=self.safe_url, password=None if self.password is None else "***",
                     api_key=None if self.api_key is None else "***",
                     http_auth=None if self.http_auth is None else f"<{type(self.http_auth).__name__}>",
                     headers=None if self.headers is None else sorted(self.headers))
        return f"{type(self).__name__}({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    @property
    def urls(self) -> list[str]:
        """Each node's URL, with ``http://`` before one given as ``[user:password@]host:port`` (as the client
        reads it): split only where a URL starts, since a password in a URL may hold a comma."""
        found = (url.strip(" ,") for url in URL_START.split(self.url))
        return [url if "://" in url else f"http://{url}" for url in found if url]

    @property
    def safe_url(self) -> str:
        """The URLs without any user:password part, fit for messages and logs."""
        return ",".join(_without_credentials(url) for url in self.urls)

    def basic_auth_header(self) -> dict[str, str]:
        """HTTP basic credentials as an ``Authorization`` header encoded in UTF-8, as OpenSearch's security
        plugin decodes them (the client's own ``http_auth`` encodes Latin-1 and fails on any other character:
        a traceback, not a refusal). Whose: a ``(user, password)`` or ``"user:password"`` ``http_auth``, else
        ``user``/``password``, else those of the first URL that has some; none where ``headers`` carry an
        ``Authorization`` of their own (given explicitly, they win over the environment's user) or
        ``http_auth`` is an object that signs requests itself."""
        if any(name.lower() == "authorization" for name in self.headers or {}):
            return {}
        credentials = self._basic_credentials()
        if credentials is None:
            return {}
        token = base64.b64encode(":".join(credentials).encode("utf-8")).decode("ascii")
        return {"authorization": f"Basic {token}"}

    def _basic_credentials(self) -> tuple[str, str] | None:
        auth = self.http_auth
        if isinstance(auth, tuple | list) and len(auth) == 2:
            return str(auth[0]), str(auth[1])
        if isinstance(auth, str):
            user, _, password = auth.partition(":")
            return user, password
        if auth is not None:
            return None
        if self.user:
            return self.user, self.password or ""
        return next(((unquote(parts.username), unquote(parts.password or "")) for parts in map(urlsplit, self.urls)
                     if parts.username), None)

    def api_key_header(self) -> dict[str, str]:
        """An ``Authorization`` header for ``api_key``, unless ``headers`` carry one of their own."""
        if not self.api_key or any(name.lower() == "authorization" for name in self.headers or {}):
            return {}
        if not self.api_key.isascii() or not self.api_key.isprintable():
            raise BadRequestError("the API key holds characters no API key has (keys are base64 text): give the "
                                  "encoded key Elasticsearch or Kibana showed")
        return {"authorization": f"ApiKey {self.api_key}"}

    def client_options(self) -> dict[str, Any]:
        """What the sync and the async client are both built with.

        The client retries only by moving on to another node (a refused connection, 502-504, a 404 page no
        OpenSearch node gives); waiting and trying again is ours alone, so its time stays bounded and said.
        No gzip: it cost 1.5-2 ms of a 10-15 ms search on both ends, and ingest waits on the model, not on
        the network."""
        signer = None if isinstance(self.http_auth, tuple | list | str) else self.http_auth
        return dict(
            hosts=[_without_credentials(url) for url in self.urls],
            headers={**(self.headers or {}), **self.basic_auth_header(), **self.api_key_header()}, http_auth=signer,
            verify_certs=self.verify_certs, ca_certs=self.ca_certs, client_cert=self.client_cert,
            client_key=self.client_key, ssl_show_warn=self.verify_certs, timeout=self.timeout,
            http_compress=False, max_retries=len(self.urls) - 1, retry_on_timeout=False,
            serializer=AsciiJSONSerializer(), connection_pool_class=ReportingPool,
        )

    def client(self) -> OpenSearch:
        return OpenSearch(**self.client_options(), connection_class=NodeConnection, pool_maxsize=self.pool_size)


class NotOpenSearchAnswer(os_errors.ConnectionError):
    """A 404 that no OpenSearch node gives (an HTML page from a proxy in front of a node being replaced,
    another service on the port): the client sets that node aside and asks the next, as it does for a node
    that does not answer at all."""

    @property
    def status(self) -> int:
        return int(self.args[0])


class OpenSearchAnswers:
    """Tells a 404 from OpenSearch (a JSON error: no such index) from a 404 page of something else at its
    address; mixed into the sync and the async connection class. Other statuses keep the client's own
    errors: a security plugin's 401 may well be plain text."""

    def _raise_error(self, status_code: int, raw_data: str | bytes, content_type: str | None = None) -> None:
        if status_code == 404 and raw_data and not _is_json_object(raw_data, content_type):
            raise NotOpenSearchAnswer(status_code, f"HTTP {status_code} without an OpenSearch response", None)
        super()._raise_error(status_code, raw_data, content_type)  # type: ignore[misc]


class NodeConnection(OpenSearchAnswers, Urllib3HttpConnection):
    """opensearch-py's urllib3 connection to one node, with OpenSearch's answers told from others'."""


OPENSEARCH_ERRORS = ClientErrors(
    "OpenSearch", os_errors.NotFoundError, (os_errors.AuthenticationException, os_errors.AuthorizationException),
    (NotOpenSearchAnswer,), (os_errors.ConnectionError,), (os_errors.TransportError,), (os_errors.SerializationError,))


def _is_json_object(raw_data: str | bytes, content_type: str | None) -> bool:
    if (content_type or "").split(";")[0].strip() != "application/json":
        return False
    try:
        return isinstance(json.loads(raw_data), dict)
    except ValueError:
        return False


def client_location(client: OpenSearch | AsyncOpenSearch) -> str:
    """The nodes an application's own client talks to, for messages: scheme, host and port only."""
    hosts = client.transport.hosts or [{}]
    return ",".join(f"{'https' if host.get('use_ssl') or host.get('scheme') == 'https' else 'http'}://"
                    f"{host.get('host', 'localhost')}:{host.get('port', 9200)}" for host in hosts)


class ReportingPool(ConnectionPool):
    """opensearch-py's pool of several nodes, remembering each node it set aside (it stopped answering
    and requests went on to the others), so that a write can report it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_aside: list[str] = []

    def mark_dead(self, connection: Any, now: float | None = None) -> None:
        self.set_aside.append(str(connection.host))
        super().mark_dead(connection, now)


def _without_credentials(url: str) -> str:
    """``url`` without its ``user:password@`` part, query and fragment (an ``?api_key=``), an IPv6 host
    keeping its brackets."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment=""))


def _count_from_env(name: str, minimum: int) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < minimum:
        raise HybridError(f"{name}={value!r}: give a whole number of at least {minimum}")
    return int(value)


@dataclass(frozen=True)
class IndexLayout:
    """How an index is spread over a cluster.

    One shard by default: the corpora this tool is for (thousands to a few million documents, far
    below OpenSearch's advice of 10-50 GB per shard) fit one, which keeps BM25's statistics and the
    k-NN search whole; ``--shards`` spreads a large index over more nodes. One replica where the
    cluster has two data nodes or more, so losing a node loses no data and no availability.
    """

    shards: int
    replicas: int

    def settings(self) -> dict[str, int]:
        return {"number_of_shards": self.shards, "number_of_replicas": self.replicas}


def check_target_name(target: str) -> None:
    """An index name, or one of its numbered versions (``NAME_v3``)."""
    match = VERSION_NAME.fullmatch(target)
    check_index_name(match.group("index") if match else target)


def inner_product(score: float) -> float:
    """Undo OpenSearch's inner-product score scaling (ip + 1 when ip >= 0, else 1 / (1 - ip))."""
    return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score


def hit_id(hit: dict[str, Any]) -> str:
    """The id of a hit asked for with ``IDS_ONLY``."""
    return hit["fields"][ID_FIELD][0]


def match_query(text: str, filters: list[dict[str, Any]]) -> dict[str, Any]:
    """The BM25 leg: the query's words against every text field (copied into one), filtered first."""
    return {"bool": {"must": {"match": {TEXT_FIELD: analysable(text)}}, "filter": filters}}


def analysable(text: str) -> str:
    """``text`` with each lone surrogate (which a JSON escape can make) as U+FFFD, which analyzers drop: Lucene's
    standard tokenizer makes no words at all of a value that ends in half a surrogate pair (``"apple \\ud800"``:
    none; ``"apple \\ud800 pear"``: apple, pear), and the document (or query) would have no BM25 match."""
    return LONE_SURROGATE.sub("\ufffd", text)


def analysable_copies(fields: Mapping[str, Any], text_fields: Sequence[str]) -> dict[str, Any]:
    """What the text field gets besides what ``copy_to`` copies: each text value that ends in half a surrogate
    pair, made ``analysable``. Its copy yields no words, so its words come once, from this, and the document
    scores as the same text without the surrogate does."""
    values = (value for name in text_fields for value in _listed(fields.get(name)))
    cleaned = [analysable(value) for value in values if isinstance(value, str) and UNANALYSABLE.search(value)]
    return {TEXT_FIELD: cleaned} if cleaned else {}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def knn_query(query: LegQuery, filters: list[dict[str, Any]]) -> dict[str, Any]:
    """The vector leg's query: k-NN on the document vector, or on the nested windows of a chunked index,
    where the k-NN plugin (Lucene engine, 2.12+) returns k distinct documents per shard, each scored by
    its best window, and applies a filter on the document's own fields before ranking. A text the cluster
    embeds (``ServerEmbedded``) is a ``neural`` query (neural-search) on the same field, with the same k."""
    assert query.vector is not None
    if isinstance(query.vector, ServerEmbedded):
        kind, knn = "neural", {"query_text": query.vector.text, "model_id": query.vector.model_id, "k": query.k}
    else:
        kind, knn = "knn", {"vector": query.vector.astype(np.float32).tolist(), "k": query.k}
    if filters:
        knn["filter"] = {"bool": {"filter": filters}}
    if not query.windows:
        return {kind: {VECTOR_FIELD: knn}}
    return {"nested": {"path": WINDOWS_FIELD, "score_mode": "max", "query": {kind: {f"{WINDOWS_FIELD}.vector": knn}}}}


def filter_clauses(filters: Filters) -> list[dict[str, Any]]:
    return [
        {"terms": {name: [wanted] if isinstance(wanted, str) else list(wanted)}} for name, wanted in filters.items()
    ]


PLUGIN_ROWS: dict[str, Any] = {"format": "json", "h": "name,component,version"}
NODE_NAMES: dict[str, Any] = {"format": "json", "h": "name"}


def snapshot_from(index: str, mappings: Mapping[str, Any], location: str) -> Snapshot:
    """The snapshot an index's mapping answer describes (for an alias, keyed by the index it points at)."""
    concrete = sorted(mappings)
    if not concrete:  # a user allowed to see no index of the alias
        raise IndexNotFoundError(index, location)
    if len(concrete) > 1:
        raise IncompatibleIndexError(f"{index!r} is an alias of {len(concrete)} indexes {concrete}, not of one")
    recorded = mappings[concrete[0]]["mappings"].get("_meta", {}).get("hybrid")
    if recorded is None:
        raise IncompatibleIndexError(f"index {index!r} at {location} was not created by hybrid (no _meta.hybrid)")
    return Snapshot(index, concrete[0], IndexMeta.from_dict(recorded))


def layout_from(settings: Mapping[str, Any]) -> IndexLayout:
    index = next(iter(settings.values()))["settings"]["index"]
    return IndexLayout(int(index["number_of_shards"]), int(index["number_of_replicas"]))


VectorSearch = Callable[[LegQuery, list[dict[str, Any]]], dict[str, Any]]
"""The part of a vector leg's search body that finds the nearest vectors (the engines' syntaxes differ)."""


def knn_search(query: LegQuery, filters: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenSearch's vector leg: a ``knn`` query."""
    return {"query": knn_query(query, filters)}


def leg_requests(target: str, query: LegQuery, vector_search: VectorSearch = knn_search
                 ) -> tuple[list[str], list[dict[str, Any]]]:
    """The legs ``query`` asks for and the ``_msearch`` lines that run them, each filtered before ranking."""
    check_target_name(target)
    filters = filter_clauses(query.filters)
    bodies: dict[str, dict[str, Any]] = {}
    if query.text is not None:
        bodies["bm25"] = {**LEG_ONLY, "size": query.k, "query": match_query(query.text, filters)}
    if query.vector is not None:
        bodies["vector"] = {**LEG_ONLY, "size": query.k, **vector_search(query, filters)}
    lines: list[dict[str, Any]] = []
    for leg, body in bodies.items():
        lines += [{"index": target, **LEG_SEARCH_OPTIONS[leg]}, body]
    return list(bodies), lines


EMBED_TIMEOUT_S = 600.0
"""How long a bulk request whose documents the cluster embeds may take: its ML nodes queue the texts of
every request in flight, and a request sent again after a timeout only adds to that queue (the first one
is still being embedded), as a bench on one busy 2-core node showed with the write timeout's 120 s."""
MODEL_UNUSABLE = re.compile(r"Model not ready|Failed to find model", re.IGNORECASE)
"""ML Commons' answer to a ``neural`` query whose model is undeployed or gone (a rollback to a version that
recorded it, an undeploy by model id): the index's record, not the query, is what to mend."""


def failed_legs_raised(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The legs' responses; a leg that failed on the cluster's side (a node left mid-search) fails the whole
    request as a 5xx (or 429), so that it is tried again rather than answered from part of the index."""
    responses: list[dict[str, Any]] = answer["responses"]
    for response in responses:
        status = int(response.get("status", 200))
        if "error" in response and (status >= 500 or status == 429):  # a search may always be sent again
            raise LegFailed(503 if status >= 500 else 429, response["error"].get("type", "error"), response)
    return responses


def unservable_model(target: str, reason: str, status: Any) -> ServerModelError:
    """The error for a ``neural`` query whose model the cluster cannot serve, naming the index (not the
    version searched) whose record to mend."""
    version = VERSION_NAME.fullmatch(target)
    index = version["index"] if version else target
    return ServerModelError(f"the model {index} records for the cluster to embed queries cannot serve: {reason}",
                            index, status=status)


@contextmanager
def unservable_model_said(target: str) -> Iterator[None]:
    """A search fused on the server fails whole where its ``neural`` part cannot embed: said as the legs say
    it (``ServerModelError``), not as a bad request, which an application would blame on its caller."""
    try:
        yield
    except BadRequestError as error:
        if MODEL_UNUSABLE.search(str(error)):
            raise unservable_model(target, str(error), error.status) from error
        raise


def legs_from(target: str, legs: list[str], responses: list[dict[str, Any]], location: str,
              product: str = "OpenSearch") -> dict[str, list[LegHit]]:
    """Each leg's hits (ids and raw scores, inner products for the vector leg) from its ``_msearch`` response."""
    found: dict[str, list[LegHit]] = {}
    for leg, response in zip(legs, responses):
        if "error" in response:
            error = response["error"]
            if error.get("type") == "index_not_found_exception":
                if VERSION_NAME.fullmatch(target):
                    raise VersionGoneError(f"{target} is gone from {location}", status=404)
                raise IndexNotFoundError(target, location, status=404)
            reason = str(error.get("reason", error))
            if leg == "vector" and MODEL_UNUSABLE.search(reason):
                raise unservable_model(target, reason, response.get("status"))
            raise answered(f"{product} {leg} query failed: {reason}", response.get("status"))
        convert = inner_product if leg == "vector" else float
        hits = response.get("hits", {}).get("hits", [])  # a leg without hits is {} through LEG_RESPONSE
        found[leg] = [LegHit(hit_id(h), convert(h["_score"])) for h in hits]
    return found


def mget_request(target: str, ids: Sequence[str]) -> dict[str, Any]:
    """The ``_mget`` of a page's documents, without hybrid's internal fields."""
    check_target_name(target)
    return {"index": target, "body": {"ids": list(ids)}, "_source_excludes": ",".join(STORED_ONLY)}


def sources_from(response: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {doc["_id"]: doc["_source"] for doc in response["docs"] if doc.get("found")}


def fused_request(target: str, body: dict[str, Any], explain: bool) -> dict[str, Any]:
    """A search fused on the server, failing rather than answering from part of the index."""
    check_target_name(target)
    params = {"allow_partial_search_results": "false", **({"explain": "true"} if explain else {})}
    return {"index": target, "body": body, "params": params}


class OpenSearchBackend:
    """Indexes on an OpenSearch cluster; same interface as the local backend.

    An index ``NAME`` is an alias over numbered versions ``NAME_vN``; only indexes whose mapping carries
    ``_meta.hybrid`` are ever listed, written or deleted, so other applications' indexes are safe.
    """

    snapshot_ttl_s = 10.0
    """Finding the serving version costs round trips, so a searcher re-checks it this often."""
    max_depth: int | None = MAX_RESULT_WINDOW
    embeds_texts = True
    """With a model deployed by ``hybrid model deploy`` (ML Commons, neural-search)."""
    engine: Engine = "opensearch"
    """The mapping's syntax (``mapping.index_mapping``)."""
    errors = OPENSEARCH_ERRORS
    helpers: Any = helpers
    """The client's bulk and scroll helpers."""
    vector_search = staticmethod(knn_search)

    def __init__(self, connection: Connection | None = None, client: Any = None) -> None:
        """On the cluster ``connection`` describes, or through an application's own ``client`` (its auth,
        certificates, proxies and pool are then the application's; ``connection`` still sets timeouts,
        attempts and index layout, and closing the backend leaves that client open)."""
        self.connection = connection or Connection()
        self._owns_client = client is None
        self.client = self._client(client)
        self.location = self.connection.safe_url if client is None else self._located(client)
        self._writes, self._write_options = self._write_client()

    def set_aside(self) -> list[str]:
        """Each node the client set aside (it stopped answering), in order, for a writer to report."""
        return list(getattr(self.client.transport.connection_pool, "set_aside", []))

    def _located(self, client: Any) -> str:
        """Where an application's own client sends requests, for messages."""
        return client_location(client)

    def _client(self, given: Any) -> Any:
        """The application's ``given`` client, which must be of this engine's kind, or a client of our own."""
        if given is not None and not isinstance(given, OpenSearch):
            raise BadRequestError(f"a searcher needs an OpenSearch client, not {type(given).__name__} "
                                  "(AsyncSearcher takes an AsyncOpenSearch one)")
        return self.connection.client() if given is None else given

    def server_fusion(self, target: str) -> str | None:
        """None: OpenSearch may fuse with its hybrid query (``hybrid.server_fusion`` finds out)."""
        return None

    def _write_client(self) -> tuple[Any, dict[str, Any]]:
        """The client and the arguments that send index changes (create, delete, switch) and bulk requests with
        ``Connection.write_timeout``: a busy cluster applies those slowly."""
        return self.client, {"request_timeout": self.connection.write_timeout}

    def _analyzer(self) -> str:
        """The text fields' analyzer: ``english`` (stemming, stop words), as the embedded index analyses."""
        return "english"

    def _index_body(self, meta: IndexMeta, layout: IndexLayout, previous: str | None = None) -> dict[str, Any]:
        """The body that creates an index of ``meta`` laid out as ``layout``; ``previous`` is the version a
        re-index replaces (what rollback returns to)."""
        return index_mapping(self.engine, meta, layout.settings(), previous, knn_engine=self.connection.engine,
                             analyzer=self._analyzer())

    def _errors(self, index: str | None = None) -> AbstractContextManager[None]:
        return translated_errors(self.errors, self.location, index)

    def _with_retries(self, call: Callable[[], T], attempts: int, what: str, said: list[str] | None = None) -> T:
        """Retry 429, 5xx and lost connections, waiting 1, 2, 4 ... s (saying so, and adding it to ``said``);
        re-raise the last failure."""
        for attempt in range(1, attempts + 1):
            try:
                return call()
            except self.errors.any as error:
                if not worth_retrying(self.errors, error, attempt, attempts):
                    raise
                pause = announce_retry(f"{what}: {self.errors.product} at {self.location} did not answer "
                                       f"({short_reason(error)})",
                                       attempt, attempts, said)
            time.sleep(pause)
        raise AssertionError("unreachable")

    def names(self) -> list[str]:
        """Every hybrid index by the name users know: its alias, or its own name if it has none."""
        with self._errors():
            mappings = self.client.indices.get_mapping(index="*", expand_wildcards="open")
            aliases = self.client.indices.get_alias(index="*", expand_wildcards="open")
        names: set[str] = set()
        for concrete, body in mappings.items():
            alias = aliases.get(concrete, {}).get("aliases")
            if "hybrid" in body["mappings"].get("_meta", {}) and (alias or not VERSION_NAME.fullmatch(concrete)):
                names.update(alias or [concrete])  # a version kept for rollback is no index of its own
        return sorted(names)

    def exists(self, index: str) -> bool:
        check_index_name(index)
        with self._errors():
            return bool(self.client.indices.exists(index=index))

    def _serving(self, index: str) -> str:
        """The concrete index that ``index`` (an alias, or a plain index) stands for."""
        check_index_name(index)
        with self._errors(index):
            try:
                current = sorted(self.client.indices.get_alias(name=index))
            except self.errors.not_found as error:
                if not isinstance(getattr(error, "info", None), dict):  # not the cluster's "alias missing"
                    raise
                current = []
            if not current and self.client.indices.exists(index=index):
                return index
        if len(current) > 1:
            raise HybridError(f"{index!r} is an alias of {len(current)} indexes {current}, not of one")
        if not current:  # the cluster answered 404 to the alias, and has no index of that name
            raise IndexNotFoundError(index, self.location, status=404)
        return current[0]

    def _mapping_meta(self, concrete: str) -> dict[str, Any]:
        with self._errors(concrete):
            mappings = self.client.indices.get_mapping(index=concrete)
        return next(iter(mappings.values()))["mappings"].get("_meta", {})

    def snapshot(self, index: str) -> Snapshot:
        """The serving version and what it was built with, in one request (the alias's mapping)."""
        check_index_name(index)
        return snapshot_from(index, self._read(index, lambda: self.client.indices.get_mapping(index=index)),
                             self.location)

    def meta(self, index: str) -> IndexMeta:
        return self.snapshot(index).meta

    def count(self, index: str) -> int:
        check_index_name(index)
        with self._errors(index):
            return int(self.client.count(index=index)["count"])

    def info(self, index: str) -> IndexInfo:
        serving = self._serving(index)
        return IndexInfo(index, self.count(index), self.meta(index), f"{self.location}/{index}", self.versions(index),
                         self.layout(serving).settings())

    def layout(self, concrete: str) -> IndexLayout:
        """The shards and replicas an existing index has."""
        with self._errors(concrete):
            return layout_from(self.client.indices.get_settings(index=concrete))

    def _new_layout(self, replaced: str | None) -> IndexLayout:
        """What the connection asks for; the rest as the replaced version has it, or the defaults."""
        if replaced is not None:
            default = self.layout(replaced)
        else:
            default = IndexLayout(1, 1 if self._data_nodes() >= 2 else 0)
        connection = self.connection
        return IndexLayout(connection.shards or default.shards,
                           default.replicas if connection.replicas is None else connection.replicas)

    def lock(self, index: str) -> nullcontext[None]:
        """No lock: documents are upserted in place, and the cluster orders concurrent writes."""
        return nullcontext()

    def delete(self, index: str) -> None:
        """Delete the index: every version behind its alias, the ones kept for rollback included.
        Refuses, deleting nothing, when any of them was not created by hybrid."""
        serving = self._serving(index)
        if "hybrid" not in self._mapping_meta(serving):  # numbered versions are hybrid's by construction
            raise HybridError(f"{serving} at {self.location} was not created by hybrid; not deleting it")
        targets = {serving} | {f"{index}_v{number}" for number in self._numbered_versions(index)}
        with self._errors(index):
            self._writes.indices.delete(index=",".join(sorted(targets)), expand_wildcards="none",
                                        **self._write_options)

    def _numbered_versions(self, index: str) -> dict[int, dict[str, Any]]:
        """number -> ``_meta`` of each ``INDEX_vN`` that hybrid created."""
        with self._errors():
            found = self.client.indices.get_mapping(index=f"{index}_v*", expand_wildcards="open",
                                                    allow_no_indices=True)
        numbered = {}
        for name, body in found.items():
            match = VERSION_NAME.fullmatch(name)
            meta = body["mappings"].get("_meta", {})
            if match and match.group("index") == index and "hybrid" in meta:
                numbered[int(match.group("number"))] = meta
        return numbered

    def versions(self, index: str) -> list[Version]:
        """The ``INDEX_vN`` indexes, oldest first, and which one the alias ``INDEX`` points at."""
        serving = self._serving(index)
        return [Version(f"{index}_v{number}", number, meta.get("hybrid_version", {}).get("previous"),
                        f"{index}_v{number}" == serving)
                for number, meta in sorted(self._numbered_versions(index).items())]

    def hashes(self, index: str) -> dict[str, str]:
        check_index_name(index)
        with self._errors(index):
            return {
                hit["_id"]: hit["_source"].get(HASH_FIELD, "")
                for hit in self.helpers.scan(self.client, index=index, _source=[HASH_FIELD], size=2000,
                                             request_timeout=self.connection.timeout)
            }

    def create(self, index: str, meta: IndexMeta) -> None:
        """Create ``INDEX_v1`` behind the alias ``INDEX``, so a later re-index can swap versions atomically."""
        check_index_name(index)
        body = {**self._index_body(meta, self._new_layout(None)), "aliases": {index: {}}}
        with self._errors():
            try:
                self._writes.indices.create(index=f"{index}_v1", body=body, **self._write_options)
            except self.errors.answered as error:
                if getattr(error, "status_code", None) != 400:
                    raise
                kind = getattr(error, "error", None)
                if kind != "resource_already_exists_exception":
                    if self.engine == "opensearch" and "knn_vector" in str(getattr(error, "info", "")):
                        raise HybridError(
                            f"OpenSearch at {self.location} cannot create a k-NN index ({kind}): install "
                            "the opensearch-knn plugin (bin/opensearch-plugin install opensearch-knn) and restart "
                            "the node") from None
                    raise
                if not self.client.indices.exists_alias(name=index):  # else another writer just created it
                    raise HybridError(
                        f"{index}_v1 exists at {self.location} but the alias {index!r} that should point at it "
                        f"does not: add it back (POST _aliases {{\"actions\": [{{\"add\": {{\"index\": "
                        f"\"{index}_v1\", \"alias\": \"{index}\"}}}}]}}) or delete {index}_v1") from None

    def writer(self, index: str, meta: IndexMeta) -> OpenSearchWriter:
        if not self.exists(index):
            self.create(index, meta)
        return OpenSearchWriter(self, index, fresh=False, meta=meta)

    def _data_nodes(self) -> int:
        """How many data nodes the cluster has; 1 where the user may not ask (cluster:monitor/health)."""
        try:
            return int(self.client.cluster.health()["number_of_data_nodes"])
        except self.errors.refused as refused:
            if getattr(refused, "status_code", None) != 403:
                raise
            log.warning("%s: not allowed to read the cluster's health, so a new index gets no replica (give "
                        "--replicas to choose)", self.location)
            return 1

    def relayout(self, index: str) -> None:
        """Give an existing index the replicas the connection asks for, in place; its shards change only
        with a re-index (said, not done)."""
        concrete = self._serving(index)
        wanted, current = self.connection, self.layout(concrete)
        if wanted.shards is not None and wanted.shards != current.shards:
            log.warning("%s has %d primary shards; %d apply to new indexes and re-indexes (hybrid reindex --index "
                        "NAME --model MODEL --shards %d)", concrete, current.shards, wanted.shards, wanted.shards)
        if wanted.replicas is not None and wanted.replicas != current.replicas:
            with self._errors(concrete):
                self.client.indices.put_settings(index=concrete,
                                                 body={"index": {"number_of_replicas": wanted.replicas}})

    def documents(self, index: str) -> Iterator[tuple[str, dict[str, Any]]]:
        check_index_name(index)
        with self._errors(index):
            # _source_excludes, not _source={"excludes": ...}: as a URL parameter that dict matched no field,
            # and every document came back empty (a re-index then wrote documents without their fields).
            for hit in self.helpers.scan(self.client, index=index, _source_excludes=",".join(STORED_ONLY),
                                         size=500, request_timeout=self.connection.timeout):
                yield hit["_id"], hit["_source"]

    def new_version(self, index: str, meta: IndexMeta) -> tuple[str, OpenSearchWriter]:
        serving = self._serving(index)
        existing = self._numbered_versions(index)
        version = f"{index}_v{max(existing, default=0) + 1}"
        with self._errors():
            self._writes.indices.create(index=version, body=self._index_body(meta, self._new_layout(serving), serving),
                                        **self._write_options)
        return version, OpenSearchWriter(self, version, fresh=True, meta=meta)

    def record_meta(self, index: str, meta: IndexMeta) -> None:
        """Rewrite ``_meta.hybrid`` of the serving version; the rest of ``_meta`` (what rollback reads) is
        kept, as a mapping update replaces ``_meta`` whole."""
        serving = self._serving(index)
        recorded = {**self._mapping_meta(serving), "hybrid": meta.to_dict()}
        with self._errors(index):
            self._writes.indices.put_mapping(index=serving, body={"_meta": recorded}, **self._write_options)

    def close(self) -> None:
        """Close the client's connections to every node, where the client is this backend's own."""
        if self._owns_client:
            self.client.close()

    def switch(self, index: str, version: str) -> None:
        """Move the alias in one ``_aliases`` call: searches see the old version or the new, never neither."""
        current = self._serving(index)
        actions = [{"remove": {"index": current, "alias": index}}, {"add": {"index": version, "alias": index}}]
        with self._errors(index):
            self._writes.indices.update_aliases(body={"actions": actions}, **self._write_options)

    def retrieve(self, target: str, query: LegQuery) -> dict[str, list[LegHit]]:
        """Both legs in one ``_msearch`` round trip, each with the filters applied before ranking."""
        legs, lines = leg_requests(target, query, self.vector_search)
        responses = self._read(target, lambda: failed_legs_raised(
            self.client.msearch(body=lines, filter_path=LEG_RESPONSE)))
        return legs_from(target, legs, responses, self.location, self.errors.product)

    def _read(self, target: str, call: Callable[[], T]) -> T:
        """One read of ``target`` (a search, an ``_mget``): sent again on a 5xx/429 as searches may be, its
        errors said as hybrid says them."""
        with self._errors(target):
            return self._with_retries(call, self.connection.search_attempts, "search")

    def sources(self, target: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """One ``_mget`` for the documents of a page (not for every candidate of every leg)."""
        if not ids:
            return {}
        return sources_from(self._read(target, lambda: self.client.mget(**mget_request(target, ids))))

    def fused_search(self, target: str, body: dict[str, Any], explain: bool) -> list[dict[str, Any]]:
        """The hits of one search whose body fuses on the server (a ``hybrid`` query and its pipeline);
        like the legs, it fails rather than answer from part of the index, and a 5xx/429 is sent again."""
        request = fused_request(target, body, explain)
        with unservable_model_said(target):
            return list(self._read(target, lambda: self.client.search(**request))["hits"]["hits"])

    def plugins(self) -> tuple[list[dict[str, str]], set[str]]:
        """``_cat/plugins`` rows (node name, plugin, version), and the names of all nodes."""
        with self._errors():
            return (self.client.cat.plugins(**PLUGIN_ROWS),
                    {row["name"] for row in self.client.cat.nodes(**NODE_NAMES)})

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One request to a plugin's REST API that the client has no method for (ML Commons' models); a 429,
        5xx or lost connection is sent again, waiting between tries, as a write is."""
        timeout = {"request_timeout": self.connection.write_timeout}  # a model's chunk is 10 MB
        with self._errors():
            return self._with_retries(lambda: self.client.transport.perform_request(method, path, params=timeout,
                                                                                      body=body),
                                      self.connection.retries, f"{method} {path}")

    def embedding_pipeline(self, model_id: str, windows: bool) -> str:
        """The name of the ingest pipeline that embeds a document's ``TO_EMBED_FIELD`` with the deployed model
        ``model_id`` (neural-search's ``text_embedding``) into the field hybrid writes vectors to (each window
        into its nested object's ``vector``), written (again: it is the same) before a writer uses it."""
        name = f"hybrid-embed-{model_id}-{'windows' if windows else 'whole'}"
        target = WINDOWS_FIELD if windows else VECTOR_FIELD
        processors: list[dict[str, Any]] = [
            {"text_embedding": {"model_id": model_id, "field_map": {TO_EMBED_FIELD: target}}},
            {"remove": {"field": TO_EMBED_FIELD}}]
        if windows:  # text_embedding writes each window's vector as {"knn": [...]}; hybrid's mapping reads "vector"
            renamed = f"for (def w : ctx['{WINDOWS_FIELD}']) {{ w['vector'] = w.remove('knn'); }}"
            processors.insert(1, {"script": {"lang": "painless", "source": renamed}})
        self.request("PUT", f"/_ingest/pipeline/{name}",
                     {"description": "hybrid: embeds documents' texts as hybrid would", "processors": processors})
        return name

    def search_pipeline(self, name: str) -> dict[str, Any] | None:
        with self._errors():
            try:
                return dict(self.client.search_pipeline.get(id=name)[name])
            except self.errors.not_found:
                return None

    def put_search_pipeline(self, name: str, body: dict[str, Any]) -> None:
        with self._errors():
            self.client.search_pipeline.put(id=name, body=body)

    def delete_search_pipeline(self, name: str) -> None:
        with self._errors():
            self.client.search_pipeline.delete(id=name)


class OpenSearchWriter(IndexWriter):
    """Bulk-indexes batches in background threads, so the next batch is embedded meanwhile and the
    cluster's nodes have several requests to work on (``Connection.bulk_threads``).

    Documents the cluster rejects (mapping conflicts, wrong vector size) are collected with their
    reason and the rest go on; a cluster that stays unreachable through every retry stops the ingest.
    """

    def __init__(self, backend: OpenSearchBackend, index: str, fresh: bool, meta: IndexMeta) -> None:
        """``index`` is an alias (writes must go through it: never into an index OpenSearch would create
        on the fly), or, when ``fresh``, a new version that a failed re-index deletes again."""
        self._backend, self._index, self._fresh = backend, index, fresh
        self._windows = bool(meta.chunking)
        self._text_fields = meta.text_fields
        self._serving = None if fresh else backend._serving(index)
        self._threads = backend.connection.bulk_threads
        self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="bulk")
        self._pending: deque[Future[list[WriteFailure]]] = deque()
        self._failures: list[WriteFailure] = []
        self._retried: list[str] = []
        self._set_aside_before = len(self._set_aside())
        self._pipelines: dict[str, str] = {}  # deployed model id -> the ingest pipeline that embeds with it

    @property
    def retried(self) -> list[str]:
        moved = [f"ingest: {host} stopped answering; its requests went to the other nodes"
                 for host in dict.fromkeys(self._set_aside()[self._set_aside_before:])]
        return self._retried + moved

    def _set_aside(self) -> list[str]:
        return self._backend.set_aside()

    def _wait(self, in_flight: int = 0) -> None:
        """Collect finished batches, oldest first, until at most ``in_flight`` remain."""
        while len(self._pending) > in_flight:
            self._failures += self._pending.popleft().result()

    def write(self, documents: Sequence[StoredDocument]) -> None:
        self._wait(in_flight=self._threads - 1)
        models = {d.vectors.model_id for d in documents if isinstance(d.vectors, ToEmbed)}
        for model_id in models - self._pipelines.keys():
            self._pipelines[model_id] = self._backend.embedding_pipeline(model_id, self._windows)
        self._pending.append(self._pool.submit(self._send, list(documents)))

    def _vectors(self, vectors: np.ndarray | ToEmbed) -> dict[str, Any]:
        if isinstance(vectors, ToEmbed):  # the pipeline embeds them into the field the vectors go to
            return {TO_EMBED_FIELD: vectors.texts if self._windows else vectors.texts[0]}
        if self._windows:
            return {WINDOWS_FIELD: [{"vector": row.tolist()} for row in vectors]}
        if len(vectors) != 1:
            raise ValueError(f"{len(vectors)} vectors for one document of an index that is not chunked")
        return {VECTOR_FIELD: vectors[0].tolist()}

    def _send(self, documents: list[StoredDocument]) -> list[WriteFailure]:
        """Bulk-index ``documents``; send again, with backoff, those the cluster could not take for now
        (a shard whose node died is unavailable until a replica takes over); return the rest it refused."""
        actions = {
            d.id: {"_op_type": "index", "_index": self._index, "_id": d.id,
                   "_source": {**d.fields, ID_FIELD: d.id, HASH_FIELD: d.hash, **self._vectors(d.vectors),
                               **analysable_copies(d.fields, self._text_fields)},
                   **({"pipeline": self._pipelines[d.vectors.model_id]} if isinstance(d.vectors, ToEmbed) else {})}
            for d in documents
        }
        backend, attempts = self._backend, self._backend.connection.retries
        refused: list[WriteFailure] = []
        for attempt in range(1, attempts + 1):
            with backend._errors(self._index):
                failures = backend._with_retries(functools.partial(self._bulk, list(actions.values())), attempts,
                                                 "ingest", self._retried)
            transient = {f.id: f for f in failures if f.status in TRANSIENT_STATUSES}
            refused += [f for f in failures if f.id not in transient]
            if not transient or attempt == attempts:
                return refused + list(transient.values())
            first = next(iter(transient.values()))
            time.sleep(announce_retry(f"ingest: {len(transient)} documents were not taken for now ({first.reason})",
                                      attempt, attempts, self._retried))
            actions = {doc_id: actions[doc_id] for doc_id in transient}
        raise AssertionError("unreachable")

    def _bulk(self, actions: list[dict[str, Any]]) -> list[WriteFailure]:
        failures = []
        backend = self._backend
        options = backend._write_options
        if any("pipeline" in action for action in actions):  # the cluster embeds them as it indexes them
            options = {**options, "request_timeout": max(options["request_timeout"], EMBED_TIMEOUT_S)}
        for ok, item in backend.helpers.streaming_bulk(
            # 429s come back as failures too: _send sends them again, and says so
            backend._writes, actions, chunk_size=500, max_retries=0, raise_on_error=False,
            require_alias=not self._fresh, **options,
        ):
            if not ok:
                result = next(iter(item.values()))
                error = result.get("error", {})
                reason = error.get("reason", str(error)) if isinstance(error, dict) else str(error)
                status = result.get("status")
                failures.append(WriteFailure(str(result.get("_id")), f"{status}: {reason}",
                                             status if isinstance(status, int) else None))
        return failures

    def commit(self) -> list[WriteFailure]:
        """Wait for the last batch, then refresh so that every written document is searchable.

        A cluster has no writer lock: if a re-index switched the alias meanwhile, part of this write went
        to the old version and part to the new (with the old model's vectors). That is said, not hidden."""
        self._wait()
        with self._backend._errors(self._index):
            self._backend._with_retries(lambda: self._backend.client.indices.refresh(index=self._index),
                                        self._backend.connection.retries, "ingest")
        now = None if self._fresh else self._backend._serving(self._index)
        if now != self._serving:
            raise HybridError(f"{self._index} was switched from {self._serving} to {now} (a re-index) while this "
                              "ingest ran; some of its documents went to each. Run the ingest again with the "
                              "index's new model")
        return self._failures

    def abort(self) -> None:
        for pending in self._pending:
            pending.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._fresh:  # a re-index that failed leaves no version behind
            with self._backend._errors():
                self._backend._writes.indices.delete(index=self._index, ignore_unavailable=True,
                                                     **self._backend._write_options)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

