"""The embedded backend: an index is a folder on disk, searched in process with no server.

BM25 uses bm25s with Lucene's scoring and an analyzer that mirrors OpenSearch's ``english`` analyzer
(lower-casing, Lucene's English stop words, Porter stemming), so local and cluster rankings agree.
Vectors are a float32 matrix searched by exact inner product.

Layout under ``DATA_DIR``:

- ``NAME``: a symbolic link to the version that serves, swapped by one atomic rename;
- ``.NAME@000007-1a2b3c4d``: a complete version, numbered by the store (never by a clock), with
  ``version.json`` naming the version it replaced on a re-index (what ``rollback`` returns to);
- ``.NAME@tmp-…``: a version being written; it gets its final name only once every file is flushed to
  disk, so a killed write never leaves anything that looks like a version, and the next write removes it
  (``.NAME@link-…``, a link staged for the swap, likewise);
- ``.NAME.lock``: held by every writer from reading the current version to the swap, so that writers
  of one index (in any process) take turns and none loses another's documents.

Readers take no lock: they follow the link to a complete version.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import Stemmer
from filelock import FileLock, Timeout

from ..documents import document_text
from ..errors import DamagedIndexError, HybridError, IndexNotFoundError, VersionGoneError, require_extra
from .base import (
    Filters,
    IndexInfo,
    IndexMeta,
    IndexWriter,
    LegHit,
    LegQuery,
    Snapshot,
    StoredDocument,
    Version,
    WriteFailure,
    check_index_name,
)

DEFAULT_DATA_DIR = Path.home() / ".hybrid" / "indexes"

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET, which OpenSearch's `english` analyzer uses.
LUCENE_ENGLISH_STOP_WORDS = (
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with"
).split()

META_FILE, VERSION_FILE, DOCUMENTS_FILE, VECTORS_FILE, OWNERS_FILE, BM25_FOLDER = (
    "meta.json", "version.json", "documents.jsonl", "vectors.npy", "owners.npy", "bm25")
"""``owners.npy`` (chunked indexes only): the document row of each row of ``vectors.npy``, ascending."""
VERSION_SUFFIX = re.compile(r"(?:(?P<number>\d{6,})|(?P<stamp>\d{8}T\d{6}))-[0-9a-f]{8}")
"""``000007-1a2b3c4d``; or ``20261130T150102-1a2b3c4d``, a version written before versions were numbered
(number 0, ordered by name, each replacing the one before it), kept so that an upgrade loses nothing."""
LOAD_ATTEMPTS = 5
"""Times a reader follows the link again when a writer removed the version it was about to load."""
log = logging.getLogger("hybrid")


class EnglishAnalyzer:
    """Turns text into BM25 terms the way OpenSearch's ``english`` analyzer does, near enough:
    word characters, lower case, Lucene's English stop words, Porter stems. Stateless, so a
    long-running searcher's memory does not grow with the queries it sees."""

    _word = re.compile(r"\w+(?:['’]\w+)*")
    _possessive = re.compile(r"['’]s$")
    _stop_words = frozenset(LUCENE_ENGLISH_STOP_WORDS)

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("porter")

    def terms(self, texts: Sequence[str]) -> list[list[str]]:
        return [
            self._stemmer.stemWords([w for w in words if w not in self._stop_words])
            for words in ([self._possessive.sub("", w) for w in self._word.findall(t.lower())] for t in texts)
        ]


class Bm25Matrix:
    """The BM25 index bm25s wrote (``bm25s.BM25.save``), read back without importing bm25s.

    bm25s scores eagerly: the saved term x document matrix (CSC) already holds every term's BM25 score
    in every document, so a query's scores are the sum of its terms' columns, which is all that
    ``BM25.get_scores`` does. Reading the arrays directly keeps bm25s (and the scipy and numba it
    imports, ~0.5-1 s) off the query path; tests check the scores equal bm25s's own."""

    def __init__(self, folder: Path) -> None:
        params = json.loads((folder / "params.index.json").read_text())
        if params.get("method") != "lucene":
            raise HybridError(f"{folder}: a BM25 index of method {params.get('method')!r}; expected lucene")
        self.num_docs = int(params["num_docs"])
        self.vocab: dict[str, int] = json.loads((folder / "vocab.index.json").read_text())
        self.data, self.indices, self.indptr = (np.load(folder / f"{name}.csc.index.npy", allow_pickle=False)
                                                for name in ("data", "indices", "indptr"))

    def scores(self, terms: Sequence[str]) -> np.ndarray:
        """Every document's BM25 score for ``terms`` (a repeated term counts again, as in bm25s)."""
        scores = np.zeros(self.num_docs, dtype=np.float32)
        for term in terms:
            if (column := self.vocab.get(term)) is not None:
                start, end = self.indptr[column], self.indptr[column + 1]
                scores[self.indices[start:end]] += self.data[start:end]  # a column names each document once
        return scores

    @staticmethod
    def write(terms: list[list[str]], folder: Path) -> None:
        require_extra("ingest", "bm25s")  # only writers need it
        import bm25s

        bm25 = bm25s.BM25(method="lucene")
        bm25.index(terms, show_progress=False)
        bm25.save(folder, show_progress=False)


@dataclass
class _Row:
    fields: dict[str, Any]
    hash: str
    vectors: np.ndarray


class LocalIndex:
    """One loaded version of an index: documents, vectors and the BM25 matrix, all in memory, checked to
    agree with each other (a version that does not is refused, never searched)."""

    def __init__(self, folder: Path, analyzer: EnglishAnalyzer) -> None:
        self.folder = folder
        self.meta = IndexMeta.from_dict(json.loads((folder / META_FILE).read_text()))
        self.version = _read_version_file(folder)
        with (folder / DOCUMENTS_FILE).open("rb") as lines:
            records = [json.loads(line) for line in lines]
        self.ids: list[str] = [record["id"] for record in records]
        self.hashes: list[str] = [record["hash"] for record in records]
        self.fields: list[dict[str, Any]] = [record["fields"] for record in records]
        self.vectors: np.ndarray = np.load(folder / VECTORS_FILE)
        self.owners: np.ndarray | None = np.load(folder / OWNERS_FILE) if self.meta.chunking else None
        # Whether there is a BM25 index comes from version.json, not from looking: a folder a writer is
        # removing meanwhile must fail to load (and be loaded again), not look like a damaged version.
        has_bm25 = self.version.get("bm25", bool(self.ids))
        self.bm25 = Bm25Matrix(folder / BM25_FOLDER) if has_bm25 else None
        self.analyzer = analyzer
        self._check()

    def _check(self) -> None:
        count = len(self.ids)
        problems = []
        if len(set(self.ids)) != count:
            problems.append("duplicate document ids")
        rows = count if self.owners is None else len(self.owners)
        if self.vectors.ndim != 2 or self.vectors.shape != (rows, self.meta.dimension):
            problems.append(f"vectors of shape {self.vectors.shape} for {rows} rows of dimension "
                            f"{self.meta.dimension}")
        if self.owners is not None and not np.array_equal(np.unique(self.owners), np.arange(count)):
            problems.append("windows that do not belong to its documents")
        if self.owners is not None and np.any(np.diff(self.owners) < 0):
            problems.append("windows out of order")
        if self.bm25 is not None and self.bm25.num_docs != count:
            problems.append(f"a BM25 index of {self.bm25.num_docs} documents for {count}")
        if problems:
            raise DamagedIndexError(f"index version {self.folder} is damaged ({'; '.join(problems)})")

    def text(self, row: int) -> str:
        """The text row ``row`` was embedded from."""
        return document_text(self.fields[row], self.meta.text_fields)

    @cached_property
    def _postings(self) -> dict[str, dict[str, np.ndarray]]:
        """field -> value -> rows holding it, built on the first filtered query."""
        postings: dict[str, dict[str, list[int]]] = {}
        for row, fields in enumerate(self.fields):
            for name, value in _flatten(fields):
                if name in self.meta.text_fields:
                    continue
                for item in value if isinstance(value, list) else [value]:
                    postings.setdefault(name, {}).setdefault(_filter_key(item), []).append(row)
        return {name: {v: np.asarray(rows) for v, rows in values.items()} for name, values in postings.items()}

    def mask(self, filters: Filters) -> np.ndarray | None:
        """Rows that pass every filter (None when there are no filters)."""
        if not filters:
            return None
        keep = np.ones(len(self.ids), dtype=bool)
        for name, wanted in filters.items():
            values = [wanted] if isinstance(wanted, str) else list(wanted)
            field_rows = np.zeros(len(self.ids), dtype=bool)
            for value in values:
                field_rows[self._postings.get(name, {}).get(_filter_key(value), [])] = True
            keep &= field_rows
        return keep

    def bm25_scores(self, text: str) -> np.ndarray:
        if self.bm25 is None:
            return np.zeros(len(self.ids), dtype=np.float32)
        return self.bm25.scores(self.analyzer.terms([text])[0])

    @cached_property
    def _first_windows(self) -> np.ndarray | None:
        """Each document's first row in ``vectors`` (chunked indexes)."""
        return None if self.owners is None else np.searchsorted(self.owners, np.arange(len(self.ids)))

    def vector_scores(self, vector: np.ndarray) -> np.ndarray:
        """Each document's inner product with ``vector``: its best window's in a chunked index."""
        scores = self.vectors @ vector
        starts = self._first_windows
        if starts is None or not len(scores):
            return scores
        return np.maximum.reduceat(scores, starts)

    @cached_property
    def lead_vectors(self) -> np.ndarray:
        """One vector per document row: its first window's in a chunked index (its start and title)."""
        starts = self._first_windows
        return self.vectors if starts is None else self.vectors[starts]

    def document_vectors(self) -> list[np.ndarray]:
        """Each document's rows of ``vectors`` (one row unless chunked)."""
        starts = self._first_windows
        if starts is None:
            return [row[np.newaxis] for row in self.vectors]
        return np.split(self.vectors, starts[1:])

    def top(self, scores: np.ndarray, k: int, mask: np.ndarray | None, positive_only: bool) -> list[LegHit]:
        """The k best rows by score among those the mask keeps; ties go to the earlier row."""
        candidates = np.arange(len(scores)) if mask is None else np.flatnonzero(mask)
        if positive_only:
            candidates = candidates[scores[candidates] > 0]
        if len(candidates) > k:
            candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
        best = candidates[np.lexsort((candidates, -scores[candidates]))]
        return [LegHit(self.ids[row], float(scores[row])) for row in best]

    @cached_property
    def rows(self) -> dict[str, int]:
        return {doc_id: row for row, doc_id in enumerate(self.ids)}


def _read_version_file(folder: Path) -> dict[str, Any]:
    path = folder / VERSION_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _flatten(fields: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested objects as dotted names (``metadata.author``), as OpenSearch addresses them."""
    for name, value in fields.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def _filter_key(value: Any) -> str:
    """Filter values compare as text; JSON spelling for booleans so ``published=true`` matches True."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _remove(entry: Path) -> None:
    """Remove a version folder or a staged link."""
    if entry.is_symlink() or entry.is_file():
        entry.unlink(missing_ok=True)
    else:
        shutil.rmtree(entry, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flush a file or a folder's entries to disk: a version is announced only once it is durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class LocalBackend:
    """Indexes as folders under ``data_dir``; the serving version of each is cached until it changes."""

    snapshot_ttl_s = 0.0
    """Following the link costs microseconds, so a searcher looks at it on every query."""
    max_depth: int | None = None
    embeds_texts = False

    def server_fusion(self, target: str) -> str:
        return "an embedded index has no server to fuse on"

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.data_dir = Path(data_dir or os.environ.get("HYBRID_DATA_DIR") or DEFAULT_DATA_DIR).expanduser()
        self.location = str(self.data_dir)
        self.analyzer = EnglishAnalyzer()
        self._loaded: dict[str, LocalIndex] = {}
        self._locks: dict[str, FileLock] = {}

    def _link(self, index: str) -> Path:
        check_index_name(index)
        return self.data_dir / index

    def names(self) -> list[str]:
        if not self.data_dir.is_dir():
            return []
        return sorted(p.name for p in self.data_dir.iterdir() if p.is_symlink() and not p.name.startswith("."))

    def exists(self, index: str) -> bool:
        return self._link(index).is_symlink()

    @contextmanager
    def lock(self, index: str) -> Iterator[None]:
        """Hold the index's writer lock (waiting, and saying so, while another process holds it)."""
        self._link(index)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock = self._locks.setdefault(index, FileLock(self.data_dir / f".{index}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.warning("index %r is being written by another process; waiting for it to finish", index)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def snapshot(self, index: str) -> Snapshot:
        loaded = self.load(index)
        return Snapshot(index, loaded.folder.name, loaded.meta)

    def load(self, target: str) -> LocalIndex:
        """A loaded version: ``target`` is an index (its serving version) or a version's name.

        A writer may remove the version a reader is about to load; then the link is followed again."""
        for _ in range(LOAD_ATTEMPTS):
            folder = self._folder(target)
            index = target[1:].partition("@")[0] if target.startswith(".") else target
            cached = self._loaded.get(index)
            if cached is not None and cached.folder == folder:
                return cached
            try:
                loaded = LocalIndex(folder, self.analyzer)
            except (FileNotFoundError, HybridError) as error:
                if target.startswith("."):
                    raise VersionGoneError(f"index version {folder} is gone") from None
                if self._folder(target) != folder:  # a writer swapped versions meanwhile: follow the link
                    continue
                if isinstance(error, HybridError):
                    raise
                raise DamagedIndexError(f"index version {folder} is incomplete: {error.filename} is missing") from None
            self._loaded[index] = loaded
            return loaded
        raise HybridError(f"index {target!r} changed {LOAD_ATTEMPTS} times while being loaded; try again")

    def _folder(self, target: str) -> Path:
        if target.startswith("."):
            return self.data_dir / target
        link = self._link(target)
        try:
            return link.parent / os.readlink(link)
        except FileNotFoundError:
            raise IndexNotFoundError(target, str(self.data_dir)) from None

    def meta(self, index: str) -> IndexMeta:
        return self.load(index).meta

    def count(self, index: str) -> int:
        return len(self.load(index).ids)

    def info(self, index: str) -> IndexInfo:
        loaded = self.load(index)
        return IndexInfo(index, len(loaded.ids), loaded.meta, str(loaded.folder), self.versions(index))

    def delete(self, index: str) -> None:
        """Delete the index with every version folder, the ones kept for rollback included."""
        with self.lock(index):
            link = self._link(index)
            if not link.is_symlink():
                raise IndexNotFoundError(index, str(self.data_dir))
            link.unlink()
            for entry in self._own_entries(index):
                _remove(entry)
            self._loaded.pop(index, None)

    def _own_entries(self, index: str) -> list[Path]:
        """Every folder and staged link of ``index`` (exact name match: never another index's)."""
        if not self.data_dir.is_dir():
            return []
        return [p for p in self.data_dir.iterdir() if p.name.startswith(f".{index}@")]

    def _version_folders(self, index: str) -> list[tuple[int, Path]]:
        """Complete versions of ``index``, oldest first."""
        prefix = f".{index}@"
        found = []
        for path in self._own_entries(index):
            if match := VERSION_SUFFIX.fullmatch(path.name.removeprefix(prefix)):
                found.append((int(match.group("number") or 0), path))
        return sorted(found)

    def _previous(self, folder: Path) -> str | None:
        """The version ``folder`` replaced on a re-index; for an unnumbered (older) version, the one before it."""
        recorded = _read_version_file(folder)
        if recorded:
            return recorded.get("previous")
        index = folder.name[1:].partition("@")[0]
        older = [path.name for number, path in self._version_folders(index) if number == 0 and path.name < folder.name]
        return older[-1] if older else None

    def versions(self, index: str) -> list[Version]:
        serving = self._folder(index).name
        return [Version(path.name, number, self._previous(path), path.name == serving)
                for number, path in self._version_folders(index)]

    def collect_garbage(self, index: str) -> None:
        """Remove what no reader or rollback can reach: folders of killed writes, staged links, and
        versions outside the serving one's chain of previous versions. Call it holding the lock."""
        keep: set[str] = set()
        if self.exists(index):
            name: str | None = self._folder(index).name
            while name and name not in keep:
                keep.add(name)
                name = self._previous(self.data_dir / name)
        for entry in self._own_entries(index):
            if entry.name not in keep:
                _remove(entry)

    def hashes(self, index: str) -> dict[str, str]:
        loaded = self.load(index)
        return dict(zip(loaded.ids, loaded.hashes))

    def writer(self, index: str, meta: IndexMeta) -> LocalWriter:
        return LocalWriter(self, index, meta)

    def sources(self, target: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Copies: a caller that edits a hit's source must not change the loaded index (or the next write)."""
        loaded = self.load(target)
        return {doc_id: copy.deepcopy(loaded.fields[loaded.rows[doc_id]]) for doc_id in ids if doc_id in loaded.rows}

    def documents(self, index: str) -> Iterator[tuple[str, dict[str, Any]]]:
        loaded = self.load(index)
        return iter(zip(loaded.ids, loaded.fields))

    def new_version(self, index: str, meta: IndexMeta) -> tuple[str, LocalWriter]:
        writer = LocalWriter(self, index, meta, fresh=True)
        return writer.final.name, writer

    def record_meta(self, index: str, meta: IndexMeta) -> None:
        """A new version with the same documents and ``meta``: versions are never changed in place (a
        reader may have one loaded), and the swap is as atomic and durable as any write's."""
        with self.writer(index, meta) as writer:
            writer.commit()

    def close(self) -> None:
        """Nothing to release: every read opens and closes its own files."""

    def switch(self, index: str, version: str) -> None:
        if version not in {v.name for v in self.versions(index)}:
            raise HybridError(f"{version!r} is not a version of index {index!r}")
        self.swap(index, self.data_dir / version)  # what it leaves unreachable goes at the next write

    def retrieve(self, target: str, query: LegQuery) -> dict[str, list[LegHit]]:
        loaded = self.load(target)
        mask = loaded.mask(query.filters)
        legs: dict[str, list[LegHit]] = {}
        if query.text is not None:
            legs["bm25"] = loaded.top(loaded.bm25_scores(query.text), query.k, mask, positive_only=True)
        if query.vector is not None:
            assert isinstance(query.vector, np.ndarray)  # a searcher never asks this folder to embed
            legs["vector"] = loaded.top(loaded.vector_scores(query.vector), query.k, mask, positive_only=False)
        return legs

    def serves(self, index: str, folder: Path) -> bool:
        return self.exists(index) and self._folder(index) == folder

    def next_number(self, index: str) -> int:
        folders = self._version_folders(index)
        return folders[-1][0] + 1 if folders else 1

    def swap(self, index: str, folder: Path) -> None:
        """Point ``index`` at ``folder`` in one atomic rename, durable once this returns."""
        link = self._link(index)
        staged = link.with_name(f".{index}@link-{uuid.uuid4().hex}")
        staged.symlink_to(folder.name)
        os.replace(staged, link)
        _fsync(self.data_dir)


class LocalWriter(IndexWriter):
    """Collects documents in memory, then writes a complete new version folder on commit.

    The caller holds the index's lock from before the writer is made (it reads the serving version)
    until after the commit. A plain writer starts from the serving version and swaps the new one in
    (the one it replaces is removed); a ``fresh`` one (a re-index) starts empty, records the serving
    version as its previous one, and leaves switching to the caller.
    """

    def __init__(self, backend: LocalBackend, index: str, meta: IndexMeta, fresh: bool = False) -> None:
        self._backend, self._index, self._meta, self._fresh = backend, index, meta, fresh
        number = backend.next_number(index)  # before collecting garbage, which may remove the newest one
        backend.collect_garbage(index)
        self.final = backend.data_dir / f".{index}@{number:06d}-{uuid.uuid4().hex[:8]}"
        self._version: dict[str, Any] = {"number": number, "previous": None}
        self._rows: dict[str, _Row] = {}
        if backend.exists(index):
            current = backend.load(index)
            self._version["previous"] = current.folder.name if fresh else backend._previous(current.folder)
            if not fresh:
                rows = zip(current.ids, current.fields, current.hashes, current.document_vectors())
                self._rows = {doc_id: _Row(fields, doc_hash, vectors) for doc_id, fields, doc_hash, vectors in rows}

    def write(self, documents: Sequence[StoredDocument]) -> None:
        most = None if self._meta.chunking else 1
        for document in documents:
            assert isinstance(document.vectors, np.ndarray)  # ingest never asks this folder to embed
            shape = document.vectors.shape
            if len(shape) != 2 or shape[1] != self._meta.dimension or not 1 <= shape[0] <= (most or shape[0]):
                raise ValueError(f"document {document.id!r}: vectors of shape {shape}, not "
                                 f"({most or 'windows'}, {self._meta.dimension})")
            self._rows[document.id] = _Row(document.fields, document.hash, document.vectors)

    def commit(self) -> list[WriteFailure]:
        """Write the version under a temporary name, flush it, give it its final name, then swap."""
        data_dir = self._backend.data_dir
        staging = data_dir / f".{self._index}@tmp-{uuid.uuid4().hex}"
        try:
            staging.mkdir(parents=True)
            self._write_version(staging)
            os.rename(staging, self.final)
            _fsync(data_dir)
            if not self._fresh:
                self._backend.swap(self._index, self.final)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            if not self._backend.serves(self._index, self.final):
                shutil.rmtree(self.final, ignore_errors=True)
            reason = error.strerror or f"{error}: is the disk full?"  # numpy reports a short write without errno
            raise HybridError(f"cannot write index {self._index!r} in {data_dir} ({reason}); nothing was "
                              "changed: it still serves its previous version") from None
        if not self._fresh:
            self._backend.collect_garbage(self._index)
        return []

    def _write_version(self, folder: Path) -> None:
        ids = list(self._rows)
        rows = [self._rows[doc_id] for doc_id in ids]
        terms = self._backend.analyzer.terms([document_text(row.fields, self._meta.text_fields) for row in rows])
        has_bm25 = any(terms)  # bm25s cannot index a corpus without a single term
        (folder / META_FILE).write_text(json.dumps(self._meta.to_dict(), indent=2))
        (folder / VERSION_FILE).write_text(json.dumps({**self._version, "bm25": has_bm25}))
        with (folder / DOCUMENTS_FILE).open("w", encoding="ascii") as out:
            for doc_id, row in zip(ids, rows):  # ASCII JSON: any text, lone surrogates too, stays one line
                out.write(json.dumps({"id": doc_id, "hash": row.hash, "fields": row.fields}) + "\n")
        vectors = np.concatenate([row.vectors for row in rows]) if rows else np.zeros((0, self._meta.dimension))
        np.save(folder / VECTORS_FILE, vectors.astype(np.float32))
        if self._meta.chunking:
            np.save(folder / OWNERS_FILE, np.repeat(np.arange(len(rows), dtype=np.int32),
                                                    [len(row.vectors) for row in rows]))
        if has_bm25:
            Bm25Matrix.write(terms, folder / BM25_FOLDER)
        for path in [*folder.rglob("*"), folder]:  # files, and the folders' entries
            _fsync(path)

    def abort(self) -> None:
        """Forget what was written; a re-index's new version, even if committed, is never switched to."""
        self._rows.clear()
        if self._fresh:
            shutil.rmtree(self.final, ignore_errors=True)
