"""Real Elasticsearch nodes, 9.x and 8.x (docker/elasticsearch-node.sh, started by .ci/run;
``HYBRID_TEST_ELASTICSEARCH`` lists their URLs): the mapping hybrid renders for Elasticsearch is accepted,
both legs answer in one ``_msearch`` with the filters inside the k-NN search, a vector's score is the
inner product as OpenSearch scores it, and a chunked index scores each document by its best window.
Spoken to over plain HTTP: what every Elasticsearch backend will build on."""

from __future__ import annotations

import json
import os

import httpx
import numpy as np
import pytest

from hybrid.backends.base import IndexMeta
from hybrid.backends.mapping import index_mapping
from hybrid.backends.opensearch import inner_product

URLS = [url for url in os.environ.get("HYBRID_TEST_ELASTICSEARCH", "").split(",") if url]
ONE_SHARD = {"number_of_shards": 1, "number_of_replicas": 0}
IDS_ONLY = {"_source": False, "stored_fields": "_none_", "docvalue_fields": ["hybrid_id"]}


@pytest.fixture(params=URLS or ["none"])
def node(request) -> httpx.Client:
    if request.param == "none":
        pytest.skip("HYBRID_TEST_ELASTICSEARCH is not set: start a node with docker/elasticsearch-node.sh start and "
                    "set HYBRID_TEST_ELASTICSEARCH=http://127.0.0.1:9250 (.ci/run starts 9.x and 8.x)")
    with httpx.Client(base_url=request.param, timeout=60) as client:
        yield client


def version(node: httpx.Client) -> str:
    """The node's version (this distribution answers ``GET /`` with 405)."""
    return next(iter(node.get("/_nodes/_local").raise_for_status().json()["nodes"].values()))["version"]


def analyzer(node: httpx.Client) -> str:
    """``english`` where the cluster has it (the analysis-common module), else ``standard``."""
    return "english" if node.post("/_analyze", json={"analyzer": "english", "text": "running"}).is_success \
        else "standard"


def fresh(node: httpx.Client, index: str, meta: IndexMeta) -> None:
    node.delete(f"/{index}", params={"ignore_unavailable": "true"}).raise_for_status()
    created = node.put(f"/{index}", json=index_mapping("elasticsearch", meta, ONE_SHARD, analyzer=analyzer(node)))
    assert created.status_code == 200, created.text


def bulk(node: httpx.Client, index: str, documents: list[dict]) -> None:
    lines = "".join(json.dumps({"index": {"_index": index, "_id": doc["hybrid_id"]}}) + "\n" + json.dumps(doc) + "\n"
                    for doc in documents)
    done = node.post("/_bulk", params={"refresh": "true"}, content=lines,
                     headers={"content-type": "application/x-ndjson"}).raise_for_status().json()
    assert not done["errors"], done


def msearch(node: httpx.Client, lines: list[dict]) -> list[dict]:
    body = "".join(json.dumps(line) + "\n" for line in lines)
    answer = node.post("/_msearch", content=body, headers={"content-type": "application/x-ndjson"})
    return answer.raise_for_status().json()["responses"]


def test_both_legs_answer_in_one_msearch_with_the_filter_inside_the_knn_search(node):
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)  # any length, negative products too
    documents = [{"hybrid_id": f"d{i}", "title": f"document {i}", "text": "apple pie" if i % 3 == 0 else "pear tart",
                  "topic": "a" if i % 2 == 0 else "b", "hybrid_vector": vectors[i].tolist()} for i in range(40)]
    fresh(node, "hybrid-es-check", IndexMeta("some/model", 8))
    bulk(node, "hybrid-es-check", documents)
    query = rng.normal(size=8).astype(np.float32)
    topic_a = [{"terms": {"topic": ["a"]}}]
    bm25, knn = msearch(node, [
        {"index": "hybrid-es-check", "search_type": "dfs_query_then_fetch", "allow_partial_search_results": False},
        {**IDS_ONLY, "size": 10, "query": {"bool": {"must": {"match": {"hybrid_text": "apple"}}, "filter": topic_a}}},
        {"index": "hybrid-es-check", "allow_partial_search_results": False},
        {**IDS_ONLY, "size": 5, "knn": {"field": "hybrid_vector", "query_vector": query.tolist(), "k": 5,
                                        "num_candidates": 40, "filter": {"bool": {"filter": topic_a}}}},
    ])
    assert {hit["fields"]["hybrid_id"][0] for hit in bm25["hits"]["hits"]} == {f"d{i}" for i in range(0, 40, 6)}
    exact = sorted(((float(vectors[i] @ query), f"d{i}") for i in range(0, 40, 2)), reverse=True)[:5]
    found = [(inner_product(hit["_score"]), hit["fields"]["hybrid_id"][0]) for hit in knn["hits"]["hits"]]
    assert [doc for _, doc in found] == [doc for _, doc in exact], version(node)
    assert [score for score, _ in found] == pytest.approx([score for score, _ in exact], abs=1e-5)


def test_a_chunked_document_scores_by_its_best_window(node):
    rng = np.random.default_rng(11)
    windows = [rng.normal(size=(count, 8)).astype(np.float32) for count in (1, 2, 3, 2, 1, 3)]
    documents = [{"hybrid_id": f"d{i}", "text": "words", "hybrid_windows": [{"vector": row.tolist()} for row in rows]}
                 for i, rows in enumerate(windows)]
    fresh(node, "hybrid-es-chunked", IndexMeta("some/model", 8, chunking="256/32"))
    bulk(node, "hybrid-es-chunked", documents)
    query = rng.normal(size=8).astype(np.float32)
    [answer] = msearch(node, [{"index": "hybrid-es-chunked"}, {**IDS_ONLY, "size": 6, "knn": {
        "field": "hybrid_windows.vector", "query_vector": query.tolist(), "k": 6, "num_candidates": 20}}])
    best = sorted(((float((rows @ query).max()), f"d{i}") for i, rows in enumerate(windows)), reverse=True)
    found = [(inner_product(hit["_score"]), hit["fields"]["hybrid_id"][0]) for hit in answer["hits"]["hits"]]
    assert [doc for _, doc in found] == [doc for _, doc in best]  # each document once, by its best window
    assert [score for score, _ in found] == pytest.approx([score for score, _ in best], abs=1e-5)


def test_what_this_distribution_lacks_is_known(node):
    """The integration-test distribution has no analysis-common (so no english analyzer: BM25 without
    stemming there) and no rrf retriever: the Elasticsearch backend must probe for both, not assume them."""
    modules = {module["name"] for module in
               next(iter(node.get("/_nodes/_local/plugins").raise_for_status().json()["nodes"].values()))["modules"]}
    assert ("analysis-common" in modules) == (analyzer(node) == "english")
    assert version(node).split(".")[0] in ("8", "9")
