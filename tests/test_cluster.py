"""A three-node cluster: index layout, rankings that do not depend on shards, and nodes that die.

Runs against the cluster that .ci/run starts with ``docker/opensearch-node.sh start --nodes 3``
(``HYBRID_TEST_CLUSTER``: the nodes' URLs, comma-separated); the fault tests kill one of its nodes with
SIGKILL while work runs, and start it again afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from cluster import Nodes, copy_index

from hybrid.backends.opensearch import Connection, OpenSearchBackend
from hybrid.cli import cli
from hybrid.evaluate import load_queries
from hybrid.searcher import Searcher


def fresh(backend: OpenSearchBackend, index: str) -> str:
    if backend.exists(index):
        backend.delete(index)
    return index


def laid_out(nodes: Nodes, shards: int | None = None, replicas: int | None = None) -> OpenSearchBackend:
    return OpenSearchBackend(Connection(nodes.urls, shards=shards, replicas=replicas))


@pytest.fixture(scope="module")
def cranfield_queries(cranfield) -> list[str]:
    return list(load_queries(cranfield / "queries.jsonl").values())


def test_layout_is_chosen_recorded_and_kept_by_a_reindex(nodes, cranfield, tmp_path):
    source = tmp_path / "few.jsonl"
    source.write_text("".join(line for line in list(open(cranfield / "corpus.jsonl"))[:40]))
    runner = CliRunner()

    def run(*args: str) -> dict:
        result = runner.invoke(cli, [*args, "--opensearch", nodes.urls])
        assert result.exit_code == 0, result.output
        return result

    def info(index: str) -> dict:
        return json.loads(run("index", "info", index).output)

    default = fresh(nodes.backend, "layout-default")
    run("ingest", str(source), "--index", default, "--quiet")
    assert (info(default)["number_of_shards"], info(default)["number_of_replicas"]) == (1, 1)  # 3 data nodes

    chosen = fresh(nodes.backend, "layout-chosen")
    run("ingest", str(source), "--index", chosen, "--shards", "3", "--replicas", "2", "--quiet")
    assert (info(chosen)["number_of_shards"], info(chosen)["number_of_replicas"]) == (3, 2)
    run("reindex", "--index", chosen, "--chunk", "64/32", "--quiet")
    assert (info(chosen)["number_of_shards"], info(chosen)["number_of_replicas"]) == (3, 2)  # kept
    run("reindex", "--index", chosen, "--chunk", "off", "--shards", "2", "--replicas", "0", "--quiet")
    assert (info(chosen)["number_of_shards"], info(chosen)["number_of_replicas"], info(chosen)["count"]) == (2, 0, 40)
    run("ingest", str(source), "--index", chosen, "--replicas", "1", "--quiet")  # replicas change in place
    assert info(chosen)["number_of_replicas"] == 1

    local = runner.invoke(cli, ["ingest", str(source), "--index", "x", "--shards", "2", "--data-dir", str(tmp_path)])
    assert local.exit_code == 2 and "--shards and --replicas lay out an index on a cluster" in local.output
    for index in (default, chosen):
        nodes.backend.delete(index)


def test_three_shards_rank_as_one(nodes, local_cranfield, cranfield_queries):
    """Each leg returns the global best documents: the k-NN leg's k is per shard, and BM25 scores with
    the whole index's term statistics (dfs), so three shards give one shard's ranking and scores."""
    one = fresh(nodes.backend, "shards-one")
    three = fresh(nodes.backend, "shards-three")
    copy_index(local_cranfield, "cranfield", laid_out(nodes, shards=1, replicas=0), one)
    copy_index(local_cranfield, "cranfield", laid_out(nodes, shards=3, replicas=0), three)
    assert nodes.backend.layout(nodes.backend.snapshot(three).version).shards == 3
    exact = Searcher("cranfield", local_cranfield)
    on_one, on_three = Searcher(one, nodes.backend), Searcher(three, nodes.backend)
    found = wanted = 0
    for query in cranfield_queries[:40]:
        best = {hit.id for hit in exact.search(query, k=100, mode="vector")}
        found += len(best & {hit.id for hit in on_three.search(query, k=100, mode="vector")})
        wanted += len(best)
        bm25_one, bm25_three = on_one.search(query, k=20, mode="bm25"), on_three.search(query, k=20, mode="bm25")
        assert [h.bm25.score for h in bm25_three] == pytest.approx([h.bm25.score for h in bm25_one], rel=1e-4)
    assert found / wanted >= 0.99  # recall@100 of the 3-shard HNSW leg against exact inner product
    for index in (one, three):
        nodes.backend.delete(index)


@pytest.fixture
def replicated(nodes, local_cranfield) -> str:
    """Cranfield on the cluster with one replica (the default on three data nodes)."""
    index = fresh(nodes.backend, "replicated")
    copy_index(local_cranfield, "cranfield", nodes.backend, index)
    nodes.wait_green(index)
    yield index
    nodes.backend.delete(index)


def test_queries_keep_being_answered_while_a_node_dies(nodes, replicated, cranfield_queries):
    searcher = Searcher(replicated, OpenSearchBackend(Connection(nodes.urls)))
    victim = nodes.primary_of(nodes.backend.snapshot(replicated).version)
    errors: list[str] = []
    answered = 0
    try:
        for number, query in enumerate(cranfield_queries[:200]):
            if number == 50:
                nodes.kill(victim)
            try:
                answered += len(searcher.search(query, k=10)) == 10
            except Exception as error:  # counted, not raised: the figure is how many failed
                errors.append(f"{type(error).__name__}: {error}")
    finally:
        nodes.restart(victim)
    assert errors == [] and answered == 200


def hybrid_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hybrid", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_ingest_finishes_with_every_document_when_a_node_is_killed(nodes, cranfield):
    """kill -9 the node holding the primary while `hybrid ingest` writes: the command finishes by itself,
    and the index holds every document once."""
    index = fresh(nodes.backend, "faults-ingest")
    source = cranfield / "corpus.jsonl"
    ids = {json.loads(line)["_id"] for line in source.open() if line.strip()}
    run = hybrid_process("ingest", str(source), "--index", index, "--opensearch", nodes.urls, "--quiet")
    victim, out, err = nodes.kill_during(
        run, lambda: nodes.backend.exists(index) and nodes.backend.count(index) > 100,
        lambda: nodes.backend.snapshot(index).version)
    assert victim is not None, "the ingest ended before a node could be killed"
    assert run.returncode == 0, err
    assert f"{len(ids)} documents in the index" in out
    assert f"retried: ingest: http://127.0.0.1:{nodes.port + victim - 1} stopped answering" in out  # said
    assert set(nodes.backend.hashes(index)) == ids and nodes.backend.count(index) == len(ids)
    nodes.backend.delete(index)


def test_a_reindex_that_loses_a_node_leaves_one_version_serving_and_says_which(nodes, replicated):
    run = hybrid_process("reindex", "--index", replicated, "--chunk", "128/64", "--opensearch", nodes.urls, "--quiet")
    new = f"{replicated}_v2"
    client = nodes.backend.client
    victim, out, err = nodes.kill_during(
        run, lambda: client.indices.exists(index=new) and client.count(index=new)["count"] > 0, lambda: new)
    assert victim is not None, "the re-index ended before a node could be killed"
    serving = nodes.backend.snapshot(replicated).version
    if run.returncode == 0:
        assert serving == new and f"now serves {new}" in out
    else:
        assert serving == f"{replicated}_v1" and f"still serves {replicated}_v1" in err
    assert nodes.backend.count(replicated) == 1400
