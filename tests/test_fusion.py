"""RRF against hand-computed values: score(d) = sum of weight / (rank_constant + rank)."""

import pytest

from hybrid.fusion import LegRank, rrf


def test_document_in_both_legs_sums_its_reciprocal_ranks():
    fused = rrf({"bm25": [("a", 9.0), ("b", 7.0)], "vector": [("b", 0.9), ("c", 0.8)]}, rank_constant=60)
    scores = {hit.id: hit.score for hit in fused}
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["c"] == pytest.approx(1 / 62)
    assert [hit.id for hit in fused] == ["b", "a", "c"]


def test_missing_leg_is_none_and_adds_nothing():
    fused = rrf({"bm25": [("a", 3.0)], "vector": [("b", 0.5)]})
    by_id = {hit.id: hit for hit in fused}
    assert by_id["a"].legs == {"bm25": LegRank(1, 3.0), "vector": None}
    assert by_id["b"].legs == {"bm25": None, "vector": LegRank(1, 0.5)}


def test_ties_are_broken_by_id():
    # "z" and "m" are both rank 1 in one leg: equal scores, so the smaller id comes first.
    fused = rrf({"bm25": [("z", 1.0)], "vector": [("m", 1.0)]})
    assert [hit.id for hit in fused] == ["m", "z"]


def test_weights_and_rank_constant():
    fused = rrf({"bm25": [("a", 1.0), ("b", 0.5)], "vector": [("b", 0.9), ("a", 0.1)]},
                weights={"bm25": 0.5, "vector": 2.0}, rank_constant=1)
    scores = {hit.id: hit.score for hit in fused}
    assert scores["a"] == pytest.approx(0.5 / 2 + 2.0 / 3)
    assert scores["b"] == pytest.approx(0.5 / 3 + 2.0 / 2)
    assert fused[0].id == "b"


def test_worked_example_three_documents():
    # rank_constant 60: d1 = 1/61 + 1/63, d2 = 1/62 + 1/61, d3 = 1/63, d4 = 1/62
    fused = rrf({"bm25": [("d1", 5), ("d2", 4), ("d3", 3)], "vector": [("d2", 0.9), ("d4", 0.8), ("d1", 0.7)]})
    assert [(hit.id, round(hit.score, 6)) for hit in fused] == [
        ("d2", round(1 / 62 + 1 / 61, 6)),
        ("d1", round(1 / 61 + 1 / 63, 6)),
        ("d4", round(1 / 62, 6)),
        ("d3", round(1 / 63, 6)),
    ]


def test_invalid_arguments():
    with pytest.raises(ValueError, match="rank_constant"):
        rrf({"bm25": []}, rank_constant=0)
    with pytest.raises(ValueError, match="unknown legs"):
        rrf({"bm25": []}, weights={"vectr": 1.0})
