"""Long documents as windows: how they are split, and best-window scoring on both backends."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from hybrid import Searcher
from hybrid.backends.local import LocalBackend
from hybrid.chunking import Chunking, default_chunking, plain, windows
from hybrid.cli import cli
from hybrid.documents import Document
from hybrid.errors import IncompatibleIndexError
from hybrid.finetune import seen_texts
from hybrid.ingest import ingest_documents, reindex

FILLER = " ".join(f"The compressor stage {i} was tested at a pressure ratio of {i % 9 + 2}." for i in range(60))
TAIL = "Arctic terns migrate every year from Greenland to the Weddell Sea, the longest journey of any bird."
DOCUMENTS = [
    Document("long", {"title": "Compressor tests", "text": f"{FILLER} {TAIL}", "kind": "report"}),
    Document("jet", {"title": "Jet noise", "text": "Noise of a jet engine at take-off.", "kind": "report"}),
    Document("wing", {"title": "Swept wings", "text": "Lift and drag of swept wings.", "kind": "note"}),
    Document("birds", {"title": "Flight of birds", "text": "How birds glide and flap.", "kind": "note"}),
]


@pytest.fixture(scope="module")
def tokenizer(embedder):
    return plain(embedder.tokenizer)


def test_a_document_the_model_reads_whole_is_one_window(embedder, tokenizer):
    fields = {"title": "Short", "text": "A short text."}
    assert windows(fields, ("title", "text"), Chunking(), tokenizer, embedder.max_tokens) == ["Short\nA short text."]


def test_a_long_document_becomes_overlapping_windows_headed_by_its_title(embedder, tokenizer):
    fields = DOCUMENTS[0].fields
    parts = windows(fields, ("title", "text"), Chunking(64, 32), tokenizer, embedder.max_tokens)
    assert len(parts) > 4 and all(part.startswith("Compressor tests\n") for part in parts)
    bodies = [part.removeprefix("Compressor tests\n") for part in parts]
    assert fields["text"].startswith(bodies[0]) and fields["text"].endswith(bodies[-1])
    assert bodies[-1].endswith(TAIL)
    pieces = [len(tokenizer.encode(body, add_special_tokens=False).ids) for body in bodies]
    assert max(pieces) <= 64 + 2  # a window's span re-tokenised may merge or split a piece at its edges
    for first, second in zip(bodies, bodies[1:]):  # consecutive windows share about tokens - stride pieces
        assert second[: len(second) // 3] in first


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["alpha", "béta", "γάμμα", "\u2028", "\x85", "\x00", "שלום", "٣", "x" * 30, "\n",
                                 "naïve", "😀", " "]), min_size=0, max_size=400),
       st.integers(8, 64), st.integers(1, 64))
def test_windows_cover_every_word_of_any_text(tokenizer, embedder, words, size, step):
    chunking = Chunking(size, min(step, size))
    body = "".join(f"{word} " for word in words)
    parts = windows({"text": body}, ("text",), chunking, tokenizer, embedder.max_tokens)
    assert parts and all(part in body or part == body for part in parts)
    covered = np.zeros(len(body), dtype=bool)
    position = 0
    for part in parts:  # windows come in order: each found at or after the previous one's start
        position = body.index(part, position)
        covered[position : position + len(part)] = True
    assert all(covered[i] for i, char in enumerate(body) if not char.isspace() and char != "\x00"), body


def test_windows_fit_the_model_whatever_the_settings_field_order_or_text(embedder, tokenizer):
    long_text = DOCUMENTS[0].fields["text"] + " \ud800 lone surrogate"  # a JSON escape can make one
    fields = {"title": "A title " * 30, "text": long_text}
    for order in (("title", "text"), ("text", "title")):  # the longest field is split, wherever it is
        parts = windows(fields, order, Chunking(512, 256), tokenizer, embedder.max_tokens)
        assert len(parts) > 1 and all(part.startswith("A title") or part.endswith("A title ") for part in parts)
        lengths = [len(tokenizer.encode(part.replace("\ud800", "\ufffd")).ids) for part in parts]
        assert max(lengths) <= embedder.max_tokens + 2, lengths  # the heading's room is taken off each window
    assert embedder.encode(parts).shape == (len(parts), 384)


def test_chunking_is_parsed_and_checked():
    assert Chunking.parse("200/100") == Chunking(200, 100) and Chunking.parse("128") == Chunking(128, 64)
    for bad in ("0", "200/0", "200/300", "abc", "200/x"):
        with pytest.raises(ValueError):
            Chunking.parse(bad)


@pytest.fixture
def backend(any_backend):
    for name in ("chunked", "whole"):
        if any_backend.exists(name):
            any_backend.delete(name)
    return any_backend


def test_best_window_scores_a_long_document_one_hit_per_document(backend, embedder, tokenizer):
    ingest_documents(DOCUMENTS, "whole", backend, embedder, progress=False)
    ingest_documents(DOCUMENTS, "chunked", backend, embedder, progress=False, chunking="64/32")
    assert backend.meta("chunked").chunking == "64/32" and backend.count("chunked") == len(DOCUMENTS)
    query = "long-distance migration of arctic terns"
    whole = Searcher("whole", backend, embedder=embedder).search(query, k=10, mode="vector")
    chunked = Searcher("chunked", backend, embedder=embedder).search(query, k=10, mode="vector")
    assert whole[0].id != "long"  # the tail is past what the model reads of the whole text
    assert chunked[0].id == "long"
    assert sorted(hit.id for hit in chunked) == sorted(d.id for d in DOCUMENTS)  # one hit per document
    parts = windows(DOCUMENTS[0].fields, ("title", "text"), Chunking(64, 32), tokenizer, embedder.max_tokens)
    best = max(embedder.encode(parts) @ embedder.encode([query])[0])
    assert chunked[0].vector.score == pytest.approx(float(best), abs=1e-3)
    hybrid = Searcher("chunked", backend, embedder=embedder).search(query, k=10, filters={"kind": "report"})
    assert [hit.id for hit in hybrid][0] == "long" and {hit.id for hit in hybrid} == {"long", "jet"}
    assert chunked[0].source == DOCUMENTS[0].fields  # windows are not part of a hit's source


def test_fine_tuning_trains_on_the_window_the_vector_leg_would_compare(tmp_path, embedder, tokenizer):
    backend = LocalBackend(tmp_path)
    ingest_documents(DOCUMENTS, "whole", backend, embedder, progress=False)
    ingest_documents(DOCUMENTS, "chunked", backend, embedder, progress=False, chunking="64/32")
    queries = ["long-distance migration of arctic terns", "compressor stage pressure ratio", "jet noise"]
    ids = ["long", "long", "jet"]
    parts = windows(DOCUMENTS[0].fields, ("title", "text"), Chunking(64, 32), tokenizer, embedder.max_tokens)
    tern, compressor, jet = seen_texts(Searcher("chunked", backend, embedder=embedder), queries, ids)
    assert tern in parts and TAIL in tern  # the tail, which the whole text's embedding never reads
    assert compressor in parts and compressor != tern and jet == DOCUMENTS[1].text  # a short one stays whole
    assert seen_texts(Searcher("whole", backend, embedder=embedder), queries[:1], ["long"]) == [DOCUMENTS[0].text]


def test_chunking_is_kept_by_later_ingests_and_changed_only_by_reindex(backend, embedder):
    ingest_documents(DOCUMENTS[:2], "chunked", backend, embedder, progress=False, chunking="64/32")
    ingest_documents(DOCUMENTS[2:], "chunked", backend, embedder, progress=False)  # keeps the index's chunking
    assert backend.meta("chunked").chunking == "64/32" and backend.count("chunked") == 4
    with pytest.raises(IncompatibleIndexError, match="embeds windows of 64/32.*not whole documents.*reindex"):
        ingest_documents(DOCUMENTS, "chunked", backend, embedder, progress=False, chunking="off")
    reindex("chunked", backend, embedder, progress=False, chunking="off")
    assert backend.meta("chunked").chunking == "" and backend.count("chunked") == 4
    hits = Searcher("chunked", backend, embedder=embedder).search("arctic terns", k=4, mode="vector")
    assert len({hit.id for hit in hits}) == 4


def test_cli_chunk_option_and_index_info(tmp_path, embedder):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.id, **d.fields}) + "\n" for d in DOCUMENTS))
    runner = CliRunner()
    bad = runner.invoke(cli, ["ingest", str(corpus), "--index", "docs", "--chunk", "200/300",
                              "--data-dir", str(tmp_path / "idx")])
    assert bad.exit_code == 2 and "chunk stride must be between 1 and the chunk tokens (200)" in bad.output
    assert not (tmp_path / "idx").exists() or not LocalBackend(tmp_path / "idx").exists("docs")
    good = runner.invoke(cli, ["ingest", str(corpus), "--index", "docs", "--chunk", "64/32", "--quiet",
                               "--data-dir", str(tmp_path / "idx")])
    assert good.exit_code == 0, good.output
    info = runner.invoke(cli, ["index", "info", "docs", "--data-dir", str(tmp_path / "idx")])
    assert json.loads(info.output)["chunking"] == "64/32"
    found = runner.invoke(cli, ["search", "arctic tern migration", "--index", "docs", "--mode", "vector", "--json",
                                "--data-dir", str(tmp_path / "idx")])
    assert json.loads(found.output)[0]["id"] == "long"
    again = runner.invoke(cli, ["reindex", "--index", "docs", "--chunk", "off", "--quiet",
                                "--data-dir", str(tmp_path / "idx")])
    assert again.exit_code == 0, again.output
    info = json.loads(runner.invoke(cli, ["index", "info", "docs", "--data-dir", str(tmp_path / "idx")]).output)
    assert (info["chunking"], info["model"], info["precision"]) == ("", "all-MiniLM-L6-v2", "fp32")
    assert "server_model" not in info  # nothing runs models in an embedded index


def test_a_new_index_gets_windows_where_most_documents_are_longer_than_the_model_reads(tmp_path, embedder):
    backend = LocalBackend(tmp_path)
    long_ones = [Document(f"long{i}", {"title": f"Report {i}", "text": f"{FILLER} {TAIL}"}) for i in range(3)]
    mostly_long = [*long_ones, DOCUMENTS[1]]  # 3 of 4 longer than the 256 word pieces the model reads
    report = ingest_documents(mostly_long, "mostly-long", backend, embedder, progress=False)
    assert backend.meta("mostly-long").chunking == str(Chunking()) == "128/64"
    assert report.chunking.startswith("75% of the documents are longer than the model reads (256 word pieces)")
    hits = Searcher("mostly-long", backend, embedder=embedder).search("arctic tern migration", k=4, mode="vector")
    assert hits[0].id.startswith("long")  # the tail is read: a window holds it
    report = ingest_documents(DOCUMENTS, "mostly-short", backend, embedder, progress=False)  # 1 of 4 is long
    assert backend.meta("mostly-short").chunking == "" and "25% of the documents" in report.chunking
    assert "embedded whole" in report.chunking
    # chosen once, for a new index: later ingests keep the index's, whatever they bring, and say nothing
    assert ingest_documents(long_ones, "mostly-short", backend, embedder, progress=False).chunking == ""
    assert backend.meta("mostly-short").chunking == ""
    asked = ingest_documents(mostly_long, "asked", backend, embedder, progress=False, chunking="off")
    assert backend.meta("asked").chunking == "" and asked.chunking == ""  # asked for: no rule
    assert default_chunking(0.5) is None and default_chunking(0.51) == Chunking()
