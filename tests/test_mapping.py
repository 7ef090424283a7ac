"""One mapping description, two engines' syntax: what each renders, and the files that show it."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from hybrid.backends.base import IndexMeta
from hybrid.backends.mapping import description, index_mapping, shown


@pytest.mark.parametrize("engine", ["opensearch", "elasticsearch"])
def test_the_files_in_mappings_show_what_is_created(engine):
    """mappings/ENGINE.json is for reading; it must say what hybrid creates (regenerate it with
    ``python -c "from hybrid.backends.mapping import write_shown; write_shown()"`` after changing the description)."""
    assert json.loads(resources.files("hybrid").joinpath(f"mappings/{engine}.json").read_text()) == shown(engine)


def test_both_engines_differ_only_in_the_vector_syntax_and_knn_setting():
    meta = IndexMeta("some/model", 768, ("title", "body"), chunking="256/32")
    layout = {"number_of_shards": 3, "number_of_replicas": 1}
    ours = index_mapping("opensearch", meta, layout, "x_v1", knn_engine="faiss")
    theirs = index_mapping("elasticsearch", meta, layout, "x_v1", analyzer="standard")
    assert ours["settings"]["index"].pop("knn") is True and theirs["settings"] == ours["settings"]
    windows = [body["mappings"]["properties"].pop("hybrid_windows") for body in (ours, theirs)]
    hnsw = {"m": 16, "ef_construction": 128}
    assert windows[0] == {"type": "nested", "properties": {"vector": {
        "type": "knn_vector", "dimension": 768,
        "method": {"name": "hnsw", "space_type": "innerproduct", "engine": "faiss", "parameters": hnsw}}}}
    assert windows[1] == {"type": "nested", "properties": {"vector": {
        "type": "dense_vector", "dims": 768, "index": True, "similarity": "max_inner_product",
        "index_options": {"type": "hnsw", **hnsw}}}}
    text = [body["mappings"]["properties"] for body in (ours, theirs)]
    assert text[0]["body"] == {"type": "text", "analyzer": "english", "copy_to": "hybrid_text"}
    assert text[1]["body"] == {"type": "text", "analyzer": "standard", "copy_to": "hybrid_text"}
    for body in (ours, theirs):  # everything else as described, _meta recording the index
        for name in ("title", "body", "hybrid_text"):
            body["mappings"]["properties"][name].pop("analyzer")
        assert body["mappings"].pop("_meta") == {"hybrid": meta.to_dict(), "hybrid_version": {"previous": "x_v1"}}
    assert ours == theirs
    neutral = description()["mappings"]
    assert ours["mappings"]["dynamic_templates"] == neutral["dynamic_templates"]
