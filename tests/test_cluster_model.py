"""The cluster embeds (#27): the index's model deployed in OpenSearch (ML Commons) on the real neural-search
nodes (``HYBRID_TEST_NEURAL``, 2.19 and 3.x, started by .ci/run without the internet), text-only queries
that rank as client-side ones, a foreign model left alone, and a cluster without ML Commons told so."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from hybrid import cluster_model
from hybrid.async_searcher import AsyncSearcher
from hybrid.backends.local import LocalBackend
from hybrid.backends.opensearch import TO_EMBED_FIELD, VECTOR_FIELD, WINDOWS_FIELD
from hybrid.cli import cli
from hybrid.cluster_model import MARK, SETUP_ADVICE, _advised, deploy_for, package, undeploy_for
from hybrid.embed import DEFAULT_MODEL, Embedder
from hybrid.errors import BadRequestError, HybridError, ServerModelError
from hybrid.evaluate import load_queries
from hybrid.ingest import ingest, reindex
from hybrid.searcher import Searcher

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_is_the_export_as_ml_commons_reads_it():
    """One .onnx and tokenizer.json at the root; the tokenizer truncates where the model reads and pads
    nothing; only the operator sets the graph uses are declared; the same model makes the same bytes."""
    made = package(DEFAULT_MODEL)
    assert made.sha256 == package(DEFAULT_MODEL).sha256
    with zipfile.ZipFile(io.BytesIO(made.content)) as archive:
        assert sorted(archive.namelist()) == ["model.onnx", "tokenizer.json"]
        tokenizer = json.loads(archive.read("tokenizer.json"))
        graph = onnx.load_from_string(archive.read("model.onnx"))
    assert tokenizer["truncation"]["max_length"] == 256 and tokenizer["padding"] is None
    assert {opset.domain for opset in graph.opset_import} == {node.domain for node in graph.graph.node} | {""}
    assert made.config == {"model_type": "bert", "embedding_dimension": 384, "framework_type": "sentence_transformers",
                           "pooling_mode": "mean", "normalize_result": True}


def test_embedding_on_the_server_needs_a_cluster_that_runs_models(tmp_path):
    with pytest.raises(BadRequestError, match="needs an OpenSearch cluster that runs models"):
        Searcher("anything", LocalBackend(tmp_path), embed_on="server")
    with pytest.raises(BadRequestError, match="embed_on must be one of client, server"):
        Searcher("anything", LocalBackend(tmp_path), embed_on="gpu")  # type: ignore[arg-type]


def test_a_cluster_without_ml_commons_is_told_so_in_one_line(opensearch, tmp_path):
    source = tmp_path / "one.jsonl"
    source.write_text('{"id": "1", "text": "shock waves"}\n')
    said = f"Error: {opensearch.location} has no ML Commons (the opensearch-ml plugin) on any node, so it cannot run "
    for command in (["model", "deploy", DEFAULT_MODEL], ["ingest", str(source), "--index", "never-made",
                                                           "--embed-on", "server"]):
        shown = CliRunner().invoke(cli, [*command, "--opensearch", opensearch.connection.url])
        assert shown.exit_code == 1
        assert shown.output.strip().splitlines() == [said + "models: install it, or embed on the client"]
    assert not opensearch.exists("never-made")


@pytest.fixture(scope="module")
def embeds(neural, local_cranfield):
    """Cranfield on the neural node, copied from the embedded index, for these tests alone: what they record
    in it (the deployed model) must not change what the other tests of that node print."""
    from cluster import copy_index

    if neural.exists("cranfield-embeds"):
        neural.delete("cranfield-embeds")
    copy_index(local_cranfield, "cranfield", neural, "cranfield-embeds")
    yield "cranfield-embeds"
    neural.delete("cranfield-embeds")


@pytest.fixture(scope="module")
def deployed(neural, embeds):
    """The model of that Cranfield, deployed there (and undeployed by the last test)."""
    return deploy_for(neural, embeds)


def test_deploy_checks_the_clusters_vectors_and_a_rerun_reuses_the_model(neural, embeds, deployed):
    assert deployed.least_cosine >= 0.9999
    assert deployed.name.startswith("hybrid/all-MiniLM-L6-v2/fp32/")  # named by the model and its package's hash
    assert neural.meta(embeds).server_model == deployed.model_id
    shown = CliRunner().invoke(cli, ["model", "deploy", "--index", embeds,
                                     "--opensearch", neural.connection.url])
    assert shown.exit_code == 0, shown.output
    again = json.loads(shown.output)
    assert again["model_id"] == deployed.model_id and again["registered_now"] is False
    assert again["least_cosine"] >= 0.9999


def test_text_only_queries_rank_as_client_side_ones(neural, embeds, cranfield, embedder, deployed):
    """The same hits in the same order, vector leg and fused, from the query's text alone; and the request
    `hybrid pipeline create` prints sends text (a neural query naming the model), no vector."""
    here = Searcher(embeds, neural, embedder=embedder)
    there = Searcher(embeds, neural, embed_on="server").warm_up()  # one neural search: the model serves
    queries = list(load_queries(cranfield / "queries.jsonl").values())[:40]
    for mode in ("vector", "hybrid"):
        same = sum([hit.id for hit in there.search(query, mode=mode)]
                   == [hit.id for hit in here.search(query, mode=mode)] for query in queries)
        assert same >= 39, (mode, same)  # at most one tie ordered apart by float noise
    client, server = here.search(queries[0], mode="vector"), there.search(queries[0], mode="vector")
    assert [hit.score for hit in server] == pytest.approx([hit.score for hit in client], abs=1e-5)
    fused_there = Searcher(embeds, neural, embed_on="server", fusion_on="server")
    assert [hit.id for hit in fused_there.search(queries[1])] == [hit.id for hit in here.search(queries[1])]

    async def searched_async() -> list[str]:
        async with AsyncSearcher(embeds, opensearch=neural.connection, embed_on="server") as searcher:
            return [hit.id for hit in await searcher.search(queries[2])]

    assert asyncio.run(searched_async()) == [hit.id for hit in here.search(queries[2])]
    printed = CliRunner().invoke(cli, ["pipeline", "create", "hybrid-text", "--index", embeds,
                                       "--opensearch", neural.connection.url])
    assert printed.exit_code == 0, printed.output
    assert f'"model_id": "{deployed.model_id}"' in printed.output and '"query_text": "QUERY"' in printed.output
    assert "floats" not in printed.output
    CliRunner().invoke(cli, ["pipeline", "delete", "hybrid-text", "--opensearch", neural.connection.url])


def test_eval_scores_queries_the_cluster_embeds_as_client_embedded_ones(neural, embeds, cranfield, deployed):
    """``hybrid eval --embed-on server`` (here through HYBRID_EMBED_ON) measures the text-only path: the
    same nDCG@10 as queries embedded here, to float noise; `index info` shows the model it uses."""
    args = ["eval", "--index", embeds, "--queries", str(cranfield / "queries.jsonl"), "--qrels",
            str(cranfield / "qrels" / "test.tsv"), "--modes", "vector,hybrid", "--metrics", "ndcg@10", "--json",
            "--opensearch", neural.connection.url]
    here = CliRunner().invoke(cli, args)
    there = CliRunner().invoke(cli, args, env={"HYBRID_EMBED_ON": "server"})
    assert here.exit_code == 0 and there.exit_code == 0, (here.output, there.output)
    for mode, scores in json.loads(here.stdout).items():
        assert json.loads(there.stdout)[mode]["ndcg@10"] == pytest.approx(scores["ndcg@10"], abs=0.002), mode
    info = CliRunner().invoke(cli, ["index", "info", embeds, "--opensearch", neural.connection.url])
    assert json.loads(info.stdout)["server_model"] == deployed.model_id


def test_a_chunked_index_is_searched_by_the_same_windows(neural, cranfield, embedder, deployed, tmp_path):
    """Windows: the neural query scores each document by its best window, as the k-NN query does."""
    source = tmp_path / "part.jsonl"
    source.write_text("".join((cranfield / "corpus.jsonl").read_text().splitlines(keepends=True)[:150]))
    if neural.exists("cranfield-windows"):
        neural.delete("cranfield-windows")
    ingest(source, "cranfield-windows", neural, embedder, progress=False, chunking="128/64")
    assert deploy_for(neural, "cranfield-windows").model_id == deployed.model_id  # one model serves both
    with pytest.raises(HybridError, match="also embeds for"):  # so undeploying it for one would break the other
        undeploy_for(neural, "cranfield-windows")
    here = Searcher("cranfield-windows", neural, embedder=embedder)
    there = Searcher("cranfield-windows", neural, embed_on="server")
    for query in list(load_queries(cranfield / "queries.jsonl").values())[:10]:
        assert [h.id for h in there.search(query, mode="vector")] == [h.id for h in here.search(query, mode="vector")]
    neural.delete("cranfield-windows")


@pytest.mark.parametrize("chunk", ["off", "128/64"])
def test_documents_embedded_by_the_cluster_are_hybrids_vectors(neural, cranfield, embedder, deployed, chunk, tmp_path):
    """`hybrid ingest --embed-on server` writes texts (each window, cut as hybrid cuts it) that the cluster
    embeds: the same vectors as hybrid's (cosine at least 0.9999), searched alike; a re-run embeds nothing,
    and a changed document is embedded again."""
    source = tmp_path / "part.jsonl"
    lines = (cranfield / "corpus.jsonl").read_text().splitlines(keepends=True)[:120]
    source.write_text("".join(lines))
    there, here = f"server-{chunk.replace('/', '-')}", f"client-{chunk.replace('/', '-')}"
    for name in (there, here):
        if neural.exists(name):
            neural.delete(name)
    ingest(source, here, neural, embedder, progress=False, chunking=chunk)
    url = ["--opensearch", neural.connection.url]
    command = ["ingest", str(source), "--index", there, "--chunk", chunk, "--embed-on", "server", "--quiet", *url]
    shown = CliRunner().invoke(cli, command)
    assert shown.exit_code == 0, shown.output
    assert f"model {deployed.model_id}" in shown.output and "embedded 120" in shown.output
    assert neural.meta(there).server_model == deployed.model_id
    field = WINDOWS_FIELD if chunk != "off" else VECTOR_FIELD
    theirs, ours = stored_vectors(neural, there, field), stored_vectors(neural, here, field)
    assert theirs.keys() == ours.keys() and len(theirs) == 120
    for doc_id, rows in ours.items():
        assert rows.shape == theirs[doc_id].shape, doc_id
        assert np.min(np.sum(rows * theirs[doc_id], axis=1)) >= 0.9999, doc_id
    searched_there = Searcher(there, neural, embed_on="server")
    searched_here = Searcher(here, neural, embedder=embedder)
    for query in list(load_queries(cranfield / "queries.jsonl").values())[:10]:
        assert [h.id for h in searched_there.search(query)] == [h.id for h in searched_here.search(query)], query
    again = CliRunner().invoke(cli, command)
    assert "embedded 0, unchanged 120" in again.output, again.output
    first = json.loads(lines[0])
    source.write_text(json.dumps({**first, "text": first["text"] + " revised"}) + "\n" + "".join(lines[1:]))
    assert "embedded 1, unchanged 119" in CliRunner().invoke(cli, command).output
    for name in (there, here):
        neural.delete(name)


def stored_vectors(backend, index: str, field: str) -> dict[str, np.ndarray]:
    """Each document's stored vectors (its windows' in a chunked index) as rows, by id."""
    # the whole _source: with a _source filter, 3.6 derives a nested vector of a lone window as 1
    hits = backend.client.search(index=index, body={"size": 1000})["hits"]["hits"]
    assert not any(TO_EMBED_FIELD in hit["_source"] for hit in hits)  # the pipeline removes the texts it embedded
    value = {hit["_id"]: hit["_source"][field] for hit in hits}
    return {doc_id: np.array([w["vector"] for w in rows] if field == WINDOWS_FIELD else [rows], dtype=np.float32)
            for doc_id, rows in value.items()}


def test_a_model_hybrid_did_not_register_is_left_alone(neural, deployed):
    """Another application's model (its group not made by hybrid) is neither undeployed nor changed."""
    name = f"someone-elses-{uuid.uuid4().hex[:8]}"
    group = neural.request("POST", "/_plugins/_ml/model_groups/_register",
                           {"name": name, "description": "not hybrid's"})["model_group_id"]
    foreign = neural.request("POST", "/_plugins/_ml/models/_register_meta", {
        "name": name, "model_group_id": group, "model_format": "ONNX", "total_chunks": 1,
        "model_content_hash_value": "0" * 64, "model_content_size_in_bytes": 1,
        "model_config": {"model_type": "bert", "embedding_dimension": 384,
                         "framework_type": "sentence_transformers"}})["model_id"]
    before = neural.request("GET", f"/_plugins/_ml/models/{foreign}")
    shown = CliRunner().invoke(cli, ["model", "undeploy", "--model-id", foreign, "--opensearch", neural.connection.url])
    assert shown.exit_code == 1
    assert shown.output.strip() == (f"Error: model {foreign} at {neural.location} was not registered by hybrid; "
                                    "it is left alone")
    assert neural.request("GET", f"/_plugins/_ml/models/{foreign}") == before
    ours = neural.request("GET", f"/_plugins/_ml/models/{deployed.model_id}")["model_group_id"]
    assert str(neural.request("GET", f"/_plugins/_ml/model_groups/{ours}")["description"]).startswith(MARK)


def test_a_cluster_that_refuses_uploads_is_told_which_setting_allows_them(neural, deployed, monkeypatch):
    """A production cluster's default refuses the chunked upload: the user reads ML Commons' words and the
    setting to change, in one line, and nothing is registered. (The package is taken for unregistered, so
    that the deploy uploads it, whatever the node holds from earlier runs.)"""
    copies = {"term": {"model_content_hash_value": package(DEFAULT_MODEL).sha256}}
    before = len(cluster_model._searched(neural, "models", copies))
    monkeypatch.setattr(cluster_model, "_registered", lambda *_: None)
    setting = "plugins.ml_commons.allow_registering_model_via_local_file"
    neural.client.cluster.put_settings(body={"transient": {setting: False}})
    try:
        shown = CliRunner().invoke(cli, ["model", "deploy", DEFAULT_MODEL, "--opensearch", neural.connection.url])
    finally:
        neural.client.cluster.put_settings(body={"transient": {setting: None}})
    assert shown.exit_code == 1
    [line] = shown.output.strip().splitlines()
    assert line.endswith(f"({SETUP_ADVICE[0][1]})") and "user needs to enable" in line, line
    assert len(cluster_model._searched(neural, "models", copies)) == before


def test_what_to_change_follows_ml_commons_own_words():
    said = "deploying m at http://x ended FAILED: ai.djl.engine.EngineException: Failed to save pytorch index file"
    assert _advised(said) == f"{said} ({SETUP_ADVICE[2][1]})"
    assert _advised("no eligible node found").endswith("plugins.ml_commons.only_run_on_ml_node: false)")
    for unrelated in ("model not found", "deploying hybrid/pytorch-minilm/fp32 at http://pytorch-os:9200 ended "
                                         "FAILED: Memory Circuit Breaker is open"):
        assert _advised(unrelated) == unrelated


def test_a_group_another_deploy_made_meanwhile_is_the_one_used(neural, deployed, monkeypatch):
    """Two deploys at once (or a retried request): the group did not exist when this one looked, and exists
    when it registers; ML Commons refuses the name again, naming the group, which is then used."""
    ours = neural.request("GET", f"/_plugins/_ml/models/{deployed.model_id}")["model_group_id"]
    monkeypatch.setattr(cluster_model, "_searched", lambda *_: [])
    assert cluster_model._group(neural, deployed.name) == ours


def test_undeploy_removes_the_model_and_the_index_forgets_it(neural, embeds, deployed, caplog):
    assert undeploy_for(neural, embeds) == deployed.name
    assert neural.meta(embeds).server_model == ""
    with pytest.raises(ServerModelError, match="records no model deployed in the cluster"):
        Searcher(embeds, neural, embed_on="server").search("boundary layer")
    # no node serves it; ML Commons' sync job may label that DEPLOY_FAILED if it runs while the undeploy ends
    model = neural.request("GET", f"/_plugins/_ml/models/{deployed.model_id}")
    assert model["model_state"] in ("UNDEPLOYED", "REGISTERED", "DEPLOY_FAILED")
    assert model.get("current_worker_node_count", 0) == 0, model
    with pytest.raises(HybridError, match="records no model deployed"):
        undeploy_for(neural, embeds)
    neural.record_meta(embeds, replace(neural.meta(embeds), server_model=deployed.model_id))  # as a rollback may
    try:
        with pytest.raises(ServerModelError, match=f"the model {embeds} records .* cannot serve: Model not ready"):
            Searcher(embeds, neural, embed_on="server").warm_up()  # said at start-up, not on a user's first query
        fused_there = Searcher(embeds, neural, embed_on="server", fusion_on="server")
        with caplog.at_level(logging.WARNING, logger="hybrid"), pytest.raises(ServerModelError, match="not ready"):
            fused_there.search("boundary layer")  # as the legs say it, not as the caller's bad request

        async def fused_there_async() -> None:
            async with AsyncSearcher(embeds, opensearch=neural.connection, embed_on="server",
                                     fusion_on="server") as searcher:
                await searcher.search("boundary layer")

        with pytest.raises(ServerModelError, match="not ready"):
            asyncio.run(fused_there_async())
        assert not [r.getMessage() for r in caplog.records if "fusing client-side" in r.getMessage()]
        shown = CliRunner().invoke(cli, ["search", "boundary layer", "--index", embeds, "--opensearch",
                                         neural.connection.url], env={"HYBRID_EMBED_ON": "server"})
        assert shown.exit_code == 1 and f"`hybrid model deploy --index {embeds}`" in shown.output, shown.output
    finally:
        neural.record_meta(embeds, replace(neural.meta(embeds), server_model=""))


def test_ingest_and_a_reindex_of_the_same_named_model_keep_the_deployed_model(tmp_path, embedder, other_space_model):
    """The record follows the vectors: kept while they stay the same model's, forgotten when a re-index
    switches models or re-embeds with a model folder (which may have been trained again in place)."""
    backend, sample = LocalBackend(tmp_path), ROOT / "examples" / "sample" / "corpus.jsonl"
    ingest(sample, "sample", backend, embedder, progress=False)
    backend.record_meta("sample", replace(backend.meta("sample"), server_model="model-1"))
    ingest(sample, "sample", backend, embedder, progress=False)
    reindex("sample", backend, embedder, progress=False)
    assert backend.meta("sample").server_model == "model-1"
    reindex("sample", backend, Embedder(other_space_model), progress=False, force=True)
    assert backend.meta("sample").server_model == ""
