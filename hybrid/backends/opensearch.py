"""The OpenSearch backend: k-NN (HNSW, inner product) next to BM25 text fields, both legs in one ``_msearch``.

Works on any OpenSearch >= 2.13 with the k-NN plugin: no search pipeline or neural-search plugin.
The index mapping is ``hybrid/mappings/index.json`` (linked as ``mappings/`` at the repository top).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from opensearchpy import OpenSearch, helpers
from opensearchpy import exceptions as os_errors

from ..errors import HybridError, IndexNotFoundError
from .base import Filters, IndexInfo, IndexMeta, IndexWriter, LegHit, LegQuery, StoredDocument, WriteFailure

VECTOR_FIELD, HASH_FIELD, ID_FIELD, TEXT_FIELD = "hybrid_vector", "hybrid_hash", "doc_id", "hybrid_text"
INTERNAL_FIELDS = [VECTOR_FIELD, HASH_FIELD, ID_FIELD]
RETRY_STATUSES = (429, 502, 503, 504)
T = TypeVar("T")


@dataclass(frozen=True)
class Connection:
    """How to reach a cluster. Credentials come from the environment and are never printed."""

    url: str = "http://127.0.0.1:9200"
    user: str | None = None
    password: str | None = None
    verify_certs: bool = True
    ca_certs: str | None = None
    engine: str = "lucene"
    timeout: float = 60.0
    retries: int = 5
    """Attempts, with exponential backoff from 1 s, for a request that fails with 429, 5xx or no answer."""

    @classmethod
    def from_env(cls, url: str | None = None, **overrides: Any) -> Connection:
        verify = os.environ.get("OPENSEARCH_VERIFY_CERTS", "true").lower() not in ("0", "false", "no")
        settings: dict[str, Any] = {
            "url": url or os.environ.get("OPENSEARCH_URL") or cls.url,
            "user": os.environ.get("OPENSEARCH_USER"),
            "password": os.environ.get("OPENSEARCH_PASSWORD"),
            "verify_certs": verify,
            "ca_certs": os.environ.get("OPENSEARCH_CA_CERTS"),
            "engine": os.environ.get("OPENSEARCH_KNN_ENGINE", cls.engine),
        }
        settings.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**settings)

    @property
    def safe_url(self) -> str:
        """The URL without any user:password part, fit for messages and logs."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))

    def client(self) -> OpenSearch:
        auth = (self.user, self.password or "") if self.user else None
        return OpenSearch(
            hosts=[self.url], http_auth=auth, verify_certs=self.verify_certs, ca_certs=self.ca_certs,
            ssl_show_warn=self.verify_certs, timeout=self.timeout, http_compress=True,
        )


def index_body(meta: IndexMeta, engine: str) -> dict[str, Any]:
    """The mapping file with this index's dimension, engine, text fields and ``_meta`` filled in."""
    body = json.loads(resources.files("hybrid").joinpath("mappings/index.json").read_text())
    properties = body["mappings"]["properties"]
    for name in meta.text_fields:
        properties[name] = {"type": "text", "analyzer": "english", "copy_to": TEXT_FIELD}
    properties[VECTOR_FIELD]["dimension"] = meta.dimension
    properties[VECTOR_FIELD]["method"]["space_type"] = meta.space_type
    properties[VECTOR_FIELD]["method"]["engine"] = engine
    body["mappings"]["_meta"] = {"hybrid": meta.to_dict()}
    return body


def inner_product(score: float) -> float:
    """Undo OpenSearch's inner-product score scaling (ip + 1 when ip >= 0, else 1 / (1 - ip))."""
    return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score


def filter_clauses(filters: Filters) -> list[dict[str, Any]]:
    return [
        {"terms": {name: [wanted] if isinstance(wanted, str) else list(wanted)}} for name, wanted in filters.items()
    ]


class OpenSearchBackend:
    """Indexes on an OpenSearch cluster; same interface as the local backend."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.location = connection.safe_url
        self.client = connection.client()

    @contextmanager
    def _errors(self, index: str | None = None) -> Iterator[None]:
        """Turn client errors into one-line messages that say what to do."""
        try:
            yield
        except os_errors.NotFoundError as error:
            if index is not None and error.error == "index_not_found_exception":
                raise IndexNotFoundError(index, self.location) from None
            raise
        except (os_errors.AuthenticationException, os_errors.AuthorizationException):
            raise HybridError(
                f"OpenSearch at {self.location} refused the credentials: set OPENSEARCH_USER and "
                "OPENSEARCH_PASSWORD to a user allowed to read and write the index"
            ) from None
        except os_errors.ConnectionError as error:
            raise HybridError(
                f"cannot reach OpenSearch at {self.location} ({type(error.info).__name__ if error.info else error}); "
                "start it (docker/opensearch-node.sh start, or docker compose -f docker/docker-compose.yml up -d) "
                "or point --opensearch / OPENSEARCH_URL at a running cluster"
            ) from None

    def _with_retries(self, call: Callable[[], T]) -> T:
        """Retry 429, 5xx and lost connections with exponential backoff; re-raise the last failure."""
        for attempt in range(self.connection.retries):
            try:
                return call()
            except (os_errors.ConnectionError, os_errors.TransportError) as error:
                status = error.status_code if isinstance(error.status_code, int) else None
                retriable = isinstance(error, os_errors.ConnectionError) or status in RETRY_STATUSES
                if not retriable or attempt == self.connection.retries - 1:
                    raise
                time.sleep(2**attempt)
        raise AssertionError("unreachable")

    def names(self) -> list[str]:
        """Every hybrid index by the name users know: its alias, or its own name if it has none."""
        with self._errors():
            mappings = self.client.indices.get_mapping(index="*", expand_wildcards="open")
            aliases = self.client.indices.get_alias(index="*", expand_wildcards="open")
        names = set()
        for concrete, body in mappings.items():
            if "hybrid" in body["mappings"].get("_meta", {}):
                names.update(aliases.get(concrete, {}).get("aliases") or [concrete])
        return sorted(names)

    def exists(self, index: str) -> bool:
        with self._errors():
            return bool(self.client.indices.exists(index=index))

    def meta(self, index: str) -> IndexMeta:
        with self._errors(index):
            mappings = self.client.indices.get_mapping(index=index)
        recorded = next(iter(mappings.values()))["mappings"].get("_meta", {}).get("hybrid")
        if recorded is None:
            raise HybridError(f"index {index!r} at {self.location} was not created by hybrid (no _meta.hybrid)")
        return IndexMeta.from_dict(recorded)

    def count(self, index: str) -> int:
        with self._errors(index):
            return int(self.client.count(index=index)["count"])

    def info(self, index: str) -> IndexInfo:
        return IndexInfo(index, self.count(index), self.meta(index), f"{self.location}/{index}")

    def delete(self, index: str) -> None:
        """Delete the index: every version behind its alias, the ones kept for rollback included."""
        with self._errors(index):
            targets = set(self._numbered_versions(index))
            if self.client.indices.exists(index=index):
                targets |= set(self.client.indices.get(index=index))
            if not targets:
                raise IndexNotFoundError(index, self.location)
            self.client.indices.delete(index=",".join(sorted(targets)))

    def _numbered_versions(self, index: str) -> list[str]:
        found = self.client.indices.get(index=f"{index}_v*", expand_wildcards="open")
        numbered = [name for name in found if name.removeprefix(f"{index}_v").isdigit()]
        return sorted(numbered, key=lambda name: int(name.removeprefix(f"{index}_v")))

    def hashes(self, index: str) -> dict[str, str]:
        with self._errors(index):
            return {
                hit["_id"]: hit["_source"].get(HASH_FIELD, "")
                for hit in helpers.scan(self.client, index=index, _source=[HASH_FIELD], size=2000)
            }

    def create(self, index: str, meta: IndexMeta) -> None:
        """Create ``INDEX_v1`` behind the alias ``INDEX``, so a later re-index can swap versions atomically."""
        body = {**index_body(meta, self.connection.engine), "aliases": {index: {}}}
        with self._errors():
            try:
                self.client.indices.create(index=f"{index}_v1", body=body)
            except os_errors.RequestError as error:
                if "knn" in str(error.info).lower() and error.error != "resource_already_exists_exception":
                    raise HybridError(
                        f"OpenSearch at {self.location} cannot create a k-NN index ({error.error}): install the "
                        "opensearch-knn plugin (bin/opensearch-plugin install opensearch-knn) and restart the node"
                    ) from None
                if error.error != "resource_already_exists_exception":
                    raise

    def writer(self, index: str, meta: IndexMeta) -> OpenSearchWriter:
        if not self.exists(index):
            self.create(index, meta)
        return OpenSearchWriter(self, index)

    def documents(self, index: str) -> Iterator[tuple[str, dict[str, Any]]]:
        with self._errors(index):
            for hit in helpers.scan(self.client, index=index, _source={"excludes": INTERNAL_FIELDS}, size=500):
                yield hit["_id"], hit["_source"]

    def versions(self, index: str) -> tuple[list[str], str]:
        """The ``INDEX_vN`` indexes, oldest first, and the one the alias ``INDEX`` points at."""
        with self._errors(index):
            current = list(self.client.indices.get_alias(name=index))
            versions = self._numbered_versions(index)
        if len(current) != 1:
            raise HybridError(f"{index!r} is not an alias of exactly one index: {sorted(current)}")
        return versions, current[0]

    def new_version(self, index: str, meta: IndexMeta) -> tuple[str, OpenSearchWriter]:
        existing, _ = self.versions(index)
        version = f"{index}_v{int(existing[-1].removeprefix(f'{index}_v')) + 1 if existing else 1}"
        with self._errors():
            self.client.indices.create(index=version, body=index_body(meta, self.connection.engine))
        return version, OpenSearchWriter(self, version)

    def switch(self, index: str, version: str) -> None:
        """Move the alias in one ``_aliases`` call: searches see the old version or the new, never neither."""
        _, current = self.versions(index)
        actions = [{"remove": {"index": current, "alias": index}}, {"add": {"index": version, "alias": index}}]
        with self._errors(index):
            self.client.indices.update_aliases(body={"actions": actions})

    def retrieve(self, index: str, query: LegQuery) -> dict[str, list[LegHit]]:
        """Both legs in one ``_msearch`` round trip, each with the filters applied before ranking."""
        filters = filter_clauses(query.filters)
        bodies: dict[str, dict[str, Any]] = {}
        if query.text is not None:
            bodies["bm25"] = {
                "size": query.k, "_source": False,
                "query": {"bool": {"must": {"match": {TEXT_FIELD: query.text}}, "filter": filters}},
            }
        if query.vector is not None:
            knn: dict[str, Any] = {"vector": query.vector.astype(np.float32).tolist(), "k": query.k}
            if filters:
                knn["filter"] = {"bool": {"filter": filters}}
            bodies["vector"] = {"size": query.k, "_source": False, "query": {"knn": {VECTOR_FIELD: knn}}}
        lines: list[dict[str, Any]] = []
        for body in bodies.values():
            lines += [{"index": index}, body]
        with self._errors(index):
            responses = self._with_retries(lambda: self.client.msearch(body=lines))["responses"]
        legs: dict[str, list[LegHit]] = {}
        for leg, response in zip(bodies, responses):
            if "error" in response:
                error = response["error"]
                if error.get("type") == "index_not_found_exception":
                    raise IndexNotFoundError(index, self.location)
                raise HybridError(f"OpenSearch {leg} query failed: {error.get('reason', error)}")
            convert = inner_product if leg == "vector" else float
            legs[leg] = [LegHit(h["_id"], convert(h["_score"])) for h in response["hits"]["hits"]]
        return legs

    def sources(self, index: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """One ``_mget`` for the documents of a page (not for every candidate of every leg)."""
        if not ids:
            return {}
        with self._errors(index):
            response = self._with_retries(lambda: self.client.mget(
                index=index, body={"ids": list(ids)}, params={"_source_excludes": ",".join(INTERNAL_FIELDS)}))
        return {doc["_id"]: doc["_source"] for doc in response["docs"] if doc.get("found")}


class OpenSearchWriter(IndexWriter):
    """Bulk-indexes batches in a background thread, so the next batch is embedded meanwhile.

    Documents the cluster rejects (mapping conflicts, wrong vector size) are collected with their
    reason and the rest go on; a cluster that stays unreachable through every retry stops the ingest.
    """

    def __init__(self, backend: OpenSearchBackend, index: str) -> None:
        self._backend, self._index = backend, index
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulk")
        self._pending: Future[list[WriteFailure]] | None = None
        self._failures: list[WriteFailure] = []

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._failures += pending.result()

    def write(self, documents: Sequence[StoredDocument]) -> None:
        self._wait()
        self._pending = self._pool.submit(self._send, list(documents))

    def _send(self, documents: list[StoredDocument]) -> list[WriteFailure]:
        actions = [
            {"_op_type": "index", "_index": self._index, "_id": d.id,
             "_source": {**d.fields, ID_FIELD: d.id, HASH_FIELD: d.hash, VECTOR_FIELD: d.vector.tolist()}}
            for d in documents
        ]

        def bulk() -> list[WriteFailure]:
            failures = []
            for ok, item in helpers.streaming_bulk(
                self._backend.client, actions, chunk_size=500, max_retries=self._backend.connection.retries,
                initial_backoff=1, max_backoff=30, raise_on_error=False,
            ):
                if not ok:
                    result = next(iter(item.values()))
                    error = result.get("error", {})
                    reason = error.get("reason", str(error)) if isinstance(error, dict) else str(error)
                    failures.append(WriteFailure(str(result.get("_id")), f"{result.get('status')}: {reason}"))
            return failures

        with self._backend._errors(self._index):
            return self._backend._with_retries(bulk)

    def commit(self) -> list[WriteFailure]:
        """Wait for the last batch, then refresh so that every written document is searchable."""
        self._wait()
        with self._backend._errors(self._index):
            self._backend._with_retries(lambda: self._backend.client.indices.refresh(index=self._index))
        return self._failures

    def abort(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

