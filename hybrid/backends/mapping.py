"""A hybrid index's mapping: one description, rendered for OpenSearch and for Elasticsearch.

``hybrid/mappings/description.json`` says what every index holds: the internal fields, metadata strings
as keywords, the text field the BM25 leg queries, and an HNSW vector field. The engines differ in syntax
only: OpenSearch's ``knn_vector`` with a ``method`` (and ``index.knn``), Elasticsearch's ``dense_vector``
with ``index_options``; and in the analyzer a cluster has. ``mappings/opensearch.json`` and
``mappings/elasticsearch.json`` show both renderings of a default index, for reading (a test keeps them
equal to what is created).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

from ..documents import INTERNAL_FIELDS
from .base import IndexMeta

Engine = Literal["opensearch", "elasticsearch"]
_, _, TEXT_FIELD, VECTOR_FIELD, WINDOWS_FIELD = INTERNAL_FIELDS
ELASTICSEARCH_SIMILARITY = {"innerproduct": "max_inner_product"}
"""Elasticsearch's name for each space: ``max_inner_product`` scores as OpenSearch's ``innerproduct`` does
(ip + 1 when ip >= 0, else 1 / (1 - ip)) and, unlike ``dot_product``, takes vectors of any length."""


def description() -> dict[str, Any]:
    """The engine-neutral mapping (a fresh copy)."""
    text = resources.files("hybrid").joinpath("mappings/description.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def vector_field(engine: Engine, dimension: int, space_type: str, hnsw: dict[str, int],
                 knn_engine: str = "lucene") -> dict[str, Any]:
    """The vector field in ``engine``'s syntax: HNSW with ``hnsw``'s parameters, full-precision vectors
    (Elasticsearch 8.14+ would otherwise quantise them to int8 at 384 dimensions and more)."""
    if engine == "opensearch":
        return {"type": "knn_vector", "dimension": dimension,
                "method": {"name": "hnsw", "space_type": space_type, "engine": knn_engine, "parameters": hnsw}}
    return {"type": "dense_vector", "dims": dimension, "index": True,
            "similarity": ELASTICSEARCH_SIMILARITY[space_type], "index_options": {"type": "hnsw", **hnsw}}


def index_mapping(engine: Engine, meta: IndexMeta, layout: dict[str, int], previous: str | None = None, *,
                  knn_engine: str = "lucene", analyzer: str = "english") -> dict[str, Any]:
    """The body that creates an index of ``meta`` on ``engine``: ``layout``'s shards and replicas, the text
    fields analysed by ``analyzer`` and copied into the one field the BM25 leg queries (as the embedded index
    does), the vector field (nested windows for a chunked index, each document then scoring by its best),
    and ``_meta`` recording ``meta`` and ``previous``, the version a re-index replaces (what rollback
    returns to)."""
    body = description()
    body["settings"]["index"].update(layout)
    if engine == "opensearch":
        body["settings"]["index"]["knn"] = True
    properties = body["mappings"]["properties"]
    properties[TEXT_FIELD]["analyzer"] = analyzer
    for name in meta.text_fields:  # exactly these fields feed the BM25 leg, as in the embedded index
        properties[name] = {"type": "text", "analyzer": analyzer, "copy_to": TEXT_FIELD}
    hnsw = properties[VECTOR_FIELD].pop("hnsw")
    properties[VECTOR_FIELD] = vector_field(engine, meta.dimension, meta.space_type, hnsw, knn_engine)
    if meta.chunking:
        properties[WINDOWS_FIELD] = {"type": "nested", "properties": {"vector": properties.pop(VECTOR_FIELD)}}
    body["mappings"]["_meta"] = {"hybrid": meta.to_dict(), "hybrid_version": {"previous": previous}}
    return body


def shown(engine: Engine) -> dict[str, Any]:
    """What ``mappings/ENGINE.json`` shows: a new index of the default model's 384 dimensions, one shard,
    ``_meta`` left out (it records the hybrid version that made the index)."""
    body = index_mapping(engine, IndexMeta("all-MiniLM-L6-v2", 384), {"number_of_shards": 1, "number_of_replicas": 0})
    body["mappings"]["_meta"] = {}
    return body


def write_shown() -> None:
    """Write ``mappings/opensearch.json`` and ``mappings/elasticsearch.json`` from the description (in a
    source checkout, after changing it)."""
    folder = Path(str(resources.files("hybrid").joinpath("mappings")))
    for engine in get_args(Engine):
        (folder / f"{engine}.json").write_text(json.dumps(shown(engine), indent=2) + "\n")
