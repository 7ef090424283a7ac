"""Read documents from JSONL, CSV or a folder of .txt/.md files, validating them before anything is written.

A whole source is read and checked up front: a bad line anywhere stops ingestion before the index is
touched, with an error that names the file, the line and the field.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends.base import document_text
from .embed import content_hash
from .errors import SourceError

DEFAULT_TEXT_FIELDS = ("title", "text")
ID_FIELD_CANDIDATES = ("_id", "id")
FOLDER_SUFFIXES = (".txt", ".md")


@dataclass(frozen=True)
class Document:
    """One document: its id, all its fields (text and metadata), and which fields hold its text."""

    id: str
    fields: dict[str, Any]
    text_fields: tuple[str, ...] = DEFAULT_TEXT_FIELDS
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", content_hash({"text_fields": self.text_fields, "fields": self.fields}))

    @property
    def text(self) -> str:
        return document_text(self.fields, self.text_fields)


def read_documents(
    source: str | Path,
    id_field: str | None = None,
    text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS,
) -> list[Document]:
    """Read every document of ``source``; raise SourceError on the first bad record or a duplicate id.

    ``id_field`` defaults to ``_id`` (BEIR) or else ``id``. Every record must carry each text field as a
    string; an empty one is kept (real collections have empty documents, and losing them would skew counts).
    """
    path = Path(source)
    text_fields = tuple(text_fields)
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if path.is_dir():
        records = _folder_records(path)
    elif path.suffix.lower() == ".csv":
        records = _csv_records(path)
    else:
        records = _jsonl_records(path)
    documents: list[Document] = []
    first_line: dict[str, int] = {}
    for where, line, record in records:
        document = _to_document(record, id_field, text_fields, f"{where}, line {line}" if line else where)
        if document.id in first_line:
            raise SourceError(
                f"{where}, line {line}: duplicate id {document.id!r} (first seen at line {first_line[document.id]})"
            )
        first_line[document.id] = line
        documents.append(document)
    if not documents:
        raise SourceError(f"{path}: no documents found (empty source)")
    return documents


def _to_document(record: dict[str, Any], id_field: str | None, text_fields: tuple[str, ...], where: str) -> Document:
    candidates = (id_field,) if id_field else ID_FIELD_CANDIDATES
    key = next((name for name in candidates if name in record), None)
    if key is None or record[key] in (None, ""):
        names = " or ".join(repr(name) for name in candidates)
        raise SourceError(f"{where}: missing id field {names} (choose another with --id-field)")
    doc_id = record[key]
    if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        raise SourceError(f"{where}: id field {key!r} must be a string or an integer, got {doc_id!r}")
    fields = {name: value for name, value in record.items() if name != key}
    for name in text_fields:
        if name not in fields:
            raise SourceError(f"{where}: missing text field {name!r} (choose others with --text-fields)")
        if not isinstance(fields[name], str):
            raise SourceError(f"{where}: text field {name!r} must be a string, got {type(fields[name]).__name__}")
    return Document(id=str(doc_id), fields=fields, text_fields=text_fields)


def _jsonl_records(path: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                message = f"not valid JSON ({error.msg} at column {error.colno})"
                raise SourceError(f"{path}, line {number}: {message}") from None
            if not isinstance(record, dict):
                raise SourceError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
            yield str(path), number, record


def _csv_records(path: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for record in reader:
            if None in record:
                raise SourceError(f"{path}, line {reader.line_num}: more values than the header has columns")
            yield str(path), reader.line_num, dict(record)


def _folder_records(folder: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Each .txt/.md file is a document: id = its path inside the folder, title = its name."""
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in FOLDER_SUFFIXES and p.is_file()):
        relative = path.relative_to(folder).as_posix()
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise SourceError(f"{path}: not UTF-8 text") from None
        yield str(path), 0, {"id": relative, "title": path.stem, "text": text}
