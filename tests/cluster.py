"""The three-node test cluster's nodes, killed and started again with the node script (tests and bench)."""

from __future__ import annotations

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
ELASTICSEARCH_URLS = [url for url in os.environ.get("HYBRID_TEST_ELASTICSEARCH", "").split(",") if url]
CLUSTERS = ["opensearch", *([f"elasticsearch@{url}" for url in ELASTICSEARCH_URLS] or ["elasticsearch"])]
"""Every cluster the behaviour tests run on: OpenSearch, and each Elasticsearch version .ci/run starts."""


class Nodes:
    """The test cluster's nodes, killed and started again with the node script."""

    def __init__(self, urls: str, engine: str = "opensearch") -> None:
        """``engine``: ``opensearch`` or ``elasticsearch``, whose node script started the nodes."""
        self.urls, self.engine = urls, engine
        self.count = len(urls.split(","))
        self.port = urlsplit(urls.split(",")[0]).port or 9200
        if engine == "elasticsearch":
            from hybrid.backends.elasticsearch import ElasticsearchBackend

            self.backend: OpenSearchBackend = ElasticsearchBackend(Connection(urls))
        else:
            self.backend = OpenSearchBackend(Connection(urls))

    def _script(self, command: str, node: int) -> None:
        subprocess.run(["bash", str(DOCKER / f"{self.engine}-node.sh"), command, "--nodes", str(self.count),
                        "--node", str(node)], check=True, capture_output=True, timeout=300,
                       env={**os.environ, f"{self.engine.upper()}_PORT": str(self.port)})

    def kill(self, node: int) -> None:
        self._script("kill", node)

    def restart(self, node: int) -> None:
        """Start the node again and wait until every shard has all its copies."""
        self._script("start", node)
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


def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting after {seconds:.0f} s")
        time.sleep(0.2)
