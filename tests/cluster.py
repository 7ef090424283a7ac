"""The test clusters: which ones the behaviour tests run on, and their nodes, stopped, killed and started again
with the node script (tests and bench)."""

from __future__ import annotations

import math
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from hybrid.backends.base import StoredDocument
from hybrid.backends.local import LocalBackend
from hybrid.backends.opensearch import Connection, OpenSearchBackend

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def listed_urls(variable: str) -> list[str]:
    """The URLs a test variable lists, comma-separated (one node of each version .ci/run starts)."""
    return [url for url in os.environ.get(variable, "").split(",") if url]


OPENSEARCH_URLS = listed_urls("HYBRID_TEST_OPENSEARCH")
ELASTICSEARCH_URLS = listed_urls("HYBRID_TEST_ELASTICSEARCH")
CLUSTERS = [*([f"opensearch@{url}" for url in OPENSEARCH_URLS] or ["opensearch"]),
            *([f"elasticsearch@{url}" for url in ELASTICSEARCH_URLS] or ["elasticsearch"])]
"""Every cluster the behaviour tests run on: each OpenSearch and Elasticsearch version .ci/run starts."""
OPENSEARCH_CLUSTERS = [kind for kind in CLUSTERS if kind.startswith("opensearch")]


class Nodes:
    """A test cluster's nodes (one or several), stopped, killed and started again with the node script."""

    def __init__(self, urls: str, engine: str = "opensearch") -> None:
        """``engine``: ``opensearch`` or ``elasticsearch``, whose node script started the nodes. The script
        is given the version the nodes answer with, so that it starts that installation again."""
        self.urls, self.engine = urls, engine
        self.count = len(urls.split(","))
        self.port = urlsplit(urls.split(",")[0]).port or 9200
        if engine == "elasticsearch":
            from hybrid.backends.elasticsearch import ElasticsearchBackend

            self.backend: OpenSearchBackend = ElasticsearchBackend(Connection(urls))
        else:
            self.backend = OpenSearchBackend(Connection(urls))
        self.version = self._version()

    def _version(self) -> str:
        """The version the first node runs, from its node info: Elasticsearch's integration-test
        distribution answers ``GET /`` with 405."""
        answer = self.backend.client.nodes.info(node_id="_local", metric="_none", filter_path="nodes.*.version")
        return next(iter(answer["nodes"].values()))["version"]

    def _script(self, command: str, node: int) -> None:
        variables = {f"{self.engine.upper()}_PORT": str(self.port), f"{self.engine.upper()}_VERSION": self.version}
        subprocess.run(["bash", str(DOCKER / f"{self.engine}-node.sh"), command, "--nodes", str(self.count),
                        "--node", str(node)], check=True, capture_output=True, timeout=300,
                       env={**os.environ, **variables})

    def stop(self, node: int) -> None:
        self._script("stop", node)

    def start(self, node: int) -> None:
        """Start the node again (the script waits until the cluster has all its nodes)."""
        self._script("start", node)

    def kill(self, node: int) -> None:
        self._script("kill", node)

    def restart(self, node: int) -> None:
        """Start the node again and wait until every shard has all its copies."""
        self.start(node)
        self.wait_green()

    def wait_green(self, index: str | None = None) -> None:
        self.backend._writes.cluster.health(index=index, wait_for_status="green", wait_for_nodes=str(self.count),
                                            timeout="100s", **self.backend._write_options)

    def kill_during(self, run: subprocess.Popen[str], ready: Callable[[], bool], index: Callable[[], str],
                    timeout: float = 900) -> tuple[int | None, str, str]:
        """SIGKILL the node holding ``index()``'s primary as soon as ``ready()`` while ``run`` works, let
        ``run`` finish, and start the node again. Returns the node killed (None: ``run`` ended first) and
        ``run``'s output and errors, each on one line."""
        victim = None
        try:
            wait_for(lambda: run.poll() is not None or ready(), timeout)
            if run.poll() is None:
                victim = self.primary_of(index())
                self.kill(victim)
            out, err = run.communicate(timeout=timeout)
        finally:
            if run.poll() is None:
                run.kill()
            if victim is not None:
                self.restart(victim)
        return victim, " ".join(out.split()), " ".join(err.split())

    def primary_of(self, index: str) -> int:
        """The node (1..N) that holds the primary of the index's first shard: killing it is the hard case."""
        shards = self.backend.client.cat.shards(index=index, format="json", h="shard,prirep,state,node")
        [primary] = [s for s in shards if s["shard"] == "0" and s["prirep"] == "p"]
        return int(primary["node"].removeprefix("node-"))


def copy_index(local: LocalBackend, name: str, cluster: OpenSearchBackend, index: str) -> int:
    """Write the embedded index ``name`` into ``index`` on the cluster: same documents, same vectors."""
    loaded, hashes = local.load(name), local.hashes(name)
    with cluster.writer(index, loaded.meta) as writer:
        writer.write([StoredDocument(doc_id, loaded.fields[row], hashes[doc_id], vectors)
                      for row, (doc_id, vectors) in enumerate(zip(loaded.ids, loaded.document_vectors()))])
        assert writer.commit() == []
    return len(loaded.ids)


def cli_args(backend: LocalBackend | OpenSearchBackend) -> list[str]:
    """The command-line options that choose ``backend``."""
    if isinstance(backend, LocalBackend):
        return ["--data-dir", str(backend.data_dir)]
    return [f"--{backend.engine}", backend.connection.url]


def same(got: object, expected: object) -> bool:
    """Equal, but for the last digit of a float32 score: Elasticsearch 9 may give the same vector one unit in
    the last place apart in two identical searches (seen once in 120 repeats of 30 queries on 2,000 vectors),
    and OpenSearch 3.6 a k-NN score from one shard copy or another, or in its explanation (0.8248464 and
    0.8248465, 0.7815212 and 0.7815213: seen in CI)."""
    if isinstance(got, float) and isinstance(expected, float):
        return math.isclose(got, expected, rel_tol=1e-6)
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(same(got[key], expected[key]) for key in got)
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(map(same, got, expected))
    return got == expected


def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting after {seconds:.0f} s")
        time.sleep(0.2)
