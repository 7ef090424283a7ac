"""Ingestion guards: nothing already in an index is lost or mixed when input or model is wrong."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hybrid.backends.local import LocalBackend
from hybrid.cli import cli
from hybrid.embed import DEFAULT_MODEL, Embedder, resolve_model_path
from hybrid.errors import IncompatibleIndexError, IndexNotFoundError
from hybrid.ingest import ingest
from hybrid.searcher import Searcher

DOCS = [
    {"_id": "1", "title": "Solar power", "text": "Photovoltaic panels make electricity.", "topic": "energy"},
    {"_id": "2", "title": "Wind farms", "text": "Turbines harvest the wind on hills and at sea.", "topic": "energy"},
    {"_id": "3", "title": "Sourdough", "text": "Bread leavened by wild yeast and lactic bacteria.", "topic": "food"},
    {"_id": "4", "title": "Espresso", "text": "Coffee brewed by forcing hot water through grounds.", "topic": "food"},
]


@pytest.fixture
def small(tmp_path, embedder):
    source = tmp_path / "small.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    backend = LocalBackend(tmp_path / "indexes")
    ingest(source, "small", backend, embedder, progress=False)
    return backend, source


@pytest.fixture(scope="module")
def other_dimension_model(tmp_path_factory) -> str:
    """A real sentence-transformers model with 128-d output: the bundled one plus a projection."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models

    base = SentenceTransformer(resolve_model_path(DEFAULT_MODEL))
    projected = SentenceTransformer(modules=[*base, models.Dense(384, 128)])
    path = tmp_path_factory.mktemp("model128")
    projected.save(str(path))
    return str(path)


def test_filter_on_metadata_in_both_legs(small):
    backend, _ = small
    hits = Searcher("small", backend).search("energy from nature", k=10, filters={"topic": "food"})
    assert {h.id for h in hits} == {"3", "4"}


def test_other_dimension_is_refused_before_writing(small, other_dimension_model):
    backend, source = small
    before = backend.hashes("small")
    with pytest.raises(IncompatibleIndexError, match=r"384-d vectors of model 'all-MiniLM-L6-v2'.*128-d"):
        ingest(source, "small", backend, Embedder(other_dimension_model), progress=False)
    assert backend.hashes("small") == before


def test_failure_midway_leaves_index_untouched(small, tmp_path, monkeypatch, failing_embedder):
    backend, _ = small
    before = backend.hashes("small")
    changed = tmp_path / "changed.jsonl"
    changed.write_text("".join(json.dumps({**d, "text": d["text"] + " (v2)"}) + "\n" for d in DOCS))
    monkeypatch.setattr("hybrid.ingest.ENCODE_CHUNK", 2)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        ingest(changed, "small", backend, failing_embedder, progress=False)
    assert backend.hashes("small") == before
    assert Searcher("small", backend).search("wild yeast", k=1, mode="bm25")[0].source["text"].endswith("bacteria.")


def test_searching_a_missing_index_names_it(tmp_path):
    """The library says what is missing; how to create it is the CLI's to say (tests/test_errors.py)."""
    with pytest.raises(IndexNotFoundError, match=r"index 'nope' does not exist in ") as raised:
        Searcher("nope", LocalBackend(tmp_path)).search("anything")
    assert raised.value.index == "nope"


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_round_trip_and_bad_input(small, tmp_path):
    backend, source = small
    data_dir = str(backend.data_dir)
    result = run("search", "coffee", "--index", "small", "--data-dir", data_dir, "--json", "-k", "2")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert hits[0]["id"] == "4" and set(hits[0]["vector"]) == {"rank", "score", "normalized"}
    assert run("index", "list", "--data-dir", data_dir).output.count("small") == 1

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "9", "title": "", "text": "fine"}\n{oops\n')
    result = run("ingest", str(bad), "--index", "small", "--data-dir", data_dir, "--quiet")
    assert result.exit_code == 1 and f"{bad}, line 2: not valid JSON" in result.output
    assert backend.count("small") == len(DOCS)

    result = run("search", "x", "--index", "missing", "--data-dir", data_dir)
    assert result.exit_code == 1 and "hybrid ingest SOURCE --index missing" in result.output
    result = run("search", "x", "--index", "small", "--data-dir", data_dir, "--filter", "topic")
    assert result.exit_code == 2 and "field=value" in result.output

    result = run("index", "delete", "small", "--yes", "--data-dir", data_dir)
    assert result.exit_code == 0 and not backend.exists("small")
