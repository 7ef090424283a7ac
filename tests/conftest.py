"""Shared fixtures: the real bundled model, real collections from ../shared/data, real backends."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# ONNX exports of models given by name go to a folder of this run: every run exercises the export.
os.environ["HYBRID_ENCODER_DIR"] = tempfile.mkdtemp(prefix="hybrid-encoders-")

from cluster import CLUSTERS, OPENSEARCH_CLUSTERS, OPENSEARCH_URLS, listed_urls  # noqa: E402

from hybrid.backends.local import LocalBackend  # noqa: E402
from hybrid.backends.opensearch import Connection, OpenSearchBackend  # noqa: E402
from hybrid.embed import Embedder  # noqa: E402
from hybrid.ingest import ingest  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def collection(name: str) -> Path:
    """A BEIR folder from ../shared/data, or skip: the data is not part of the repository."""
    folder = DATA / name
    if not (folder / "corpus.jsonl").exists():
        pytest.skip(f"test collection {folder} is absent (tests read ../shared/data beside the repository)")
    return folder


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="session")
def cranfield() -> Path:
    return collection("cranfield")


@pytest.fixture(scope="session")
def local_cranfield(tmp_path_factory, embedder, cranfield) -> LocalBackend:
    """Cranfield ingested once, with the real model, into a local index named "cranfield"."""
    backend = LocalBackend(tmp_path_factory.mktemp("indexes"))
    ingest(cranfield / "corpus.jsonl", "cranfield", backend, embedder, progress=False)
    return backend


class CountingEmbedder(Embedder):
    """The real model, counting how many texts it was asked to encode."""

    def __init__(self) -> None:
        super().__init__()
        self.encoded = 0

    def encode(self, texts, batch_size=32):
        self.encoded += len(texts)
        return super().encode(texts, batch_size)


@pytest.fixture
def counting_embedder(embedder) -> CountingEmbedder:
    counting = CountingEmbedder()
    counting.model = embedder.model  # share the loaded weights
    return counting


class FailingEmbedder(Embedder):
    """The real model, failing on its second call, as a crash in the middle of a write would."""

    calls = 0

    def encode(self, texts, batch_size=32):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("encoder crashed")
        return super().encode(texts, batch_size)


@pytest.fixture
def failing_embedder(embedder) -> FailingEmbedder:
    failing = FailingEmbedder()
    failing.model = embedder.model
    return failing


SKIPPED = {
    "opensearch": "HYBRID_TEST_OPENSEARCH is not set: start a node with docker/opensearch-node.sh start and set "
                  "HYBRID_TEST_OPENSEARCH=http://127.0.0.1:9200 (.ci/run starts 2.19 and 3.x)",
    "elasticsearch": "HYBRID_TEST_ELASTICSEARCH is not set: start a node with docker/elasticsearch-node.sh start and "
                     "set HYBRID_TEST_ELASTICSEARCH=http://127.0.0.1:9250 (.ci/run starts 9.x and 8.x)",
}
_clusters: dict[str, OpenSearchBackend] = {}


def cluster_backend(kind: str) -> OpenSearchBackend:
    """The cluster of one of ``CLUSTERS`` (``ENGINE@URL``: a backend made once per URL), or skip when none is set."""
    engine, _, url = kind.partition("@")
    if not url:
        pytest.skip(SKIPPED[engine])
    if kind not in _clusters:
        if engine == "elasticsearch":
            from hybrid.backends.elasticsearch import ElasticsearchBackend

            backend: OpenSearchBackend = ElasticsearchBackend(Connection(url))
        else:
            backend = OpenSearchBackend(Connection(url))
        backend.client.cluster.health(wait_for_status="yellow")
        _clusters[kind] = backend
    return _clusters[kind]


@pytest.fixture(scope="session", params=OPENSEARCH_CLUSTERS)
def opensearch(request) -> OpenSearchBackend:
    """Each real OpenSearch node in turn (2.19 and 3.x in .ci/run); the tests' indexes are deleted before use."""
    return cluster_backend(request.param)


_cranfield: dict[str, OpenSearchBackend] = {}


def holding_cranfield(backend: OpenSearchBackend, local_cranfield: LocalBackend, embedder: Embedder,
                      cranfield: Path) -> OpenSearchBackend:
    """``backend`` with Cranfield as index "cranfield", written once per cluster: ingested on the first
    OpenSearch, copied from the embedded index (same documents and vectors) on the others (ingest on each is
    tested on its own)."""
    if backend.location not in _cranfield:
        if backend.exists("cranfield"):
            backend.delete("cranfield")
        if backend.engine == "opensearch" and backend.connection.url == OPENSEARCH_URLS[0]:
            ingest(cranfield / "corpus.jsonl", "cranfield", backend, embedder, progress=False)
        else:
            from cluster import copy_index

            copy_index(local_cranfield, "cranfield", backend, "cranfield")
        _cranfield[backend.location] = backend
    return backend


@pytest.fixture(scope="session")
def opensearch_cranfield(opensearch, local_cranfield, embedder, cranfield) -> OpenSearchBackend:
    return holding_cranfield(opensearch, local_cranfield, embedder, cranfield)


@pytest.fixture(scope="session", params=CLUSTERS)
def cluster(request):
    """Each cluster in turn (OpenSearch 2.19 and 3.x, Elasticsearch 9.x and 8.x)."""
    return cluster_backend(request.param)


@pytest.fixture(params=["local", *CLUSTERS])
def any_backend(request, tmp_path):
    """Each backend in turn: a fresh embedded folder, then each cluster."""
    if request.param == "local":
        return LocalBackend(tmp_path / "indexes")
    return cluster_backend(request.param)


@pytest.fixture(scope="session", params=["local", *CLUSTERS])
def cranfield_backend(request, local_cranfield, embedder, cranfield):
    """Every backend holding Cranfield as index "cranfield"; behaviour tests run once per backend."""
    if request.param == "local":
        return local_cranfield
    return holding_cranfield(cluster_backend(request.param), local_cranfield, embedder, cranfield)


@pytest.fixture(scope="session")
def other_space_model(tmp_path_factory) -> str:
    """A real model with the default's dimension but another vector space (a fixed random linear map)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models

    from hybrid.embed import DEFAULT_MODEL, resolve_model_path

    base = SentenceTransformer(resolve_model_path(DEFAULT_MODEL))
    dense = models.Dense(384, 384, bias=False, activation_function=torch.nn.Identity())
    with torch.no_grad():  # not a rotation: that would keep every inner product, hiding a mix-up
        dense.linear.weight.copy_(torch.randn(384, 384, generator=torch.Generator().manual_seed(7)))
    path = tmp_path_factory.mktemp("rotated")
    SentenceTransformer(modules=[*base, dense, models.Normalize()]).save(str(path))
    return str(path)


@pytest.fixture(scope="session", params=listed_urls("HYBRID_TEST_NEURAL") or [None])
def neural(request) -> OpenSearchBackend:
    """Each node with neural-search (OpenSearch's own hybrid query: 2.19 and 3.x in .ci/run), or skip when none
    is set."""
    if request.param is None:
        pytest.skip("HYBRID_TEST_NEURAL is not set: start a node with OPENSEARCH_PORT=9220 docker/opensearch-node.sh "
                    "start --neural and set HYBRID_TEST_NEURAL=http://127.0.0.1:9220 (.ci/run does both)")
    return OpenSearchBackend(Connection(request.param))


@pytest.fixture(scope="session")
def neural_cranfield(neural, local_cranfield) -> str:
    """Cranfield on the neural-search node, copied from the embedded index (same vectors)."""
    from cluster import copy_index

    if neural.exists("cranfield"):
        neural.delete("cranfield")
    copy_index(local_cranfield, "cranfield", neural, "cranfield")
    return "cranfield"


@pytest.fixture(scope="session", params=[urls for urls in os.environ.get("HYBRID_TEST_CLUSTER", "").split(" ") if urls]
                or [None])
def nodes(request):
    """Each three-node test cluster (HYBRID_TEST_CLUSTER: each cluster's URLs, comma-separated; clusters apart
    by a space), whose nodes tests may kill and start again, or skip when none is set."""
    from cluster import Nodes

    if request.param is None:
        pytest.skip("HYBRID_TEST_CLUSTER is not set: start a cluster with OPENSEARCH_PORT=9210 "
                    "docker/opensearch-node.sh start --nodes 3 and set HYBRID_TEST_CLUSTER="
                    "http://127.0.0.1:9210,http://127.0.0.1:9211,http://127.0.0.1:9212 (.ci/run does both)")
    found = Nodes(request.param)
    found.wait_green()
    return found
