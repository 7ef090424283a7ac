"""Shared fixtures: the real bundled model, real collections from ../shared/data, real backends."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# ONNX exports of models given by name go to a folder of this run: every run exercises the export.
os.environ["HYBRID_ENCODER_DIR"] = tempfile.mkdtemp(prefix="hybrid-encoders-")

from cluster import CLUSTERS  # noqa: E402

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


def opensearch_url() -> str:
    """The test cluster (started by .ci/run with docker/opensearch-node.sh), or skip when none is set."""
    url = os.environ.get("HYBRID_TEST_OPENSEARCH")
    if not url:
        pytest.skip("HYBRID_TEST_OPENSEARCH is not set: start a node with docker/opensearch-node.sh start "
                    "and set HYBRID_TEST_OPENSEARCH=http://127.0.0.1:9200 (.ci/run does both)")
    return url


@pytest.fixture(scope="session")
def opensearch() -> OpenSearchBackend:
    """A real OpenSearch node; the tests' indexes are deleted before use."""
    backend = OpenSearchBackend(Connection(opensearch_url()))
    backend.client.cluster.health(wait_for_status="yellow")
    return backend


@pytest.fixture(scope="session")
def opensearch_cranfield(opensearch, embedder, cranfield) -> OpenSearchBackend:
    if opensearch.exists("cranfield"):
        opensearch.delete("cranfield")
    ingest(cranfield / "corpus.jsonl", "cranfield", opensearch, embedder, progress=False)
    return opensearch


_elasticsearch: dict[str, object] = {}


def cluster_backend(request: pytest.FixtureRequest, kind: str):
    """The cluster of one of ``CLUSTERS`` (an Elasticsearch backend made once per URL), or skip when none is set."""
    if kind == "opensearch":
        return request.getfixturevalue("opensearch")
    if kind == "elasticsearch":
        pytest.skip("HYBRID_TEST_ELASTICSEARCH is not set: start a node with docker/elasticsearch-node.sh start and "
                    "set HYBRID_TEST_ELASTICSEARCH=http://127.0.0.1:9250 (.ci/run starts 9.x and 8.x)")
    from hybrid.backends.elasticsearch import ElasticsearchBackend

    url = kind.partition("@")[2]
    if url not in _elasticsearch:
        backend = ElasticsearchBackend(Connection(url))
        backend.client.cluster.health(wait_for_status="yellow")
        _elasticsearch[url] = backend
    return _elasticsearch[url]


@pytest.fixture(scope="session", params=CLUSTERS)
def cluster(request):
    """Each cluster in turn (OpenSearch, Elasticsearch 9.x and 8.x)."""
    return cluster_backend(request, request.param)


@pytest.fixture(params=["local", *CLUSTERS])
def any_backend(request, tmp_path):
    """Each backend in turn: a fresh embedded folder, then each cluster."""
    if request.param == "local":
        return LocalBackend(tmp_path / "indexes")
    return cluster_backend(request, request.param)


@pytest.fixture(scope="session", params=["local", *CLUSTERS])
def cranfield_backend(request, local_cranfield):
    """Every backend holding Cranfield as index "cranfield"; behaviour tests run once per backend. Elasticsearch
    gets the embedded index's documents and vectors (ingest into it is tested on its own)."""
    if request.param in ("local", "opensearch"):
        return request.getfixturevalue(f"{request.param}_cranfield")
    from cluster import copy_index

    backend = cluster_backend(request, request.param)
    if backend.exists("cranfield"):
        backend.delete("cranfield")
    copy_index(local_cranfield, "cranfield", backend, "cranfield")
    return backend


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


@pytest.fixture(scope="session")
def neural() -> OpenSearchBackend:
    """A node with neural-search (OpenSearch's own hybrid query), or skip when none is set."""
    url = os.environ.get("HYBRID_TEST_NEURAL")
    if not url:
        pytest.skip("HYBRID_TEST_NEURAL is not set: start a node with OPENSEARCH_PORT=9220 docker/opensearch-node.sh "
                    "start --neural and set HYBRID_TEST_NEURAL=http://127.0.0.1:9220 (.ci/run does both)")
    return OpenSearchBackend(Connection(url))


@pytest.fixture(scope="session")
def neural_cranfield(neural, local_cranfield) -> str:
    """Cranfield on the neural-search node, copied from the embedded index (same vectors)."""
    from cluster import copy_index

    if neural.exists("cranfield"):
        neural.delete("cranfield")
    copy_index(local_cranfield, "cranfield", neural, "cranfield")
    return "cranfield"


@pytest.fixture(scope="session")
def nodes():
    """The three-node test cluster, whose nodes tests may kill and start again, or skip when none is set."""
    from cluster import Nodes

    urls = os.environ.get("HYBRID_TEST_CLUSTER")
    if not urls:
        pytest.skip("HYBRID_TEST_CLUSTER is not set: start a cluster with OPENSEARCH_PORT=9210 "
                    "docker/opensearch-node.sh start --nodes 3 and set HYBRID_TEST_CLUSTER="
                    "http://127.0.0.1:9210,http://127.0.0.1:9211,http://127.0.0.1:9212 (.ci/run does both)")
    found = Nodes(urls)
    found.wait_green()
    return found
