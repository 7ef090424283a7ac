"""A cluster's writes and errors against real nodes (OpenSearch, and Elasticsearch where parametrised over
``cluster``): rejected documents, outages, and error messages."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cluster import Nodes, cli_args

from hybrid.backends.base import IndexMeta, StoredDocument, WriteFailure
from hybrid.backends.elasticsearch import ElasticsearchBackend
from hybrid.backends.opensearch import Connection, IndexLayout, OpenSearchBackend, OpenSearchWriter
from hybrid.errors import ClusterUnavailableError, HybridError, IndexNotFoundError
from hybrid.searcher import Searcher

ROOT = Path(__file__).resolve().parents[1]


def fresh(backend: OpenSearchBackend, index: str) -> str:
    if backend.exists(index):
        backend.delete(index)
    return index


def test_mapping_comes_from_the_file_with_meta():
    meta = IndexMeta("some/model", 768, ("title", "body"))
    body = OpenSearchBackend(Connection())._index_body(meta, IndexLayout(3, 1))
    assert body["settings"]["index"]["knn"] is True
    assert (body["settings"]["index"]["number_of_shards"], body["settings"]["index"]["number_of_replicas"]) == (3, 1)
    vector = body["mappings"]["properties"]["hybrid_vector"]
    assert (vector["dimension"], vector["method"]["space_type"], vector["method"]["engine"]) == (
        768, "innerproduct", "lucene")
    assert body["mappings"]["properties"]["body"]["analyzer"] == "english"
    assert body["mappings"]["_meta"]["hybrid"]["model"] == "some/model"


def test_rejected_documents_are_reported_by_id_and_the_rest_written(cluster):
    index = fresh(cluster, "rejects")
    meta = IndexMeta("all-MiniLM-L6-v2", 4)
    unit = np.array([[0.5, 0.5, 0.5, 0.5]], dtype=np.float32)
    documents = [
        StoredDocument("good-1", {"title": "a", "text": "one", "year": 1999}, "h1", unit),
        StoredDocument("short-vector", {"title": "b", "text": "two", "year": 2000}, "h2", unit[:, :3]),
        StoredDocument("bad-year", {"title": "c", "text": "three", "year": "not a year"}, "h3", unit),
        StoredDocument("good-2", {"title": "d", "text": "four", "year": 2001}, "h4", unit),
    ]
    with cluster.writer(index, meta) as writer:  # maps "year" as a number first: written and committed
        writer.write(documents[:1])  # before the rest, which bulk threads would otherwise send in any order
        assert writer.commit() == []
    with cluster.writer(index, meta) as writer:
        writer.write(documents[1:])
        failures = writer.commit()
    assert {f.id for f in failures} == {"short-vector", "bad-year"}
    assert all(f.reason.startswith("400") for f in failures)
    assert cluster.count(index) == 2
    cluster.delete(index)


def test_documents_the_cluster_cannot_take_for_now_are_sent_again_and_said(cluster, monkeypatch):
    """As when the node holding a shard's primary has just died: two documents come back 503, unwritten."""
    index = fresh(cluster, "transient")
    unit = np.array([[0.5, 0.5, 0.5, 0.5]], dtype=np.float32)
    documents = [StoredDocument(f"d{i}", {"title": "t", "text": f"document {i}"}, f"h{i}", unit) for i in range(5)]
    send = OpenSearchWriter._bulk
    unavailable = {"d1", "d3"}

    def first_time_unavailable(writer, actions):
        held = [a for a in actions if a["_id"] in unavailable]
        unavailable.clear()
        return send(writer, [a for a in actions if a not in held]) + [
            WriteFailure(a["_id"], "503: unavailable_shards_exception", 503) for a in held]

    monkeypatch.setattr(OpenSearchWriter, "_bulk", first_time_unavailable)
    with cluster.writer(index, IndexMeta("all-MiniLM-L6-v2", 4)) as writer:
        writer.write(documents)
        assert writer.commit() == []
    assert writer.retried == ["ingest: 2 documents were not taken for now (503: unavailable_shards_exception)"]
    assert set(cluster.hashes(index)) == {d.id for d in documents}
    cluster.delete(index)


def test_cli_writes_a_failure_report_and_exits_non_zero(cluster, tmp_path):
    index = fresh(cluster, "cli-rejects")
    source = tmp_path / "docs.jsonl"
    records = [{"_id": "1", "title": "t", "text": "first", "year": 1999},
               {"_id": "2", "title": "t", "text": "second", "year": "soon"}]
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = tmp_path / "failures.jsonl"
    # The shorter first document is sent first and maps "year" as a number.
    result = hybrid("ingest", str(source), "--index", index, *cli_args(cluster),
                    "--failures", str(report), "--quiet")
    assert result.returncode == 1
    assert "1 documents were rejected" in result.stderr and str(report) in result.stderr
    [failure] = [json.loads(line) for line in report.read_text().splitlines()]
    assert failure["id"] == "2" and "year" in failure["reason"]
    assert cluster.count(index) == 1
    cluster.delete(index)


@pytest.mark.parametrize("backend_class", [OpenSearchBackend, ElasticsearchBackend])
def test_one_line_errors(backend_class):
    product = backend_class.errors.product
    unreachable = backend_class(Connection("http://user:secret@127.0.0.1:9", retries=1, api_key="key-secret"))
    with pytest.raises(HybridError, match=rf"cannot reach {product} at http://127.0.0.1:9 ") as info:
        unreachable.names()
    assert "secret" not in str(info.value) and "secret" not in repr(unreachable.connection)
    several = backend_class(Connection(" http://u:secret@127.0.0.1:9, https://127.0.0.1:10 ,"))
    assert several.location == "http://127.0.0.1:9,https://127.0.0.1:10"
    with pytest.raises(HybridError, match=rf"cannot reach {product} at http://127.0.0.1:9,https://127.0.0.1:10"):
        several.names()


def test_the_command_line_tells_the_engines_apart(cluster, tmp_path):
    """``--opensearch URL`` is used as whichever engine answers there (Elasticsearch says its build flavour)."""
    index = fresh(cluster, "which-engine")
    ingested = hybrid("ingest", str(ROOT / "examples" / "sample" / "corpus.jsonl"), "--index", index,
                      "--opensearch", cluster.connection.url, "--quiet")
    assert ingested.returncode == 0, ingested.stderr
    assert cluster.meta(index).dimension == 384 and cluster.count(index) == 16
    cluster.delete(index)


def test_a_dead_node_in_the_list_is_passed_over(cluster):
    """Nothing listens at the first URL: requests move on to the node that answers, at once."""
    both = type(cluster)(Connection(f"http://127.0.0.1:9,{cluster.connection.url}"))
    started = time.monotonic()
    for _ in range(4):
        both.names()
    assert time.monotonic() - started < 2


def test_layout_settings_from_the_environment_are_checked(monkeypatch):
    monkeypatch.setenv("OPENSEARCH_SHARDS", "3")
    monkeypatch.setenv("OPENSEARCH_REPLICAS", "0")
    assert (Connection.from_env().shards, Connection.from_env().replicas) == (3, 0)
    monkeypatch.setenv("OPENSEARCH_SHARDS", "0")
    with pytest.raises(HybridError, match="OPENSEARCH_SHARDS='0': give a whole number of at least 1"):
        Connection.from_env()


def test_missing_index_names_it(cluster):
    with pytest.raises(IndexNotFoundError, match="index 'no-such-index' does not exist in http://") as raised:
        Searcher("no-such-index", cluster).search("anything")
    assert raised.value.status == 404


def hybrid(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hybrid", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900)


def test_node_lost_midway_then_rerun_completes_without_duplicates(opensearch, cranfield):
    """Stop the node while ingest runs: the command fails clearly; restart and re-run: nothing lost."""
    index = fresh(opensearch, "outage")
    node = Nodes(opensearch.connection.url)
    source = cranfield / "corpus.jsonl"
    total = sum(1 for line in source.open() if line.strip())
    args = ("ingest", str(source), "--index", index, "--opensearch", opensearch.connection.url, "--quiet")
    run = subprocess.Popen([sys.executable, "-m", "hybrid", *args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run.poll() is None:
            with contextlib.suppress(ClusterUnavailableError):  # 503 while the new index's shard starts
                if opensearch.exists(index) and opensearch.count(index) > 0:
                    break
            time.sleep(0.5)
        node.stop(1)
        _, stderr = run.communicate(timeout=300)
    finally:
        node.start(1)
    assert run.returncode == 1
    assert f"cannot reach OpenSearch at {opensearch.connection.url}" in stderr
    opensearch.client.cluster.health(index=index, wait_for_status="yellow")
    written = opensearch.count(index)
    assert 0 < written < total

    result = hybrid(*args)
    assert result.returncode == 0, result.stderr
    assert f"embedded {total - written}, unchanged {written}" in result.stdout.replace("\n", " ")
    assert opensearch.count(index) == total
    assert len(opensearch.hashes(index)) == total
    opensearch.delete(index)
