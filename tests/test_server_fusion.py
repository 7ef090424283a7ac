"""OpenSearch's own hybrid query through a pipeline hybrid writes: bodies, capabilities, and parity with
client-side fusion on a node with neural-search (``HYBRID_TEST_NEURAL``, started by .ci/run)."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner
from cluster import CLUSTERS, copy_index

from hybrid.backends.opensearch import Connection, OpenSearchBackend
from hybrid.cli import cli
from hybrid.errors import HybridError
from hybrid.evaluate import load_queries
from hybrid.fusion import MIN_SCORE, LegRank
from hybrid.hits import Hit
from hybrid.searcher import Searcher
from hybrid.server_fusion import (
    NeuralSearch,
    check_pipeline_name,
    create_pipeline,
    delete_pipeline,
    explains,
    hybrid_query,
    legs_explained,
    neural_search,
    pipeline_body,
    probe,
)
from hybrid.settings import SearchSettings

V2_19, V3_1 = NeuralSearch((2, 19, 1, 0)), NeuralSearch((3, 1, 0, 0))
TIED = 1e-5
"""Scores this close are one tie: OpenSearch fuses in float32, and normalises the k-NN score ``1 + ip``."""


def test_the_probe_wants_neural_search_on_every_node():
    rows = [{"name": "a", "component": "opensearch-knn", "version": "2.19.1.0"},
            {"name": "a", "component": "opensearch-neural-search", "version": "2.19.1.0"},
            {"name": "b", "component": "opensearch-neural-search", "version": "2.19.1.0"}]
    assert probe(rows, {"a", "b"}) == V2_19 and V2_19.supports("rrf") and not V2_19.supports("z_score")
    assert probe(rows, {"a", "b", "c"}).version is None  # c lacks it: a search there could not fuse
    assert probe(rows[:1], {"a"}).version is None and "no neural-search" in str(probe(rows[:1], {"a"}))


def test_pipelines_say_what_fuses_and_refuse_what_this_version_cannot():
    rrf = pipeline_body(SearchSettings(rank_constant=20), V2_19)
    assert rrf["phase_results_processors"] == [
        {"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": 20}}}]
    assert rrf["response_processors"] == [{"hybrid_score_explanation": {}}]
    assert rrf["description"].startswith("hybrid:")
    weighted = SearchSettings(fusion="l2", combination="harmonic", weights={"bm25": 0.25, "vector": 1.0})
    [processor] = pipeline_body(weighted, V2_19)["phase_results_processors"]
    assert processor == {"normalization-processor": {
        "normalization": {"technique": "l2"},
        "combination": {"technique": "harmonic_mean", "parameters": {"weights": [0.2, 0.8]}}}}
    with pytest.raises(HybridError, match="z_score on the server needs neural-search 3.0"):
        pipeline_body(SearchSettings(fusion="z_score"), V2_19)
    with pytest.raises(HybridError, match="weighted RRF on the server needs neural-search 3.1"):
        pipeline_body(SearchSettings(weights={"bm25": 2.0, "vector": 1.0}), V2_19)
    ranked = pipeline_body(SearchSettings(weights={"bm25": 3.0, "vector": 1.0}), V3_1)["phase_results_processors"]
    assert ranked[0]["score-ranker-processor"]["combination"]["parameters"] == {"weights": [0.75, 0.25]}
    with pytest.raises(HybridError, match="client-side fusion is what searches use"):
        pipeline_body(SearchSettings(), NeuralSearch(None))
    for name in ("*", "a,b", "x/../y", "", "_all"):
        with pytest.raises(HybridError, match="invalid pipeline name"):
            check_pipeline_name(name)


def test_the_explanation_is_trusted_only_where_opensearch_gets_it_right():
    assert explains(V2_19, windows=False) and not explains(V2_19, windows=True)  # neural-search #1876
    assert explains(NeuralSearch((3, 8, 0, 0)), windows=True)
    assert not explains(NeuralSearch((2, 18, 0, 0)), windows=False) and not explains(NeuralSearch(None), False)


def test_pipelines_need_a_cluster(tmp_path):
    result = CliRunner().invoke(cli, ["pipeline", "show", "hybrid-rrf", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "search pipelines live on an OpenSearch cluster: add --opensearch" in result.output


def test_a_node_without_neural_search_is_told_so(opensearch):
    assert neural_search(opensearch).version is None
    with pytest.raises(HybridError, match="no neural-search plugin"):
        create_pipeline(opensearch, "hybrid-test", SearchSettings())


def test_pipeline_create_show_delete_round_trip(neural, neural_cranfield):
    runner = CliRunner()
    url = ["--opensearch", neural.connection.url]
    created = runner.invoke(cli, ["pipeline", "create", "hybrid-rrf", "--index", neural_cranfield, *url])
    assert created.exit_code == 0, created.output
    assert "GET cranfield/_search?search_pipeline=hybrid-rrf" in created.output and "384 floats" in created.output
    shown = runner.invoke(cli, ["pipeline", "show", "hybrid-rrf", "--index", neural_cranfield, *url])
    assert shown.exit_code == 0 and '"score-ranker-processor"' in shown.output and "search_pipeline" in shown.output
    neural.put_search_pipeline("someone-elses", {"description": "theirs", "phase_results_processors": []})
    for command in (["create", "someone-elses", "--index", neural_cranfield], ["delete", "someone-elses"]):
        refused = runner.invoke(cli, ["pipeline", *command, *url])
        assert refused.exit_code == 1 and "was not written by hybrid" in refused.output
    assert neural.search_pipeline("someone-elses") is not None
    neural.delete_search_pipeline("someone-elses")
    assert runner.invoke(cli, ["pipeline", "delete", "hybrid-rrf", *url]).exit_code == 0
    assert neural.search_pipeline("hybrid-rrf") is None


def same_but_ties(one: list[tuple[str, float]], other: list[tuple[str, float]], score_tolerance: float) -> bool:
    """Two rankings with the same scores in the same places (to ``score_tolerance``) and the same ids
    among each run of tied scores, except the last, which the cut at k may split differently."""
    if len(one) != len(other) or any(abs(a - b) > score_tolerance for (_, a), (_, b) in zip(one, other)):
        return False
    cuts = [0] + [place for place in range(1, len(one)) if one[place - 1][1] - one[place][1] > TIED]
    runs = list(zip(cuts, cuts[1:]))  # every run of ties but the last
    return all({i for i, _ in one[start:end]} == {i for i, _ in other[start:end]} for start, end in runs)


@pytest.mark.parametrize(("settings", "score_tolerance", "needs"), [
    (SearchSettings(), TIED, None),
    (SearchSettings(fusion="min_max"), MIN_SCORE / 2, None),
    (SearchSettings(fusion="z_score"), MIN_SCORE / 2, ("z_score", "z_score on the server needs neural-search 3.0")),
    (SearchSettings(weights={"bm25": 2.0, "vector": 1.0}), TIED,
     ("rrf weights", "weighted RRF on the server needs neural-search 3.1")),
], ids=["rrf", "min_max", "z_score", "rrf_weighted"])
def test_the_server_fuses_as_hybrid_does(neural, neural_cranfield, cranfield, embedder, settings, score_tolerance,
                                         needs, caplog):
    """The same candidates fused by OpenSearch through hybrid's pipeline and by hybrid itself: the same
    scores in the same places, ties aside (OpenSearch orders them by its internal document number, hybrid
    by id). min_max and z_score count a leg's miss as 0 in the arithmetic mean on both sides; OpenSearch
    lifts only a leg's exact minimum (min_max) or what is at or below the mean (z_score) to MIN_SCORE
    where hybrid lifts all below MIN_SCORE (see fusion.py), which moves a score by up to MIN_SCORE times
    the leg's share of the weights. Weighted RRF's scores are OpenSearch's weights, which add up to 1: the
    client-side score over the weights' sum. Where the node's neural-search cannot fuse so, the searcher
    says that once and fuses client-side (``needs``: the neural-search feature, and what is said without it)."""
    if needs and not neural_search(neural).supports(needs[0]):
        assert needs[1] in fused_on_server_falls_back(neural, neural_cranfield, settings, embedder, caplog)
        return
    create_pipeline(neural, "hybrid-parity", settings)
    searcher = Searcher(neural_cranfield, neural, embedder=embedder, settings=settings)
    weights = settings.weights.values()
    scale = sum(weights) if settings.fusion == "rrf" and len(set(weights)) > 1 else 1.0  # see pipeline_body
    queries = list(load_queries(cranfield / "queries.jsonl").values())[:50]
    same = 0
    for query, vector in zip(queries, embedder.encode(queries)):
        body = hybrid_query(query, vector.tolist(), 10, settings, windows=False)
        served = neural.client.search(index=neural_cranfield, body=body, params={"search_pipeline": "hybrid-parity"})
        server = [(hit["_id"], hit["_score"] * scale) for hit in served["hits"]["hits"]]
        client = [(hit.id, hit.score) for hit in searcher.search(query, k=10)]
        same += same_but_ties(server, client, score_tolerance)
    delete_pipeline(neural, "hybrid-parity")
    assert same == len(queries), json.dumps({"same": same, "queries": len(queries)})


def warnings_of(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def places(hit: Hit) -> tuple:
    """What a hit is and where each leg put it: equal on two searches of one query (what fusion combined
    follows from the ranks, or from the scores ``scores`` compares)."""
    return hit.id, hit.bm25 and hit.bm25.rank, hit.vector and hit.vector.rank, hit.source, hit.explained


def scores(hit: Hit) -> list[float]:
    """A hit's fused and raw scores, which may differ in their last float32 digits between two searches
    (seen in the k-NN leg on OpenSearch 3.x: 0.5098035 and 0.5098037), more once normalised."""
    return [hit.score, *(leg.score for leg in (hit.bm25, hit.vector) if leg)]


def fused_on_server_falls_back(backend, index, settings, embedder, caplog) -> str:
    """Search on ``backend`` asking to fuse on the server: the hits client-side fusion gives, and the one
    thing said about it (three searches, said once)."""
    here = Searcher(index, backend, embedder=embedder, settings=settings)
    there = Searcher(index, backend, embedder=embedder, settings=settings, fusion_on="server")
    caplog.set_level(logging.WARNING, logger="hybrid")
    for query in ("boundary layer", "shock waves", "heat transfer"):
        asked, fused = there.search(query, explain=True), here.search(query)
        assert [places(hit) for hit in asked] == [places(hit) for hit in fused]
        assert [s for hit in asked for s in scores(hit)] == pytest.approx([s for hit in fused for s in scores(hit)],
                                                                          rel=1e-5)
    [said] = warnings_of(caplog)
    assert said.endswith(": fusing client-side")
    return said


def test_an_embedded_index_fuses_here_saying_so_once(local_cranfield, embedder, caplog):
    assert "has no server to fuse on" in fused_on_server_falls_back(local_cranfield, "cranfield", SearchSettings(),
                                                                     embedder, caplog)


@pytest.mark.parametrize("cranfield_backend", [kind for kind in CLUSTERS if kind.startswith("elasticsearch")],
                         indirect=True)
def test_elasticsearch_fuses_here_saying_what_it_has_once(cranfield_backend, embedder, caplog):
    said = fused_on_server_falls_back(cranfield_backend, "cranfield", SearchSettings(), embedder, caplog)
    assert "rrf retriever is not available here (unknown retriever [rrf])" in said  # the test nodes lack its module


def test_a_node_without_neural_search_fuses_here_saying_so_once(opensearch_cranfield, embedder, caplog):
    said = fused_on_server_falls_back(opensearch_cranfield, "cranfield", SearchSettings(), embedder, caplog)
    assert "no neural-search plugin" in said


def test_an_index_of_several_shards_fuses_here_saying_so_once(neural, local_cranfield, embedder, caplog):
    """OpenSearch's hybrid query takes pagination_depth, k and BM25 statistics per shard."""
    sharded = OpenSearchBackend(Connection(neural.connection.url, shards=2, replicas=0))
    if sharded.exists("cranfield-2-shards"):
        sharded.delete("cranfield-2-shards")
    copy_index(local_cranfield, "cranfield", sharded, "cranfield-2-shards")
    said = fused_on_server_falls_back(sharded, "cranfield-2-shards", SearchSettings(), embedder, caplog)
    assert "has 2 shards" in said
    sharded.delete("cranfield-2-shards")


def test_an_explanation_of_another_shape_is_not_read_as_legs():
    """neural-search before 3.8 collapses the sub-queries into one block when something wraps the hybrid
    query (a nested field, an alias filter, document-level security): that block is not the BM25 leg."""
    def detail(value, raw, description):
        return {"value": value, "description": "rrf, rank_constant [60] normalization of:",
                "details": [{"value": raw, "description": description, "details": []}]}

    bm25 = detail(1 / 62, 21.3, "weight(hybrid_text:law in 99) [PerFieldSimilarity], result of:")
    vector = detail(1 / 61, 1.72, "within top 100")
    both = {"value": 0.03, "description": "rrf combination of:", "details": [bm25, vector]}
    vector_leg = LegRank(1, pytest.approx(0.72), 1 / 61)
    assert legs_explained(both, SearchSettings()) == {"bm25": LegRank(2, 21.3, 1 / 62), "vector": vector_leg}
    assert legs_explained({"details": [vector]}, SearchSettings()) == {"vector": vector_leg}
    collapsed = {"value": 0.016, "description": "rrf combination of:",
                 "details": [detail(0.016, 21.3, "combined score of:")]}
    for odd in (collapsed, {"details": [bm25, bm25]}, {"details": []}, {}, None):
        assert legs_explained(odd, SearchSettings()) is None


def test_searches_fuse_on_the_server_as_they_would_here(neural, neural_cranfield, cranfield, embedder, caplog):
    """Searcher(fusion_on="server") against client-side fusion, RRF: the same hits in the same order
    (ties ordered by id on both sides), and from OpenSearch's explanation the same rank and raw score
    of each leg; the same with filters and on a later page; nothing said, since nothing fell back."""
    here = Searcher(neural_cranfield, neural, embedder=embedder)
    there = Searcher(neural_cranfield, neural, embedder=embedder, fusion_on="server")
    caplog.set_level(logging.WARNING, logger="hybrid")
    queries = list(load_queries(cranfield / "queries.jsonl").values())[:30]

    def legs(hit):
        return [(leg.rank, round(leg.score, 3)) if leg else None for leg in (hit.bm25, hit.vector)]

    for query in queries:
        client, server = here.search(query, k=10), there.search(query, k=10, explain=True)
        assert [hit.id for hit in server] == [hit.id for hit in client], query
        assert [legs(hit) for hit in server] == [legs(hit) for hit in client], query
        assert [hit.score for hit in server] == pytest.approx([hit.score for hit in client], rel=1e-5)
        assert all(hit.explained and hit.source.get("title") for hit in server)
    author = here.search("boundary layer", k=1, mode="bm25")[0].source["metadata"]["author"]
    for call in ({"k": 5, "offset": 7}, {"k": 10, "filters": {"metadata.author": author}}):
        assert [h.id for h in there.search("boundary layer", **call)] == [h.id for h in here.search("boundary layer",
                                                                                                   **call)]
    assert there.search("boundary layer", k=10, offset=9990) == [] == here.search("boundary layer", offset=9990)
    unexplained = there.search(queries[0], k=3)
    assert not any(hit.explained or hit.bm25 or hit.vector for hit in unexplained)
    assert warnings_of(caplog) == []
    shown = CliRunner().invoke(cli, ["search", queries[0], "--index", neural_cranfield, "--fusion-on", "server",
                                     "--opensearch", neural.connection.url, "--json"])
    assert shown.exit_code == 0, shown.output
    assert [hit["bm25"]["rank"] for hit in json.loads(shown.output)] == [hit.bm25.rank if hit.bm25 else None
                                                                         for hit in here.search(queries[0])]
