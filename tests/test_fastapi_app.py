"""The example FastAPI service (examples/fastapi_app.py), started with uvicorn on loopback and called over
real HTTP: the CLI's hits on both backends, hybrid's errors as statuses, and a node that stops."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cluster import OPENSEARCH_CLUSTERS, copy_index, same

from hybrid.backends.local import LocalBackend

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ["boundary layer separation in supersonic flow", "heat transfer at hypersonic speeds"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def service(env: dict[str, str], log: Path) -> Iterator[httpx.Client]:
    """The example app under uvicorn with ``env``, until it answers /health; stopped after the block."""
    port = free_port()
    clean = {name: value for name, value in os.environ.items() if name not in ("OPENSEARCH_URL", "HYBRID_DATA_DIR")}
    with log.open("w") as output:
        app = subprocess.Popen([sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1",
                                "--port", str(port)], cwd=ROOT, env={**clean, **env}, stdout=output, stderr=output)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.monotonic() + 120
            while True:
                assert app.poll() is None, f"the app exited: {log.read_text()}"
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, f"the app did not start: {log.read_text()}"
                    time.sleep(0.2)
            yield client
            assert app.poll() is None, f"the app died: {log.read_text()}"
    finally:
        app.terminate()
        app.wait(timeout=30)


def cli_hits(env: dict[str, str], query: str, *options: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "hybrid", "search", "--json", "--index", "cranfield", "-k", "10",
                           *options, query], env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("cranfield_backend", ["local", *OPENSEARCH_CLUSTERS], indirect=True)
def test_the_service_answers_as_the_cli_and_maps_errors(cranfield_backend, tmp_path):
    backend = cranfield_backend
    env = ({"HYBRID_INDEX": "cranfield", "HYBRID_DATA_DIR": str(backend.data_dir)} if isinstance(backend, LocalBackend)
           else {"HYBRID_INDEX": "cranfield", "OPENSEARCH_URL": backend.connection.url})
    with service(env, tmp_path / "app.log") as app:
        for query in QUERIES:
            answer = app.get("/search", params={"q": query, "k": 10})
            assert answer.status_code == 200, answer.text
            assert answer.json()["hits"] == cli_hits(env, query)
        author = app.get("/search", params={"q": QUERIES[0], "k": 1}).json()["hits"][0]["source"]["metadata"]["author"]
        filtered = app.get("/search", params={"q": QUERIES[0], "filter": f"metadata.author={author}"}).json()["hits"]
        assert filtered == cli_hits(env, QUERIES[0], "--filter", f"metadata.author={author}")
        for bad in ({"q": "   "}, {"q": "shock", "k": 0}, {"q": "shock", "mode": "fuzzy"}, {"q": "a", "filter": "x"},
                    {"q": "shock", "k": 100_000}, {"q": "shock", "offset": -1}, {"k": 3}, {"q": "a", "k": "ten"}):
            refused = app.get("/search", params=bad)
            assert refused.status_code == 400 and refused.json()["error"] == "BadRequestError", (bad, refused.text)
    with service({**env, "HYBRID_INDEX": "no-such-index"}, tmp_path / "missing.log") as app:
        missing = app.get("/search", params={"q": "shock"})
        assert missing.status_code == 404
        assert missing.json() == {"error": "IndexNotFoundError", "detail": "no such index"}
        assert app.get("/search", params={"q": " "}).status_code == 400  # checked before the index is looked up


def test_a_stopped_node_gives_503_and_the_service_stays_up(nodes, local_cranfield, tmp_path):
    """The service talks to the cluster's third node; that node is killed, then started again."""
    if nodes.backend.exists("service"):
        nodes.backend.delete("service")
    copy_index(local_cranfield, "cranfield", nodes.backend, "service")
    nodes.wait_green("service")
    node = nodes.count
    url = nodes.urls.split(",")[node - 1]
    with service({"HYBRID_INDEX": "service", "OPENSEARCH_URL": url}, tmp_path / "app.log") as app:
        before = app.get("/search", params={"q": QUERIES[0]})
        assert before.status_code == 200 and len(before.json()["hits"]) == 10
        nodes.kill(node)
        try:
            down = app.get("/search", params={"q": QUERIES[0]})
            assert down.status_code == 503 and down.headers["Retry-After"] == "1", down.text
            assert down.json()["error"] == "ClusterUnavailableError"
            assert "127.0.0.1" not in down.text  # where the cluster lives goes to the service's log only
            assert app.get("/health").status_code == 200
        finally:
            nodes.restart(node)
        after = app.get("/search", params={"q": QUERIES[0]})
        assert after.status_code == 200 and same(after.json()["hits"], before.json()["hits"])
