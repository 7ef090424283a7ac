"""Read documents from JSONL, CSV or a folder of .txt/.md files, validating them before anything is written.

A whole source is read and checked up front: a bad line anywhere stops ingestion before the index is
touched (and before any embedding), with an error that names the file, the line and the field.
Files are read as bytes and split on newline bytes only, so that text holding U+2028, NEL or a lone
carriage return is never cut in two; a byte-order mark (Excel writes one) is skipped.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .documents import (
    DEFAULT_TEXT_FIELDS,
    LONE_SURROGATE,
    MAX_ID_BYTES,
    OPTIONAL_DEFAULT_FIELDS,
    Document,
    field_name_problem,
    utf8,
)
from .errors import SourceError

ID_FIELD_CANDIDATES = ("_id", "id")
FOLDER_SUFFIXES = (".txt", ".md")
BOM = "\ufeff"


def read_documents(
    source: str | Path,
    id_field: str | None = None,
    text_fields: Sequence[str] | None = None,
) -> list[Document]:
    """Read every document of ``source``; raise SourceError on the first bad record or a duplicate id.

    ``id_field`` defaults to ``_id`` (BEIR) or else ``id``. ``text_fields`` defaults to title and text,
    where a missing or null title counts as empty; every field named explicitly must be a string in
    every record. Empty documents are kept (real collections have them; dropping them skews counts).
    """
    path = Path(source)
    optional = OPTIONAL_DEFAULT_FIELDS if text_fields is None else frozenset()
    text_fields = DEFAULT_TEXT_FIELDS if text_fields is None else tuple(text_fields)
    if not text_fields:
        raise SourceError("no text fields given: name at least one field to embed and search (--text-fields)")
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    try:
        return _read(path, id_field, text_fields, optional)
    except OSError as error:
        raise SourceError(f"{error.filename or path}: cannot read it ({error.strerror or error})") from None


def _read(path: Path, id_field: str | None, text_fields: tuple[str, ...], optional: frozenset[str]) -> list[Document]:
    if path.is_dir():
        records = _folder_records(path)
    elif path.suffix.lower() == ".csv":
        records = _csv_records(path)
    else:
        records = _jsonl_records(path)
    documents: list[Document] = []
    first_line: dict[str, int] = {}
    for where, line, record in records:
        place = f"{where}, line {line}" if line else where
        document = _to_document(record, id_field, text_fields, optional, place)
        if document.id in first_line:
            raise SourceError(f"{place}: duplicate id {document.id!r} (first seen at line {first_line[document.id]})")
        first_line[document.id] = line
        documents.append(document)
    if not documents:
        raise SourceError(f"{path}: no documents found (empty source)")
    return documents


def _to_document(record: dict[str, Any], id_field: str | None, text_fields: tuple[str, ...],
                 optional: frozenset[str], where: str) -> Document:
    candidates = (id_field,) if id_field else ID_FIELD_CANDIDATES
    key = next((name for name in candidates if name in record), None)
    if key is None or record[key] in (None, ""):
        names = " or ".join(repr(name) for name in candidates)
        raise SourceError(f"{where}: missing id field {names} (choose another with --id-field)")
    doc_id = record[key]
    if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        raise SourceError(f"{where}: id field {key!r} must be a string or an integer, got {doc_id!r}")
    doc_id = str(doc_id)
    if surrogate := LONE_SURROGATE.search(doc_id):
        raise SourceError(f"{where}: the id holds a lone surrogate (U+{ord(surrogate.group()):04X}), which no "
                          "index can keep apart from another id; give it an id of valid Unicode text")
    if len(utf8(doc_id)) > MAX_ID_BYTES:
        raise SourceError(f"{where}: id is {len(utf8(doc_id))} bytes long; at most {MAX_ID_BYTES} are allowed")
    fields = {name: value for name, value in record.items() if name != key}
    _check_field_names(fields, where)
    for name in text_fields:
        value = fields.get(name)
        if value is None and name in optional:
            continue
        if name not in fields:
            raise SourceError(f"{where}: missing text field {name!r} (choose others with --text-fields)")
        if not isinstance(value, str):
            raise SourceError(f"{where}: text field {name!r} must be a string, got {type(value).__name__}")
    return Document(id=doc_id, fields=fields, text_fields=text_fields)


def _check_field_names(fields: dict[str, Any], where: str, top_level: bool = True) -> None:
    for name, value in fields.items():
        if problem := field_name_problem(name, top_level):
            raise SourceError(f"{where}: {problem}")
        if isinstance(value, dict):
            _check_field_names(value, where, top_level=False)


def _decode(raw: bytes, path: Path, line: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SourceError(f"{path}, line {line}: not UTF-8 (byte 0x{raw[error.start]:02x} at byte {error.start + 1} "
                          "of the line); save the file as UTF-8") from None
    return text.removeprefix(BOM) if line == 1 else text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is too large for a number")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        repeated = next(key for key in record if sum(1 for name, _ in pairs if name == key) > 1)
        raise ValueError(f"field {repeated!r} appears twice")
    return record


def _jsonl_records(path: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            line = _decode(raw, path, number)
            if not line.strip():
                continue
            try:
                record = json.loads(line, parse_constant=_no_constant, parse_float=_finite,
                                    object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as error:
                message = f"not valid JSON ({error.msg} at column {error.colno})"
                raise SourceError(f"{path}, line {number}: {message}") from None
            except ValueError as error:
                raise SourceError(f"{path}, line {number}: not valid JSON ({error})") from None
            if not isinstance(record, dict):
                raise SourceError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
            yield str(path), number, record


def _csv_records(path: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise SourceError(f"{path}, line {line}: not UTF-8 (byte 0x{data[error.start]:02x}); save the file as "
                          "UTF-8") from None
    reader = csv.DictReader(io.StringIO(text.removeprefix(BOM), newline=""))
    try:
        for record in reader:
            if None in record:
                raise SourceError(f"{path}, line {reader.line_num}: more values than the header has columns")
            yield str(path), reader.line_num, dict(record)
    except csv.Error as error:  # a field over the csv module's size limit, a stray NUL, ...
        raise SourceError(f"{path}, line {reader.line_num}: not valid CSV ({error})") from None


def _folder_records(folder: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Each .txt/.md file is a document: id = its path inside the folder, title = its name."""
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in FOLDER_SUFFIXES and p.is_file()):
        relative = path.relative_to(folder).as_posix()
        try:
            text = path.read_bytes().decode("utf-8").removeprefix(BOM)
        except UnicodeDecodeError:
            raise SourceError(f"{path}: not UTF-8 text; save it as UTF-8") from None
        yield str(path), 0, {"id": relative, "title": path.stem, "text": text}
