"""Ingest -> search round trip on Cranfield with the real model, run against every backend."""

from __future__ import annotations

import json

import pytest

from hybrid import Searcher
from hybrid.ingest import ingest
from hybrid.sources import read_documents


@pytest.fixture(scope="module")
def searcher(cranfield_backend):
    return Searcher("cranfield", cranfield_backend)


def test_count_matches_source(cranfield_backend, cranfield):
    assert cranfield_backend.count("cranfield") == len(read_documents(cranfield / "corpus.jsonl"))
    assert cranfield_backend.meta("cranfield").dimension == 384


def test_title_finds_its_document_first_in_every_mode(searcher, cranfield):
    doc = next(d for d in read_documents(cranfield / "corpus.jsonl") if d.id == "1228")
    for mode in ("hybrid", "bm25", "vector"):
        assert searcher.search(doc.fields["title"], k=3, mode=mode)[0].id == "1228", mode


def test_hybrid_hits_explain_each_leg(searcher):
    hits = searcher.search("boundary layer separation in supersonic flow", k=10)
    assert len(hits) == 10
    top = hits[0]
    assert top.bm25 is not None and top.vector is not None
    assert top.score == pytest.approx(1 / (60 + top.bm25.rank) + 1 / (60 + top.vector.rank))
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert "title" in top.source and "text" in top.source
    as_dict = top.to_dict()
    assert set(as_dict) == {"id", "score", "bm25", "vector", "explained", "source"} and as_dict["explained"]
    assert as_dict["bm25"] == {"rank": top.bm25.rank, "score": top.bm25.score, "normalized": 1 / (60 + top.bm25.rank)}


def test_single_leg_modes_leave_the_other_leg_empty(searcher):
    bm25 = searcher.search("shock waves", k=5, mode="bm25")
    assert all(h.vector is None and h.bm25 is not None and h.score == h.bm25.score for h in bm25)
    vector = searcher.search("shock waves", k=5, mode="vector")
    assert all(h.bm25 is None and h.vector is not None for h in vector)
    assert [h.vector.rank for h in vector] == [1, 2, 3, 4, 5]


def test_pages_are_stable_and_disjoint(searcher):
    query = "heat transfer at hypersonic speeds"
    whole = [h.id for h in searcher.search(query, k=30)]
    pages = [h.id for offset in (0, 10, 20) for h in searcher.search(query, k=10, offset=offset)]
    assert pages == whole and len(set(whole)) == 30


def test_filters_apply_to_both_legs(searcher):
    author = searcher.search("boundary layer", k=1, mode="bm25")[0].source["metadata"]["author"]
    hits = searcher.search("boundary layer", k=10, filters={"metadata.author": author})
    assert hits and all(h.source["metadata"]["author"] == author for h in hits)
    # Each leg ranked only the documents that pass the filter: no leg rank exceeds their number.
    assert max(leg.rank for h in hits for leg in (h.bm25, h.vector) if leg) <= len(hits)
    assert searcher.search("boundary layer", k=10, filters={"metadata.author": "nobody at all"}) == []


def test_weights_change_the_order(searcher):
    query = "boundary layer separation in supersonic flow"
    bm25_heavy = searcher.search(query, k=5, weights={"bm25": 10.0, "vector": 0.1})
    assert [h.id for h in bm25_heavy] == [h.id for h in searcher.search(query, k=5, mode="bm25")]


def test_reingest_is_idempotent_and_embeds_nothing(cranfield_backend, cranfield, counting_embedder):
    before = cranfield_backend.count("cranfield")
    report = ingest(cranfield / "corpus.jsonl", "cranfield", cranfield_backend, counting_embedder, progress=False)
    assert (report.embedded, report.unchanged, report.count) == (0, before, before)
    assert counting_embedder.encoded == 0
    assert cranfield_backend.count("cranfield") == before


def test_changed_document_alone_is_reembedded(cranfield_backend, cranfield, counting_embedder, tmp_path):
    lines = (cranfield / "corpus.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["text"] += " revised"
    (tmp_path / "corpus.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    report = ingest(tmp_path / "corpus.jsonl", "cranfield", cranfield_backend, counting_embedder, progress=False)
    assert (report.embedded, counting_embedder.encoded) == (1, 1)
    assert report.count == len(lines)
    hit = Searcher("cranfield", cranfield_backend).search(first["title"], k=1, mode="bm25")[0]
    assert hit.id == first["_id"] and hit.source["text"].endswith("revised")
    restored = ingest(cranfield / "corpus.jsonl", "cranfield", cranfield_backend, counting_embedder, progress=False)
    assert restored.embedded == 1  # the index is shared by the session's tests (and copied to other backends)


def weighted_half_and_one(combination: str, bm25: float, vector: float) -> float:
    """The mean of a BM25 value weighted 0.5 and a vector value weighted 1, worked out by hand."""
    if combination == "arithmetic":
        return (0.5 * bm25 + vector) / 1.5
    if combination == "geometric":
        return (bm25 ** 0.5 * vector) ** (1 / 1.5)
    return 1.5 / (0.5 / bm25 + 1 / vector)


@pytest.mark.parametrize("combination", ["arithmetic", "geometric", "harmonic"])
def test_score_normalisation_fusion_explains_what_it_combined(searcher, combination):
    query = "boundary layer separation in supersonic flow"
    hits = searcher.search(query, k=20, fusion="min_max", combination=combination, weights={"bm25": 0.5,
                                                                                             "vector": 1.0})
    legs = searcher.retrieve(query)
    for hit in hits:
        for name, leg in (("bm25", hit.bm25), ("vector", hit.vector)):
            if leg is None:
                assert hit.id not in {h.id for h in legs[name]}
                continue
            scores = [h.score for h in legs[name]]
            expected = (leg.score - min(scores)) / (max(scores) - min(scores))
            assert legs[name][leg.rank - 1].id == hit.id and leg.normalized == pytest.approx(max(expected, 0.001))
    missed = 0.0 if combination == "arithmetic" else 0.001  # a 0 has no logarithm or inverse
    for hit in hits:
        values = {name: leg.normalized if leg else missed for name, leg in (("bm25", hit.bm25),
                                                                            ("vector", hit.vector))}
        assert hit.score == pytest.approx(weighted_half_and_one(combination, values["bm25"], values["vector"]))
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
