"""Fusion against hand-computed values: RRF (sum of weight / (rank_constant + rank)) and the score
normalisations (min_max, l2, z_score) with their weighted arithmetic, geometric and harmonic means."""

import math

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from hybrid.backends.base import LegHit
from hybrid.errors import BadRequestError, SourceError
from hybrid.evaluate import LegRuns, choose, fusion_grid
from hybrid.fusion import COMBINATIONS, METHODS, MIN_SCORE, Fusion, LegRank, combine, normalize, rrf
from hybrid.settings import SearchSettings


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
    assert by_id["a"].legs == {"bm25": LegRank(1, 3.0, 1 / 61), "vector": None}
    assert by_id["b"].legs == {"bm25": None, "vector": LegRank(1, 0.5, 1 / 61)}


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


@pytest.mark.parametrize(("method", "scores", "expected"), [
    ("min_max", [4.0, 2.0, 1.0], [1.0, 1 / 3, MIN_SCORE]),  # the minimum gets OpenSearch's floor, not 0
    ("min_max", [5.0], [1.0]),  # one hit
    ("min_max", [2.0, 2.0], [1.0, 1.0]),  # equal scores
    ("l2", [3.0, 4.0], [0.6, 0.8]),
    ("l2", [5.0], [1.0]),
    ("l2", [0.0, 0.0], [MIN_SCORE, MIN_SCORE]),
    ("l2", [3.0, -4.0], [0.6, MIN_SCORE]),  # a negative inner product gets the floor, as the others do
    ("z_score", [1.0, 2.0, 3.0], [MIN_SCORE, MIN_SCORE, 1.0]),  # sample std 1; at or below the mean: floor
    ("z_score", [-2.0, -1.0, 3.0], [MIN_SCORE, MIN_SCORE, 3 / math.sqrt(7)]),  # negative raw scores, std sqrt(7)
    ("z_score", [5.0], [1.0]),
    ("z_score", [2.0, 2.0, 2.0], [1.0, 1.0, 1.0]),
    ("min_max", [], []),
])
def test_normalisations(method, scores, expected):
    assert normalize(scores, method) == pytest.approx(expected)


@pytest.mark.parametrize(("combination", "values", "weights", "expected"), [
    ("arithmetic", {"bm25": 1.0, "vector": 0.5}, {"bm25": 0.5, "vector": 1.0}, (0.5 * 1.0 + 1.0 * 0.5) / 1.5),
    ("geometric", {"bm25": 0.25, "vector": 1.0}, {"bm25": 1.0, "vector": 1.0}, 0.5),
    ("geometric", {"bm25": 0.25, "vector": 1.0}, {"bm25": 2.0, "vector": 1.0}, math.exp(2 * math.log(0.25) / 3)),
    ("harmonic", {"bm25": 0.25, "vector": 1.0}, {"bm25": 1.0, "vector": 1.0}, 2 / (4 + 1)),
    ("harmonic", {"bm25": 0.5, "vector": 1.0}, {"bm25": 3.0, "vector": 1.0}, 4 / (3 / 0.5 + 1)),
    # a value that is not positive (l2 of a negative inner product) is left out, as OpenSearch does
    ("geometric", {"bm25": 0.64, "vector": -0.2}, {"bm25": 1.0, "vector": 1.0}, 0.64),
    ("harmonic", {"bm25": 0.64, "vector": 0.0}, {"bm25": 1.0, "vector": 1.0}, 0.64),
    # a zero weight drops a leg
    ("geometric", {"bm25": 0.25, "vector": 1.0}, {"bm25": 0.0, "vector": 1.0}, 1.0),
    ("arithmetic", {"bm25": 0.25, "vector": 1.0}, {"bm25": 0.0, "vector": 0.0}, 0.0),
])
def test_combinations(combination, values, weights, expected):
    assert combine(values, weights, combination) == pytest.approx(expected)


def test_min_max_worked_example_with_a_missing_leg_and_a_tie():
    # bm25 normalises to a 1, b 1/3, c 0.001; vector to b 1, d 0.001 (its minimum).
    # A leg that missed a document counts 0 in the arithmetic mean, as in OpenSearch: a (1 + 0)/2,
    # b (1/3 + 1)/2, c and d 0.001/2 each: that tie goes to d, ranked 2nd by its leg, before c, ranked 3rd.
    fused = Fusion("min_max")({"bm25": [("a", 4.0), ("b", 2.0), ("c", 1.0)], "vector": [("b", 0.9), ("d", 0.5)]})
    assert [hit.id for hit in fused] == ["b", "a", "d", "c"]
    scores = {hit.id: hit.score for hit in fused}
    assert scores["b"] == pytest.approx((1 / 3 + 1) / 2)
    assert scores["a"] == pytest.approx(1 / 2)
    assert scores["c"] == scores["d"] == pytest.approx(MIN_SCORE / 2)
    b = fused[0].legs
    assert b["bm25"] == LegRank(2, 2.0, pytest.approx(1 / 3)) and b["vector"] == LegRank(1, 0.9, 1.0)
    assert fused[1].legs["vector"] is None


@pytest.mark.parametrize("combination", ["arithmetic", "geometric", "harmonic"])
def test_a_legs_last_hit_outranks_a_document_that_leg_missed(combination):
    # "b" and "a" are both first in BM25; the vector leg returned "a" last (floored at 0.001) and missed "b".
    # Geometric and harmonic means count the miss as 0.001 (a 0 has no logarithm or inverse): a tie, which
    # goes to the better rank in either leg, "b".
    fused = Fusion("min_max", combination)({"bm25": [("b", 2.0), ("a", 2.0), ("c", 1.0)],
                                            "vector": [("c", 0.9), ("a", 0.1)]})
    scores = {hit.id: hit.score for hit in fused}
    order = [hit.id for hit in fused]
    if combination == "arithmetic":
        assert scores["a"] == pytest.approx((1 + MIN_SCORE) / 2) and scores["b"] == pytest.approx(1 / 2)
        assert order.index("a") < order.index("b")
    else:
        assert scores["a"] == pytest.approx(scores["b"])
        assert order.index("b") < order.index("a")


ranked_list = st.lists(st.tuples(st.sampled_from("abcdefghij"), st.floats(-5, 5)), max_size=12).map(
    lambda hits: sorted(hits, key=lambda hit: -hit[1]))


@given(bm25=ranked_list, vector=ranked_list, method=st.sampled_from(METHODS),
       combination=st.sampled_from(COMBINATIONS), weight=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
       limit=st.integers(0, 12))
def test_a_limit_gives_the_head_of_the_whole_list(bm25, vector, method, combination, weight, limit):
    # duplicates within a leg, equal scores, ties between documents and a leg of weight 0 included
    fusion = Fusion(method, combination, {"bm25": weight})
    whole = fusion({"bm25": bm25, "vector": vector})
    assert fusion({"bm25": bm25, "vector": vector}, limit) == whole[:limit]
    assert {hit.id for hit in whole} == {doc_id for doc_id, _ in bm25 + vector}

    def documented_order(hit):
        if method == "rrf":
            return -hit.score, hit.id
        return -hit.score, min(leg.rank for leg in hit.legs.values() if leg), hit.id

    assert whole == sorted(whole, key=documented_order)


def test_a_negative_limit_is_refused():
    with pytest.raises(ValueError, match="limit"):
        Fusion()({"bm25": [("a", 1.0)]}, -1)


def test_one_leg_keeps_its_order_under_every_method():
    # z_score floors everything at or below the mean: the floor's ties keep the leg's order
    leg = [("d", 9.0), ("a", 3.0), ("c", 2.0), ("b", 1.0)]
    for method in ("rrf", "min_max", "l2", "z_score"):
        assert [hit.id for hit in Fusion(method)({"bm25": leg})] == ["d", "a", "c", "b"], method


def test_rrf_weights_divide_and_ties_keep_going_to_the_smaller_id():
    # 1/80 (rank 20 in one leg) equals 2/160 (rank 100 in both): an exact tie, broken by id as always
    bm25 = [(f"b{i}", 1.0) for i in range(1, 20)] + [("zz", 1.0)] + [(f"c{i}", 1.0) for i in range(21, 100)]
    bm25.append(("aa", 1.0))
    vector = [(f"v{i}", 1.0) for i in range(1, 100)] + [("aa", 1.0)]
    fused = rrf({"bm25": bm25, "vector": vector}, rank_constant=60)
    scores = {hit.id: hit.score for hit in fused}
    assert scores["aa"] == scores["zz"] == 1 / 80
    assert [hit.id for hit in fused].index("aa") < [hit.id for hit in fused].index("zz")
    weighted = rrf({"bm25": [("a", 1.0)], "vector": [("b", 1.0)]}, weights={"bm25": 0.3, "vector": 0.3})
    assert weighted[0].score == 0.3 / 61  # weight / (rank_constant + rank), not weight * (1 / (...))


def test_fusion_refuses_unknown_methods_and_negative_weights():
    with pytest.raises(ValueError, match="fusion method must be one of"):
        Fusion("minmax")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="combination must be one of"):
        Fusion("min_max", "median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weights must be zero or more"):
        Fusion("l2", weights={"bm25": -1.0})
    with pytest.raises(ValueError, match="weights must be zero or more .and finite."):
        Fusion("rrf", weights={"bm25": math.inf})
    with pytest.raises(ValueError, match="weights must map legs to numbers"):
        Fusion("rrf", weights={"bm25": "1"})  # type: ignore[dict-item]


def test_settings_file_round_trip_and_every_mistake_in_one_refused_naming_the_file(tmp_path):
    settings = SearchSettings(fusion="z_score", combination="harmonic", weights={"bm25": 0.75, "vector": 1.0},
                              window=50)
    settings.save(tmp_path / "tuned.json")
    assert SearchSettings.load(tmp_path / "tuned.json") == settings
    for text, message in (('{"fusion": "linear"}', "fusion method must be one of rrf, min_max, l2, z_score"),
                          ('{"window": "100"}', "window must be a whole number"),
                          ('{"window": 2.5}', "window must be a whole number"),
                          ('{"weights": null}', "weights must map legs to numbers"),
                          ('{"weights": {"bm25": Infinity}}', "finite"),
                          ('{"rank_constant": 0}', "rank_constant must be at least 1"),
                          ('{"rank_constant": "60"}', "rank_constant must be a whole number"),
                          ("[1, 2]", "expected a JSON object of settings, got list"),
                          ('{"windw": 10}', "unknown setting 'windw'"),
                          ('{"window": true}', "window must be a whole number, got True"),
                          ('{"rank_constant": false}', "rank_constant must be a whole number"),
                          ('{"weights": {"bm25": true}}', "weights must map legs to numbers"),
                          ('{"weights": {"bm25": 0, "vector": 0}}', "give every leg 0"),
                          ('{"window": 10,\n}', r"line 2 column 1: not JSON")):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(SourceError, match=message) as refused:
            SearchSettings.load(tmp_path / "bad.json")
        assert str(refused.value).startswith(str(tmp_path / "bad.json"))  # the file is named


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=6)
SETTING_NAMES = st.sampled_from([*SearchSettings.__dataclass_fields__, "windw", ""])


@hypothesis_settings(deadline=None)  # the first example pays for imports
@given(st.dictionaries(SETTING_NAMES, JSON | st.dictionaries(st.sampled_from(["bm25", "vector", "x"]), JSON)))
def test_any_json_object_is_settings_that_round_trip_or_refused_as_a_source_error(data):
    try:
        loaded = SearchSettings.from_dict(data, "f.json")
    except SourceError as refused:
        assert str(refused).startswith("f.json: ")
        return
    assert SearchSettings.from_dict(loaded.to_dict()) == loaded


def test_settings_that_would_rank_every_hit_zero_are_refused_in_a_search_too(tmp_path):
    from hybrid.backends.local import LocalBackend
    from hybrid.searcher import Searcher

    with pytest.raises(BadRequestError, match="give every leg 0"):  # before the index is even looked up
        Searcher("absent", LocalBackend(tmp_path)).search("boundary layer", weights={"bm25": 0, "vector": 0.0})


def legs(bm25, vector):
    return {"bm25": [LegHit(i, s) for i, s in bm25], "vector": [LegHit(i, s) for i, s in vector]}


def test_tuner_chooses_a_score_method_where_no_rank_fusion_can_win():
    # q1: BM25 is sure (10 vs 1) and the vector leg unsure (0.80 vs 0.79); q2 the other way round. Ranks
    # alone cannot tell which leg to trust: RRF gets at most one query right whatever its weights (with
    # equal weights both are ties, which the ids give to the wrong documents). Scores can.
    runs = LegRuns({
        "q1": legs([("z-rel1", 10.0), ("a-x1", 1.0), ("f1", 0.5)], [("a-x1", 0.80), ("z-rel1", 0.79), ("f1", 0.1)]),
        "q2": legs([("a-x2", 5.0), ("z-rel2", 4.9), ("f2", 0.1)], [("z-rel2", 0.9), ("a-x2", 0.1), ("f2", 0.05)]),
    })
    qrels = {"q1": {"z-rel1": 1}, "q2": {"z-rel2": 1}}
    rrf_score, _ = choose(runs, qrels, fusion_grid(["rrf"]), metric="mrr")
    best_score, best = choose(runs, qrels, fusion_grid(), metric="mrr")
    assert rrf_score == pytest.approx(0.75)
    assert best_score == pytest.approx(1.0) and best.fusion != "rrf"
