"""The one small interface every index backend implements.

The CLI, the searcher, ingestion and evaluation talk only to this protocol, so a local folder and an
OpenSearch cluster are interchangeable under them.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any, NamedTuple, Protocol

import numpy as np

from ..chunking import Chunking
from ..documents import DEFAULT_TEXT_FIELDS
from ..errors import HybridError
from ..version import __version__

SPACE_TYPE = "innerproduct"
LEGS = ("bm25", "vector")
MAX_INDEX_NAME_BYTES = 200
"""OpenSearch allows 255 bytes; the rest is room for the ``_vN`` of numbered versions."""
INDEX_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
VERSION_NAME = re.compile(r"(?P<index>.+)_v(?P<number>\d+)")
"""A numbered version of an index on a cluster: ``NAME_v3``."""

Filters = Mapping[str, str | Sequence[str]]
"""Metadata filters: field -> value (or any of several values); every field must match."""


def check_index_name(name: str) -> None:
    """Refuse, before any request or file operation, a name that is not one index on both backends: ASCII
    lower-case letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit (inside
    OpenSearch's rules; no wildcard, comma, path separator, glob character, or Unicode that a file
    system could fold into another name), and no ``_vN`` ending (hybrid's version names)."""
    problem = None
    if not name:
        problem = "it is empty"
    elif bad := sorted(set(name) - INDEX_NAME_CHARACTERS):
        problem = f"it contains {', '.join(repr(c) for c in bad)}"
    elif name[0] in "._-":
        problem = f"it starts with {name[0]!r}"
    elif len(name) > MAX_INDEX_NAME_BYTES:
        problem = f"it is {len(name)} bytes long (at most {MAX_INDEX_NAME_BYTES})"
    elif re.search(r"_v\d+$", name):
        problem = "it ends like one of hybrid's version names (_v1, _v2, ...)"
    if problem:
        raise HybridError(f"invalid index name {name!r}: {problem}; use lower-case letters, digits, '.', '_' "
                          "and '-', starting with a letter or digit")


@dataclass(frozen=True)
class IndexMeta:
    """What an index was built with; recorded in the index so queries use the same model."""

    model: str
    dimension: int
    text_fields: tuple[str, ...] = DEFAULT_TEXT_FIELDS
    space_type: str = SPACE_TYPE
    version: str = __version__
    precision: str = "fp32"
    """How documents were encoded (fp32, or int8 by the quantised ONNX export); queries must match."""
    chunking: str = ""
    """``TOKENS/STRIDE`` when long documents are embedded as windows (see ``chunking``), else empty."""
    tuned: Mapping[str, Any] | None = field(default=None, hash=False)
    """The fusion settings ``hybrid tune --apply`` chose for this index (``settings``) and what they were
    chosen on (``chosen_on``: queries, judgments, metric, held-out scores, the t-test's p), as JSON. Kept
    across ingests and carried by a re-index; searches use them unless told otherwise."""
    server_model: str = ""
    """The id of the model ``hybrid model deploy`` deployed in the cluster that embeds as ``model`` does
    (ML Commons): text-only (``neural``) queries use it. Kept across ingests, and by a re-index that keeps
    the model."""

    @property
    def chunks(self) -> Chunking | None:
        return Chunking.parse(self.chunking) if self.chunking else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "text_fields": list(self.text_fields),
                "tuned": dict(self.tuned) if self.tuned else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IndexMeta:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**{**known, "text_fields": tuple(known.get("text_fields", DEFAULT_TEXT_FIELDS))})


@dataclass(frozen=True)
class Version:
    """One version of an index: its name, the number the store gave it, the version it replaced on a
    re-index (what ``rollback`` goes back to), and whether it serves now."""

    name: str
    number: int
    previous: str | None
    serving: bool


@dataclass(frozen=True)
class IndexInfo:
    name: str
    count: int
    meta: IndexMeta
    location: str
    versions: list[Version] = field(default_factory=list)
    layout: dict[str, int] = field(default_factory=dict)
    """Where the backend spreads the index: shards and replicas on a cluster, nothing embedded."""


@dataclass(frozen=True)
class Snapshot:
    """The version an index serves at one moment and what it was built with. A searcher pins its
    query encoder to it, so a query vector only ever meets document vectors of the same model."""

    index: str
    version: str
    meta: IndexMeta


@dataclass(frozen=True)
class ToEmbed:
    """A document's texts (its windows in a chunked index, else its one text), for the store to embed with
    its deployed model ``model_id`` as it writes the document, instead of vectors hybrid made."""

    texts: list[str]
    model_id: str


@dataclass(frozen=True)
class StoredDocument:
    """A document as written to an index: fields, content hash and its vectors, one row per window of a
    chunked index (one row for a document that fits the model, and for every document otherwise), or the
    texts the store embeds (``ToEmbed``)."""

    id: str
    fields: dict[str, Any]
    hash: str
    vectors: np.ndarray | ToEmbed


class LegHit(NamedTuple):
    """One hit of one retrieval leg: a document id and the leg's raw score. A named tuple, as fusion takes
    ``(id, score)`` pairs: a leg's hundreds of candidates are made per query, and a frozen dataclass took
    three times as long to build, then another copy to fuse."""

    id: str
    score: float


@dataclass(frozen=True)
class ServerEmbedded:
    """A vector leg's query given as text, which the cluster embeds with its deployed model ``model_id``
    (``hybrid model deploy``) instead of hybrid embedding it."""

    text: str
    model_id: str


@dataclass(frozen=True)
class LegQuery:
    """What to retrieve: a text for the BM25 leg, a vector (or a text the cluster embeds) for the k-NN leg
    (None skips a leg)."""

    text: str | None
    vector: np.ndarray | ServerEmbedded | None
    k: int
    filters: Filters = field(default_factory=dict)
    windows: bool = False
    """The target is chunked (``IndexMeta.chunking``): a document scores by its best window."""


@dataclass
class WriteFailure:
    """A document the backend refused, with the reason it gave."""

    id: str
    reason: str
    status: int | None = None
    """The HTTP status the cluster gave this document, where it gave one."""


class IndexWriter(ABC):
    """Receives embedded documents for one index; used as a context manager.

    Nothing is searchable before ``commit``. Leaving the ``with`` block on an error calls ``abort``
    (the local backend then leaves the index exactly as it was); leaving it normally calls ``close``.
    """

    @property
    def retried(self) -> list[str]:
        """What had to be sent again (to a cluster that lost a node) and why; nothing, writing locally."""
        return []

    @abstractmethod
    def write(self, documents: Sequence[StoredDocument]) -> None: ...

    @abstractmethod
    def commit(self) -> list[WriteFailure]:
        """Make everything written searchable; return the documents the index refused."""

    @abstractmethod
    def abort(self) -> None: ...

    def close(self) -> None:  # noqa: B027 - most writers hold nothing to release
        """Release what the writer holds after a normal exit."""

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if error is not None:
            self.abort()
        else:
            self.close()


class Backend(Protocol):
    """An index store: local folder or OpenSearch cluster.

    Methods that read (``retrieve``, ``sources``) take a *target*: an index name, or a version name
    from ``snapshot``, which keeps answering from that version even after the index moves on."""

    location: str
    snapshot_ttl_s: float
    """How long a searcher may keep using a snapshot before taking a new one."""
    max_depth: int | None
    """The most hits one leg can return (None: no limit)."""
    embeds_texts: bool
    """Whether the store can embed texts itself, with a model ``hybrid model deploy`` put there: a vector leg
    given as text (``ServerEmbedded``), documents written as texts (``ToEmbed``)."""
    def names(self) -> list[str]: ...

    def exists(self, index: str) -> bool: ...

    def meta(self, index: str) -> IndexMeta: ...

    def count(self, index: str) -> int: ...

    def info(self, index: str) -> IndexInfo: ...

    def delete(self, index: str) -> None: ...

    def lock(self, index: str) -> AbstractContextManager[None]:
        """Held by a writer from reading the current version to the swap, so writers take turns."""
        ...

    def snapshot(self, index: str) -> Snapshot: ...

    def hashes(self, index: str) -> dict[str, str]:
        """Content hash of every stored document, so unchanged documents need no new embedding."""
        ...

    def writer(self, index: str, meta: IndexMeta) -> IndexWriter:
        """Open a writer, creating the index if it does not exist."""
        ...

    def retrieve(self, target: str, query: LegQuery) -> dict[str, list[LegHit]]:
        """Run the requested legs, best first, keyed "bm25" and "vector" (ids and scores only: fetching
        every candidate's fields would cost more than the search itself)."""
        ...

    def sources(self, target: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The fields of the given documents (those still in the index)."""
        ...

    def server_fusion(self, target: str) -> str | None:
        """Why searches of ``target`` cannot fuse on the backend's side (OpenSearch's hybrid query:
        ``hybrid.server_fusion``), said once before fusing client-side; None where they may try."""
        ...

    def documents(self, index: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every stored document's id and fields (to re-embed them with another model)."""
        ...

    def new_version(self, index: str, meta: IndexMeta) -> tuple[str, IndexWriter]:
        """An empty new version of ``index`` that searches do not see until ``switch``."""
        ...

    def record_meta(self, index: str, meta: IndexMeta) -> None:
        """Record ``meta`` in the serving version of ``index`` (what is decided after it was built: its tuned
        fusion settings), leaving every document as it is. Call it holding the lock."""
        ...

    def switch(self, index: str, version: str) -> None:
        """Point ``index`` at ``version`` atomically; queries keep working throughout."""
        ...

    def versions(self, index: str) -> list[Version]:
        """All versions of ``index``, oldest first."""
        ...

    def close(self) -> None:
        """Release what the backend holds open (a cluster client's connections); it is not used after."""
        ...
