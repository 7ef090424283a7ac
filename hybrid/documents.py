"""What a document is: its id, its fields, the text it is searched by, and the hash that says it changed.

Reading sources and every backend share these rules, so a document means the same thing wherever it
is stored.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TEXT_FIELDS = ("title", "text")
OPTIONAL_DEFAULT_FIELDS = frozenset({"title"})
"""With the default text fields, a document without a title has an empty one; fields a user names stay required."""

INTERNAL_FIELDS = ("hybrid_id", "hybrid_hash", "hybrid_text", "hybrid_vector", "hybrid_windows")
"""Field names the OpenSearch index uses for itself, refused in documents on every backend alike."""
OPENSEARCH_METADATA_FIELDS = frozenset({
    "_id", "_index", "_source", "_routing", "_field_names", "_ignored", "_seq_no", "_primary_term", "_version",
    "_doc_count", "_tier", "_data_stream_timestamp", "_size", "_type", "_meta",
})
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
"""JSON may escape half of a surrogate pair alone: fine in text, but OpenSearch stores ids as UTF-8, where
every lone surrogate becomes U+FFFD, so two such ids would silently become one document."""
MAX_ID_BYTES = 512
"""OpenSearch's limit on a document id, applied everywhere so that an embedded index can move to a cluster."""


def utf8(text: str) -> bytes:
    """UTF-8 bytes of any str, lone surrogates (which a JSON escape can produce) included."""
    return text.encode("utf-8", "surrogatepass")


def document_text(fields: Mapping[str, Any], text_fields: Sequence[str]) -> str:
    """The text a document is embedded and BM25-indexed by: its non-empty text fields, one per line."""
    return "\n".join(str(fields[name]) for name in text_fields if fields.get(name))


def content_hash(fields: Mapping[str, Any]) -> str:
    """A stable digest of a document's fields: equal digests mean re-embedding can be skipped."""
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(utf8(canonical)).hexdigest()


def field_name_problem(name: str, top_level: bool = True) -> str | None:
    """Why ``name`` cannot be a document field (on OpenSearch, and so nowhere), or None. Reserved names
    matter only at the top level; inside an object they are ordinary names."""
    root = name.split(".")[0]  # OpenSearch reads "hybrid_vector.x" as a field inside hybrid_vector
    if top_level and root in INTERNAL_FIELDS:
        return f"field {name!r} is reserved by hybrid for its own use; rename it"
    if top_level and root in OPENSEARCH_METADATA_FIELDS:
        return f"field {name!r} is an OpenSearch metadata field; rename it"
    if not name.strip() or name.startswith(".") or name.endswith(".") or ".." in name:
        return f"field name {name!r} is not usable (empty, blank, or dots at its ends or in a row)"
    return None


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
