"""The embedded backend: an index is a folder on disk, searched in process with no server.

BM25 uses bm25s with Lucene's scoring and an analyzer that mirrors OpenSearch's ``english`` analyzer
(lower-casing, Lucene's English stop words, Porter stemming), so local and cluster rankings agree.
Vectors are a float32 matrix searched by exact inner product.

Layout: ``DATA_DIR/NAME`` is a symbolic link to a version folder ``DATA_DIR/.NAME@<stamp>``. A write
builds a whole new version and then swaps the link in one atomic rename, so a failed ingest leaves
the previous version untouched and readers never see a half-written index.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import Stemmer

from ..errors import IndexNotFoundError
from .base import (
    Filters,
    IndexInfo,
    IndexMeta,
    IndexWriter,
    LegHit,
    LegQuery,
    StoredDocument,
    WriteFailure,
    document_text,
)

DEFAULT_DATA_DIR = Path.home() / ".hybrid" / "indexes"

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET, which OpenSearch's `english` analyzer uses.
LUCENE_ENGLISH_STOP_WORDS = (
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with"
).split()

META_FILE, DOCUMENTS_FILE, VECTORS_FILE, BM25_FOLDER = "meta.json", "documents.jsonl", "vectors.npy", "bm25"


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


@dataclass
class _Row:
    fields: dict[str, Any]
    hash: str
    vector: np.ndarray


class LocalIndex:
    """One loaded version of an index: documents, vectors and the BM25 matrix, all in memory."""

    def __init__(self, folder: Path, analyzer: EnglishAnalyzer) -> None:
        self.folder = folder
        self.meta = IndexMeta.from_dict(json.loads((folder / META_FILE).read_text()))
        records = [json.loads(line) for line in (folder / DOCUMENTS_FILE).read_text(encoding="utf-8").splitlines()]
        self.ids: list[str] = [record["id"] for record in records]
        self.hashes: list[str] = [record["hash"] for record in records]
        self.fields: list[dict[str, Any]] = [record["fields"] for record in records]
        self.vectors: np.ndarray = np.load(folder / VECTORS_FILE)
        self.bm25 = bm25s.BM25.load(folder / BM25_FOLDER, show_progress=False) if self.ids else None
        self.analyzer = analyzer

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
            return np.zeros(0, dtype=np.float32)
        terms = [term for term in self.analyzer.terms([text])[0] if term in self.bm25.vocab_dict]
        if not terms:
            return np.zeros(len(self.ids), dtype=np.float32)
        return self.bm25.get_scores(terms)

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


class LocalBackend:
    """Indexes as folders under ``data_dir``; each loaded index is cached until its version changes."""

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.data_dir = Path(data_dir or os.environ.get("HYBRID_DATA_DIR") or DEFAULT_DATA_DIR).expanduser()
        self.location = str(self.data_dir)
        self.analyzer = EnglishAnalyzer()
        self._loaded: dict[str, LocalIndex] = {}

    def _link(self, index: str) -> Path:
        if not index or index.startswith(".") or "/" in index or "@" in index:
            raise ValueError(f"invalid index name {index!r}: use letters, digits, '-' and '_'")
        return self.data_dir / index

    def names(self) -> list[str]:
        if not self.data_dir.is_dir():
            return []
        return sorted(p.name for p in self.data_dir.iterdir() if p.is_symlink() and not p.name.startswith("."))

    def exists(self, index: str) -> bool:
        return self._link(index).is_symlink()

    def load(self, index: str) -> LocalIndex:
        """The current version of ``index``, reloaded only when a write has swapped in a new one."""
        link = self._link(index)
        if not link.is_symlink():
            raise IndexNotFoundError(index, str(self.data_dir))
        folder = link.parent / os.readlink(link)
        cached = self._loaded.get(index)
        if cached is None or cached.folder != folder:
            cached = self._loaded[index] = LocalIndex(folder, self.analyzer)
        return cached

    def meta(self, index: str) -> IndexMeta:
        return self.load(index).meta

    def count(self, index: str) -> int:
        return len(self.load(index).ids)

    def info(self, index: str) -> IndexInfo:
        loaded = self.load(index)
        return IndexInfo(index, len(loaded.ids), loaded.meta, str(loaded.folder))

    def delete(self, index: str) -> None:
        """Delete the index with every version folder, the ones kept for rollback included."""
        versions, _ = self.versions(index)
        self._link(index).unlink()
        for version in versions:
            shutil.rmtree(self.data_dir / version, ignore_errors=True)
        self._loaded.pop(index, None)

    def hashes(self, index: str) -> dict[str, str]:
        loaded = self.load(index)
        return dict(zip(loaded.ids, loaded.hashes))

    def writer(self, index: str, meta: IndexMeta) -> LocalWriter:
        return LocalWriter(self, index, meta)

    def sources(self, index: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        loaded = self.load(index)
        return {doc_id: loaded.fields[loaded.rows[doc_id]] for doc_id in ids if doc_id in loaded.rows}

    def documents(self, index: str) -> Iterator[tuple[str, dict[str, Any]]]:
        loaded = self.load(index)
        return iter(zip(loaded.ids, loaded.fields))

    def new_version(self, index: str, meta: IndexMeta) -> tuple[str, LocalWriter]:
        writer = LocalWriter(self, index, meta, fresh=True)
        return writer.folder.name, writer

    def switch(self, index: str, version: str) -> None:
        folder = self.data_dir / version
        if not folder.is_dir() or not version.startswith(f".{index}@"):
            raise ValueError(f"{version!r} is not a version of index {index!r}")
        self.swap(index, folder)

    def versions(self, index: str) -> tuple[list[str], str]:
        current = self.load(index).folder.name
        return sorted(p.name for p in self.data_dir.glob(f".{index}@*") if p.is_dir()), current

    def retrieve(self, index: str, query: LegQuery) -> dict[str, list[LegHit]]:
        loaded = self.load(index)
        mask = loaded.mask(query.filters)
        legs: dict[str, list[LegHit]] = {}
        if query.text is not None:
            legs["bm25"] = loaded.top(loaded.bm25_scores(query.text), query.k, mask, positive_only=True)
        if query.vector is not None:
            legs["vector"] = loaded.top(loaded.vectors @ query.vector, query.k, mask, positive_only=False)
        return legs

    def swap(self, index: str, folder: Path) -> Path | None:
        """Point ``index`` at ``folder`` in one atomic rename; return the folder it pointed at before."""
        link = self._link(index)
        previous = link.parent / os.readlink(link) if link.is_symlink() else None
        staged = link.with_name(f".{index}.{uuid.uuid4().hex}.link")
        staged.symlink_to(folder.name)
        os.replace(staged, link)
        return previous


class LocalWriter(IndexWriter):
    """Collects documents in memory, then writes a complete new version folder on commit.

    A plain writer starts from the current version, swaps the new one in and removes the old; a
    ``fresh`` one (a re-index) starts empty and leaves switching, and the old version, to the caller.
    """

    def __init__(self, backend: LocalBackend, index: str, meta: IndexMeta, fresh: bool = False) -> None:
        self._backend, self._index, self._meta, self._fresh = backend, index, meta, fresh
        stamp = time.strftime("%Y%m%dT%H%M%S")
        self.folder = backend.data_dir / f".{index}@{stamp}-{uuid.uuid4().hex[:8]}"
        self._rows: dict[str, _Row] = {}
        if backend.exists(index) and not fresh:
            current = backend.load(index)
            rows = zip(current.ids, current.fields, current.hashes, current.vectors)
            self._rows = {doc_id: _Row(fields, doc_hash, vector) for doc_id, fields, doc_hash, vector in rows}

    def write(self, documents: Sequence[StoredDocument]) -> None:
        for document in documents:
            if document.vector.shape != (self._meta.dimension,):
                raise ValueError(f"document {document.id!r}: vector shape {document.vector.shape} is not "
                                 f"({self._meta.dimension},)")
            self._rows[document.id] = _Row(document.fields, document.hash, document.vector)

    def commit(self) -> list[WriteFailure]:
        self.folder.mkdir(parents=True)
        try:
            self._write_version(self.folder)
            previous = None if self._fresh else self._backend.swap(self._index, self.folder)
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        if previous is not None and previous != self.folder:
            shutil.rmtree(previous, ignore_errors=True)
        return []

    def _write_version(self, folder: Path) -> None:
        ids = list(self._rows)
        rows = [self._rows[doc_id] for doc_id in ids]
        (folder / META_FILE).write_text(json.dumps(self._meta.to_dict(), indent=2))
        with (folder / DOCUMENTS_FILE).open("w", encoding="utf-8") as out:
            for doc_id, row in zip(ids, rows):
                out.write(json.dumps({"id": doc_id, "hash": row.hash, "fields": row.fields}, ensure_ascii=False) + "\n")
        vectors = np.stack([row.vector for row in rows]) if rows else np.zeros((0, self._meta.dimension))
        np.save(folder / VECTORS_FILE, vectors.astype(np.float32))
        if rows:
            texts = [document_text(row.fields, self._meta.text_fields) for row in rows]
            bm25 = bm25s.BM25(method="lucene")
            bm25.index(self._backend.analyzer.terms(texts), show_progress=False)
            bm25.save(folder / BM25_FOLDER, show_progress=False)

    def abort(self) -> None:
        self._rows.clear()
