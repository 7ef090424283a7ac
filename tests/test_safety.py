"""Nothing lost, nothing misleading: odd text, unlucky names, pagination limits, model switches and
errors, on both backends (a real OpenSearch node and the embedded store), with the real model."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from cluster import cli_args
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from loopback import answering

from hybrid.backends.base import check_index_name
from hybrid.backends.local import LocalBackend
from hybrid.backends.opensearch import Connection, OpenSearchBackend
from hybrid.cli import cli
from hybrid.documents import LONE_SURROGATE, Document
from hybrid.embed import Embedder
from hybrid.errors import HybridError, IndexNotFoundError
from hybrid.ingest import ingest, ingest_documents, reindex
from hybrid.searcher import Searcher


@pytest.fixture
def backend(any_backend):
    return any_backend


@pytest.fixture
def name(backend):
    """A fresh index name, deleted afterwards."""
    index = f"t-{uuid.uuid4().hex[:10]}"
    yield index
    if backend.exists(index):
        backend.delete(index)


def backend_args(backend) -> list[str]:
    return cli_args(backend)


def hybrid(*args: str):
    return CliRunner().invoke(cli, list(args))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))  # ASCII JSON: surrogates escaped
    return path


# --- Any text round-trips -------------------------------------------------------------------------

NASTY = ["\u2028", "\u2029", "\x85", "\x00", "\r", "\n", "\ud800", "\udfff", "\u202e", "\u05e9\u05dc\u05d5\u05dd",
         "\U0001f600", "e\u0301", "\ufeff", "\\", '"', "\x1f", "\u200b"]
any_text = st.lists(st.one_of(st.sampled_from(NASTY), st.text(st.characters(exclude_categories=()), max_size=8)),
                    max_size=6).map("".join)
records = st.lists(
    st.fixed_dictionaries({"_id": any_text.map(lambda s: LONE_SURROGATE.sub("", s)).filter(bool),  # refused in ids
                           "title": any_text, "text": any_text,
                           "note": any_text, "tags": st.lists(any_text, max_size=2)}),
    min_size=1, max_size=3, unique_by=lambda r: r["_id"])


def test_any_text_round_trips(any_backend, tmp_path_factory, embedder):
    """Ids, text and metadata with line separators, NEL, NUL, lone surrogates, RTL, emoji and combining
    marks: ingest, then read back exactly what went in, and the index still loads and searches."""
    backend = any_backend
    index = f"unicode-{uuid.uuid4().hex[:8]}"
    folder = tmp_path_factory.mktemp("sources")

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @example([{"_id": "a\u2028b", "title": "line\u2028separator", "text": "nel\x85nul\x00", "note": "\ud800",
               "tags": ["\u202e"]}])
    @given(batch=records)
    def round_trip(batch):
        source = write_jsonl(folder / "docs.jsonl", batch)
        ingest(source, index, backend, embedder, progress=False)
        as_read = json.loads(json.dumps(batch))  # what the file holds: JSON joins an escaped surrogate pair
        expected = {r["_id"]: {k: v for k, v in r.items() if k != "_id"} for r in as_read}
        assert backend.sources(index, list(expected)) == expected
        fresh = LocalBackend(backend.data_dir) if isinstance(backend, LocalBackend) else backend  # from disk again
        stored = dict(fresh.documents(index))
        assert {doc_id: stored[doc_id] for doc_id in expected} == expected
        hits = Searcher(index, fresh, embedder=embedder).search("any text", k=100, mode="hybrid")
        assert hits and all(hit.source == stored[hit.id] for hit in hits)

    try:
        round_trip()
    finally:
        if backend.exists(index):
            backend.delete(index)


def test_internal_names_are_refused_and_doc_id_is_kept(backend, name, embedder, tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", [{"_id": "1", "text": "alpha", "doc_id": "mine", "hybrid_x": 1}])
    ingest(source, name, backend, embedder, progress=False)
    assert backend.sources(name, ["1"])["1"] == {"text": "alpha", "doc_id": "mine", "hybrid_x": 1}
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"_id": "2", "text": "beta", "hybrid_vector": [0.0]}])
    result = hybrid("ingest", str(bad), "--index", name, "--quiet", *backend_args(backend))
    assert result.exit_code == 1 and "field 'hybrid_vector' is reserved by hybrid" in result.output
    assert backend.count(name) == 1


def test_text_fields_are_exactly_what_bm25_searches(backend, name, embedder, tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", [{"_id": "1", "title": "zebra", "text": "apple orchard"},
                                                {"_id": "2", "title": "apple", "text": "zebra crossing"}])
    ingest(source, name, backend, embedder, text_fields=["text"], progress=False)
    hits = Searcher(name, backend, embedder=embedder).search("zebra", mode="bm25")
    assert [hit.id for hit in hits] == ["2"]  # the title "zebra" of document 1 is not searched


def test_a_text_with_a_lone_surrogate_is_found_by_its_words(backend, name, embedder, tmp_path):
    """Lucene's tokenizer makes no words of a value that ends in half a surrogate pair (a JSON escape can make
    one): the document must still be found by the other words of that text, scored as the text without it."""
    source = write_jsonl(tmp_path / "d.jsonl", [{"_id": "1", "title": "plain", "text": "zebra crossing \ud800"},
                                                {"_id": "2", "title": "plain", "text": "zebra crossing"},
                                                {"_id": "3", "title": "zebra zebra", "text": "nothing odd"},
                                                {"_id": "4", "title": "other", "text": "apple"}])
    ingest(source, name, backend, embedder, progress=False)
    searcher = Searcher(name, backend, embedder=embedder)
    odd, plain = sorted(searcher.search("crossing", mode="bm25"), key=lambda hit: hit.id)
    assert (odd.id, plain.id) == ("1", "2")
    assert odd.bm25.score == pytest.approx(plain.bm25.score, rel=1e-6)  # the same words, counted once each
    assert [hit.id for hit in searcher.search("zebra \udc00", mode="bm25")][0] == "3"  # two zebras beat one
    assert backend.sources(name, ["1"])["1"]["text"] == "zebra crossing \ud800"  # stored exactly as given


# --- Names ---------------------------------------------------------------------------------------

BAD_NAMES = ["*", "a,b", "x[1]", "Upper", "a/b", "../x", "-x", "_x", ".x", "a b", "x" * 201, "a_v2", "", "q?", "a:b"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_index_names_are_refused_before_anything(bad):
    with pytest.raises(HybridError, match="invalid index name"):
        check_index_name(bad)


def test_delete_touches_only_what_hybrid_made(opensearch, embedder, tmp_path):
    client = opensearch.client
    for other in ("keepme", "keepme2"):
        if not client.indices.exists(index=other):
            client.indices.create(index=other, body={"settings": {"number_of_replicas": 0}})
    for pattern in ("*", "keepme,keepme2", "keep*"):
        result = hybrid("index", "delete", pattern, "--yes", "--opensearch", opensearch.connection.url)
        assert result.exit_code == 1 and "invalid index name" in result.output, result.output
    result = hybrid("index", "delete", "keepme", "--yes", "--opensearch", opensearch.connection.url)
    assert result.exit_code == 1 and "not created by hybrid" in result.output
    assert client.indices.exists(index="keepme") and client.indices.exists(index="keepme2")
    client.indices.delete(index="keepme,keepme2")


def test_deleting_one_local_index_never_touches_another(tmp_path, embedder):
    backend = LocalBackend(tmp_path)
    source = write_jsonl(tmp_path / "d.jsonl", [{"_id": "1", "text": "alpha"}])
    for index in ("x", "x1", "x.y", "xx"):
        ingest(source, index, backend, embedder, progress=False)
    backend.delete("x")
    assert backend.names() == ["x.y", "x1", "xx"]
    assert all(backend.count(index) == 1 for index in backend.names())
    result = hybrid("index", "delete", "x[1]", "--yes", "--data-dir", str(tmp_path))
    assert result.exit_code == 1 and "invalid index name 'x[1]'" in result.output
    assert backend.names() == ["x.y", "x1", "xx"]


def test_a_missing_alias_is_not_papered_over(opensearch, embedder, tmp_path):
    name = f"t-{uuid.uuid4().hex[:10]}"
    source = write_jsonl(tmp_path / "d.jsonl", [{"_id": "1", "text": "alpha"}])
    ingest(source, name, opensearch, embedder, progress=False)
    opensearch.client.indices.delete_alias(index=f"{name}_v1", name=name)
    more = write_jsonl(tmp_path / "more.jsonl", [{"_id": "2", "text": "beta"}])
    with pytest.raises(HybridError, match=rf"{name}_v1 exists .* but the alias '{name}'"):
        ingest(more, name, opensearch, embedder, progress=False)
    assert not opensearch.client.indices.exists(index=name)  # no plain index was auto-created
    assert opensearch.client.count(index=f"{name}_v1")["count"] == 1
    opensearch.client.indices.put_alias(index=f"{name}_v1", name=name)
    opensearch.delete(name)


# --- Pagination and arguments ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def cranfield_searcher(cranfield_backend):
    return Searcher("cranfield", cranfield_backend)


def test_pages_keep_coming_past_the_window(cranfield_searcher):
    query = "pressure distribution on the surface of a body"
    for mode in ("bm25", "vector", "hybrid"):
        deep = cranfield_searcher.search(query, k=150, mode=mode, window=50)
        assert len(deep) == 150, mode  # far more than 50 documents match
        page = cranfield_searcher.search(query, k=10, offset=140, mode=mode, window=50)
        assert [h.id for h in page] == [h.id for h in deep[140:150]], mode
    everything = cranfield_searcher.search(query, k=1400, mode="vector")
    assert len(everything) == 1400
    assert cranfield_searcher.search(query, k=10, offset=1400, mode="vector") == []


@pytest.mark.parametrize(("arguments", "message"), [
    ({"k": 0}, "k must be at least 1"),
    ({"offset": -1}, "offset must not be negative"),
    ({"rank_constant": 0}, "rank_constant must be at least 1"),
    ({"window": 0}, "window must be at least 1"),
    ({"weights": {"bm25": -1.0, "vector": 1.0}}, "weights must be zero or more"),
    ({"fusion": "linear"}, "fusion method must be one of rrf, min_max, l2, z_score"),
    ({"combination": "median"}, "combination must be one of arithmetic, geometric, harmonic"),
])
def test_bad_arguments_are_errors_not_defaults(cranfield_searcher, arguments, message):
    with pytest.raises(ValueError, match=message):
        cranfield_searcher.search("shock waves", **arguments)


def test_empty_query_and_window_limit_fail_before_encoding(cranfield_backend, counting_embedder):
    searcher = Searcher("cranfield", cranfield_backend, embedder=counting_embedder)
    with pytest.raises(ValueError, match="the query is empty"):
        searcher.search("  \n")
    if isinstance(cranfield_backend, OpenSearchBackend):
        with pytest.raises(ValueError, match="returns at most 10000 per query"):
            searcher.search("shock waves", window=20_000)
        with pytest.raises(ValueError, match="returns at most 10000 per query"):
            searcher.search("shock waves", k=10, offset=9_995)
    assert counting_embedder.encoded == 0


# --- Models ---------------------------------------------------------------------------------------

def test_the_searcher_never_mixes_models(backend, name, embedder, tmp_path, other_space_model):
    """Every vector score a searcher reports equals the inner product of the query and the document
    encoded by the model of the version it searched, before, around and after a model switch."""
    texts = ["shock waves in supersonic flow", "heat transfer at the wall", "boundary layer separation",
             "wing flutter at high speed", "vortex shedding behind cylinders"]
    documents = [Document(str(i), {"text": t}, ("text",)) for i, t in enumerate(texts)]
    ingest_documents(documents, name, backend, embedder, progress=False)
    searcher = Searcher(name, backend, embedder=embedder, snapshot_ttl_s=0.5)
    rotated = Embedder(other_space_model)
    query = "supersonic shock"

    def scores_follow(model: Embedder, hits) -> bool:
        expected = model.encode([texts[int(h.id)] for h in hits]) @ model.encode_query(query)
        return np.allclose([h.vector.score for h in hits], expected, atol=2e-3)

    before = searcher.search(query, k=5, mode="vector")
    assert scores_follow(embedder, before)
    reindex(name, backend, rotated, progress=False)
    right_after = searcher.search(query, k=5, mode="vector")  # old version, old model, or new with new
    assert scores_follow(embedder, right_after) or scores_follow(rotated, right_after)
    time.sleep(0.6)
    after = searcher.search(query, k=5, mode="vector")
    assert scores_follow(rotated, after) and not scores_follow(embedder, after)
    assert searcher.embedder.name == other_space_model
    assert dict(backend.documents(name)) == {d.id: d.fields for d in documents}  # re-embedded, fields kept
    assert [n for n in backend.names() if n.startswith(name)] == [name]  # the kept version is no index


def test_a_failed_reindex_leaves_no_version_behind(backend, name, embedder, monkeypatch, failing_embedder):
    documents = [Document(str(i), {"text": f"document number {i}"}, ("text",)) for i in range(6)]
    ingest_documents(documents, name, backend, embedder, progress=False)
    before = backend.versions(name)
    monkeypatch.setattr("hybrid.ingest.ENCODE_CHUNK", 2)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        reindex(name, backend, failing_embedder, progress=False)
    assert backend.versions(name) == before and backend.count(name) == 6


def test_an_ingest_that_a_reindex_overtakes_says_so(opensearch, embedder, other_space_model):
    """On a cluster nothing stops a re-index from switching the alias while an ingest writes through it."""
    backend, name = opensearch, f"t-{uuid.uuid4().hex[:10]}"
    ingest_documents([Document("a", {"text": "alpha"}, ("text",))], name, backend, embedder, progress=False)

    class Overtaken(Embedder):
        def encode(self, texts, batch_size=32):
            if texts and texts[0] == "beta":  # the ingest below, while it embeds: a re-index finishes
                reindex(name, backend, Embedder(other_space_model), progress=False)
            return embedder.encode(texts, batch_size)

    with pytest.raises(HybridError, match=rf"{name} was switched from .* while this ingest ran"):
        ingest_documents([Document("b", {"text": "beta"}, ("text",))], name, backend, Overtaken(), progress=False)
    backend.delete(name)


def test_a_model_folder_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Embedder("./models/mine").name == str(tmp_path.resolve() / "models" / "mine")


# --- Errors ---------------------------------------------------------------------------------------

def test_errors_come_before_embedding_as_one_line(backend, name, tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", [{"_id": "1", "text": "alpha"}])
    args = backend_args(backend)
    cases = [
        (["--model", str(tmp_path / "no-such-model")], "no such folder"),
        (["--text-fields", ""], "no text fields given"),
        (["--index", "Upper"], "invalid index name 'Upper'"),
        (["--index", "x" * 300], "bytes long (at most 200)"),
    ]
    for extra, message in cases:
        result = hybrid("ingest", str(source), "--index", name, "--quiet", *args, *extra)
        assert result.exit_code == 1 and message in result.output, (extra, result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not backend.exists(name)


def test_a_corpus_without_searchable_words_still_ingests(tmp_path, embedder):
    backend = LocalBackend(tmp_path / "indexes")
    source = write_jsonl(tmp_path / "d.jsonl", [{"_id": "1", "text": "the and of"}, {"_id": "2", "text": ""}])
    assert ingest(source, "stopwords", backend, embedder, progress=False).count == 2
    searcher = Searcher("stopwords", backend, embedder=embedder)
    assert searcher.search("the", mode="bm25") == []
    assert len(searcher.search("the", mode="vector")) == 2


class SilentServer:
    """A loopback server that accepts connections and never answers, as a hung cluster would."""

    def __enter__(self) -> str:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def __exit__(self, *exc) -> None:
        self.socket.close()


def test_a_down_cluster_fails_within_bounded_time():
    started = time.monotonic()
    with pytest.raises(HybridError, match="cannot reach OpenSearch at http://127.0.0.1:9"):
        Searcher("anything", OpenSearchBackend(Connection("http://127.0.0.1:9"))).search("anything")
    assert time.monotonic() - started < 3  # nothing listens: refused at once, no retry storm
    with SilentServer() as url:
        backend = OpenSearchBackend(Connection(url, timeout=1.0))
        started = time.monotonic()
        with pytest.raises(HybridError, match="cannot reach OpenSearch"):
            backend.retrieve("anything", _query())
        elapsed = time.monotonic() - started
    assert elapsed < 1.0 * 2 + 2  # search_attempts (2) x timeout, and one pause


def _query():
    from hybrid.backends.base import LegQuery

    return LegQuery("shock", None, 10)


def test_a_url_that_is_not_opensearch_says_so():
    with answering(404, b"<html><body>Not here</body></html>", "text/html") as url:
        result = hybrid("search", "x", "--index", "docs", "--opensearch", url)
    assert result.exit_code == 1 and "without an OpenSearch response: is it an OpenSearch cluster?" in result.output
    assert "Traceback" not in result.output and "<html" not in result.output


def test_missing_index_message_on_both(backend, name):
    with pytest.raises(IndexNotFoundError) as raised:
        Searcher(name, backend).search("anything")
    assert raised.value.index == name and repr(name) in str(raised.value)
