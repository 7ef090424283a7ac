"""The cluster embeds (#27): the index's model deployed in OpenSearch (ML Commons) on the real neural-search
nodes (``HYBRID_TEST_NEURAL``, 2.19 and 3.x, started by .ci/run without the internet), text-only queries
that rank as client-side ones, a foreign model left alone, and a cluster without ML Commons told so."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import onnx
import pytest
from click.testing import CliRunner

from hybrid.backends.local import LocalBackend
from hybrid.cli import cli
from hybrid.cluster_model import MARK, deploy_for, package, undeploy_for
from hybrid.embed import DEFAULT_MODEL
from hybrid.errors import BadRequestError, HybridError, IncompatibleIndexError
from hybrid.evaluate import load_queries
from hybrid.ingest import ingest
from hybrid.searcher import Searcher


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


def test_a_cluster_without_ml_commons_is_told_so_in_one_line(opensearch):
    shown = CliRunner().invoke(cli, ["model", "deploy", DEFAULT_MODEL, "--opensearch", opensearch.connection.url])
    assert shown.exit_code == 1
    assert shown.output.strip().splitlines() == [
        f"Error: {opensearch.location} has no ML Commons (the opensearch-ml plugin) on any node, so it cannot run "
        "models: install it, or embed on the client"]


@pytest.fixture(scope="module")
def deployed(neural, neural_cranfield):
    """The model of the neural node's Cranfield, deployed there (and undeployed by the last test)."""
    return deploy_for(neural, neural_cranfield)


def test_deploy_checks_the_clusters_vectors_and_a_rerun_reuses_the_model(neural, neural_cranfield, deployed):
    assert deployed.least_cosine >= 0.9999 and deployed.registered_now in (True, False)
    assert neural.meta(neural_cranfield).server_model == deployed.model_id
    shown = CliRunner().invoke(cli, ["model", "deploy", "--index", neural_cranfield,
                                     "--opensearch", neural.connection.url])
    assert shown.exit_code == 0, shown.output
    again = json.loads(shown.output)
    assert again["model_id"] == deployed.model_id and again["registered_now"] is False
    assert again["least_cosine"] >= 0.9999


def test_text_only_queries_rank_as_client_side_ones(neural, neural_cranfield, cranfield, embedder, deployed):
    """The same hits in the same order, vector leg and fused, from the query's text alone; and the request
    `hybrid pipeline create` prints sends text (a neural query naming the model), no vector."""
    here = Searcher(neural_cranfield, neural, embedder=embedder)
    there = Searcher(neural_cranfield, neural, embed_on="server")
    queries = list(load_queries(cranfield / "queries.jsonl").values())[:40]
    for mode in ("vector", "hybrid"):
        same = sum([hit.id for hit in there.search(query, mode=mode)]
                   == [hit.id for hit in here.search(query, mode=mode)] for query in queries)
        assert same >= 39, (mode, same)  # at most one tie ordered apart by float noise
    client, server = here.search(queries[0], mode="vector"), there.search(queries[0], mode="vector")
    assert [hit.score for hit in server] == pytest.approx([hit.score for hit in client], abs=1e-5)
    printed = CliRunner().invoke(cli, ["pipeline", "create", "hybrid-text", "--index", neural_cranfield,
                                       "--opensearch", neural.connection.url])
    assert printed.exit_code == 0, printed.output
    assert f'"model_id": "{deployed.model_id}"' in printed.output and '"query_text": "QUERY"' in printed.output
    assert "floats" not in printed.output
    CliRunner().invoke(cli, ["pipeline", "delete", "hybrid-text", "--opensearch", neural.connection.url])


def test_a_chunked_index_is_searched_by_the_same_windows(neural, cranfield, embedder, deployed, tmp_path):
    """Windows: the neural query scores each document by its best window, as the k-NN query does."""
    source = tmp_path / "part.jsonl"
    source.write_text("".join((cranfield / "corpus.jsonl").read_text().splitlines(keepends=True)[:150]))
    if neural.exists("cranfield-windows"):
        neural.delete("cranfield-windows")
    ingest(source, "cranfield-windows", neural, embedder, progress=False, chunking="128/64")
    assert deploy_for(neural, "cranfield-windows").model_id == deployed.model_id  # one model serves both
    here = Searcher("cranfield-windows", neural, embedder=embedder)
    there = Searcher("cranfield-windows", neural, embed_on="server")
    for query in list(load_queries(cranfield / "queries.jsonl").values())[:10]:
        assert [h.id for h in there.search(query, mode="vector")] == [h.id for h in here.search(query, mode="vector")]
    neural.delete("cranfield-windows")


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


def test_undeploy_removes_the_model_and_the_index_forgets_it(neural, neural_cranfield, deployed):
    assert undeploy_for(neural, neural_cranfield) == deployed.name
    assert neural.meta(neural_cranfield).server_model == ""
    with pytest.raises(IncompatibleIndexError, match="records no model deployed in the cluster"):
        Searcher(neural_cranfield, neural, embed_on="server").search("boundary layer")
    assert neural.request("GET", f"/_plugins/_ml/models/{deployed.model_id}")["model_state"] in ("UNDEPLOYED",
                                                                                                 "REGISTERED")
    with pytest.raises(HybridError, match="records no model deployed"):
        undeploy_for(neural, neural_cranfield)
