"""The ONNX query encoder: the same vectors as sentence-transformers on torch, made once and reused, never
stale, int8 only where asked and recorded, and a query path that imports neither torch nor
sentence-transformers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybrid.backends.local import Bm25Matrix, LocalBackend
from hybrid.cli import cli
from hybrid.embed import DEFAULT_MODEL, Embedder, resolve_model_path
from hybrid.errors import HybridError, IncompatibleIndexError
from hybrid.ingest import ingest
from hybrid.onnx_encoder import (
    MANIFEST,
    OnnxEncoder,
    UnsupportedModelError,
    _load_query_encoder,
    ensure_export,
    export_encoder,
    export_folder,
    query_encoder_for,
)
from hybrid.searcher import Searcher

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample" / "corpus.jsonl"
HOSTILE_TEXTS = [
    "shock waves on a blunt body", "", " ", "line\u2028separator and next\u0085line", "nul\x00inside",
    "\u05e9\u05dc\u05d5\u05dd right-to-left \u202eoverride", "lone \ud800 surrogate", "emoji \U0001f30b",
    "word " * 600,  # beyond the model's 256 word pieces: both must truncate the same way
]


@pytest.fixture(scope="module")
def onnx() -> OnnxEncoder:
    return OnnxEncoder(ensure_export(DEFAULT_MODEL))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


def test_the_bundled_model_gives_torchs_vectors(onnx, embedder):
    assert onnx.dimension == embedder.dimension == 384 and onnx.precision == "fp32"
    vectors, expected = onnx.encode(HOSTILE_TEXTS), embedder.encode(HOSTILE_TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == expected.shape
    assert cosines(vectors, expected).min() > 0.99999
    assert np.abs(vectors - expected).max() < 1e-4
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=300), min_size=1, max_size=4))
def test_any_text_gets_torchs_vector(onnx, embedder, texts):
    assert cosines(onnx.encode(texts), embedder.encode(texts)).min() > 0.9999


def test_batches_and_threads_change_nothing(onnx):
    texts = [f"query number {n} about {'heat ' * n}" for n in range(40)]
    one_by_one = np.stack([onnx.encode([text])[0] for text in texts])
    assert np.allclose(onnx.encode(texts, batch_size=7), one_by_one, atol=1e-5)
    with ThreadPoolExecutor(8) as pool:
        threaded = np.stack(list(pool.map(lambda text: onnx.encode([text])[0], texts)))
    assert np.array_equal(threaded, one_by_one)


def test_the_export_is_made_once_and_reused(onnx):
    folder = export_folder(DEFAULT_MODEL)
    assert folder.parent == Path(os.environ["HYBRID_ENCODER_DIR"])
    made = (folder / MANIFEST).stat().st_mtime_ns
    assert ensure_export(DEFAULT_MODEL) == folder and (folder / MANIFEST).stat().st_mtime_ns == made
    assert query_encoder_for(DEFAULT_MODEL) is query_encoder_for(DEFAULT_MODEL)  # one per process
    # The folder is a sentence-transformers ONNX model too, for anyone who wants to load it that way.
    from sentence_transformers import SentenceTransformer

    file_name = json.loads((folder / MANIFEST).read_text())["onnx_file"]
    loaded = SentenceTransformer(str(folder), backend="onnx", model_kwargs={"file_name": file_name})
    texts = HOSTILE_TEXTS[:3]
    assert cosines(loaded.encode(texts, normalize_embeddings=True), onnx.encode(texts)).min() > 0.99999


def test_a_changed_model_is_exported_again_and_a_copied_one_is_not(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(resolve_model_path(DEFAULT_MODEL), model)
    export = ensure_export(str(model))
    assert export == model / "hybrid-onnx-fp32"
    made = (export / MANIFEST).stat().st_mtime_ns
    weights = model / "model.safetensors"
    os.utime(weights, ns=(time.time_ns(), time.time_ns() + 10**9))  # a copy: new times, same content
    assert ensure_export(str(model)) == export and (export / MANIFEST).stat().st_mtime_ns == made
    config = model / "sentence_bert_config.json"  # as a new fine-tune into the same folder would change it
    config.write_text(json.dumps({**json.loads(config.read_text()), "max_seq_length": 128}))
    assert ensure_export(str(model)) == export
    assert json.loads((export / MANIFEST).read_text())["max_length"] == 128
    assert cosines(OnnxEncoder(export).encode(HOSTILE_TEXTS), Embedder(str(model)).encode(HOSTILE_TEXTS)).min() > 0.9999
    assert not [p for p in model.iterdir() if p.name.startswith(".hybrid-onnx-fp32-")]  # no staging left


def test_export_never_replaces_a_folder_that_is_not_an_export(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("my only copy")
    result = CliRunner().invoke(cli, ["model", "export", DEFAULT_MODEL, "--output", str(precious)])
    assert result.exit_code == 1 and "is not an ONNX query encoder" in result.output
    assert (precious / "notes.txt").read_text() == "my only copy"


def test_a_model_the_export_cannot_reproduce_falls_back_to_torch(other_space_model, caplog, tmp_path):
    model = str(shutil.copytree(other_space_model, tmp_path / "model"))  # a path no earlier test loaded queries from
    with pytest.raises(UnsupportedModelError, match="Dense"):
        export_encoder(model)
    assert not (Path(model) / "hybrid-onnx-fp32").exists()
    assert isinstance(query_encoder_for(model, kind="auto"), Embedder)
    assert "queries use torch" in caplog.text
    with pytest.raises(UnsupportedModelError):
        query_encoder_for(model, kind="onnx")


def test_a_fine_tuned_model_carries_an_export_with_its_vectors(tmp_path, cranfield):
    from hybrid.finetune import FinetuneConfig, finetune
    from hybrid.sources import read_documents

    report = finetune(read_documents(cranfield / "corpus.jsonl")[:60], tmp_path / "tuned", config=FinetuneConfig(
        batch_size=8, learning_rate=1e-3, max_steps=2, dev_share=0.3, progress=False))
    export = Path(report.model) / "hybrid-onnx-fp32"
    assert (export / MANIFEST).is_file()  # made by finetune: queries against its index never wait for it
    texts = HOSTILE_TEXTS[:4] + ["aerodynamic heating of a cone"]
    tuned, base = Embedder(report.model).encode(texts), Embedder().encode(texts)
    assert cosines(OnnxEncoder(export).encode(texts), tuned).min() > 0.99999
    assert cosines(tuned, base).min() < 0.999  # the test means something: training moved the vectors


def test_searching_imports_neither_torch_nor_sentence_transformers(local_cranfield):
    script = (
        "import sys\n"
        "from hybrid.searcher import Searcher\n"
        f"searcher = Searcher('cranfield', data_dir={str(local_cranfield.data_dir)!r})\n"
        "hits = searcher.search('shock waves on blunt bodies', k=5)\n"
        "assert len(hits) == 5 and hits[0].vector is not None\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'transformers', 'bm25s', 'scipy')\n"
        "         if m in sys.modules]\n"
        "print(type(searcher.embedder).__name__, heavy)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "OnnxEncoder []"


def test_onnx_and_torch_queries_rank_alike(local_cranfield, embedder, onnx):
    queries = ["shock waves on blunt bodies", "heat transfer in laminar boundary layers", "flutter of wings"]
    by_torch = Searcher("cranfield", local_cranfield, embedder=embedder)
    by_onnx = Searcher("cranfield", local_cranfield, query_encoder="onnx")
    assert isinstance(by_onnx.embedder, OnnxEncoder)
    for query in queries:
        assert [h.id for h in by_torch.search(query, k=10)] == [h.id for h in by_onnx.search(query, k=10)]


def test_bm25_scores_read_without_bm25s_equal_its_own(local_cranfield):
    import bm25s

    folder = local_cranfield.load("cranfield").folder
    ours, theirs = Bm25Matrix(folder / "bm25"), bm25s.BM25.load(folder / "bm25")
    for terms in (["shock", "wave"], ["heat", "heat", "transfer"], ["nosuchterm"], ["shock", "nosuchterm"], []):
        known = [t for t in terms if t in theirs.vocab_dict]
        expected = theirs.get_scores(known) if known else np.zeros(theirs.scores["num_docs"])
        assert np.array_equal(ours.scores(terms), expected)


def test_int8_is_recorded_and_queries_follow_it(tmp_path):
    data = str(tmp_path / "indexes")
    runner = CliRunner()
    made = runner.invoke(cli, ["ingest", str(SAMPLE), "--index", "small", "--precision", "int8", "--quiet",
                               "--data-dir", data])
    assert made.exit_code == 0, made.output
    assert "all-MiniLM-L6-v2-int8" in made.output  # the int8 export queries will use
    backend = LocalBackend(data)
    assert backend.meta("small").precision == "int8"
    searcher = Searcher("small", backend)
    assert isinstance(searcher.embedder, OnnxEncoder) and searcher.embedder.precision == "int8"
    assert searcher.search("volcano eruption", k=1)[0].id == "volcanoes"
    again = runner.invoke(cli, ["ingest", str(SAMPLE), "--index", "small", "--quiet", "--data-dir", data])
    assert again.exit_code == 1 and "int8" in again.output and "same model and precision" in again.output
    torch_queries = runner.invoke(cli, ["search", "volcano", "--index", "small", "--query-encoder", "torch",
                                        "--data-dir", data])
    assert torch_queries.exit_code == 1 and "int8" in torch_queries.output
    assert len(torch_queries.output.strip().splitlines()) == 1


def test_an_int8_index_refuses_fp32_documents(tmp_path, embedder):
    backend = LocalBackend(tmp_path)
    from hybrid.onnx_encoder import document_encoder

    ingest(SAMPLE, "small", backend, document_encoder(DEFAULT_MODEL, "int8"), progress=False)
    with pytest.raises(IncompatibleIndexError, match="int8"):
        ingest(SAMPLE, "small", backend, embedder, progress=False)


def test_model_export_command_writes_a_folder_anyone_can_copy(tmp_path):
    result = CliRunner().invoke(cli, ["model", "export", DEFAULT_MODEL, "--output", str(tmp_path / "encoder")])
    assert result.exit_code == 0, result.output
    encoder = OnnxEncoder(tmp_path / "encoder")
    assert encoder.name == DEFAULT_MODEL and encoder.dimension == 384
    missing = CliRunner().invoke(cli, ["model", "export", str(tmp_path / "no-such-model")])
    assert missing.exit_code == 1 and "no such folder" in missing.output
    with pytest.raises(HybridError):
        OnnxEncoder(tmp_path / "no-such-export")


def test_an_export_of_the_other_precision_is_not_taken_for_this_one(tmp_path, monkeypatch, embedder):
    """An int8 export written by hand into the fp32 folder (`hybrid model export --precision int8 --output`
    that path) would encode an fp32 index's queries unlike its documents: it is made again at fp32."""
    monkeypatch.setenv("HYBRID_ENCODER_DIR", str(tmp_path))
    fp32_folder = export_folder(DEFAULT_MODEL, "fp32")
    export_encoder(DEFAULT_MODEL, fp32_folder, "int8", embedder)
    assert json.loads((fp32_folder / MANIFEST).read_text())["precision"] == "int8"
    assert ensure_export(DEFAULT_MODEL, "fp32", embedder) == fp32_folder
    assert json.loads((fp32_folder / MANIFEST).read_text())["precision"] == "fp32"


def test_an_encoder_folder_that_cannot_be_written_falls_back_to_torch_or_says_why(tmp_path, monkeypatch, caplog):
    """No export yet and nowhere to write one (read-only, or here a path under a file, which fails for
    root too): `onnx` says so in one line; `auto` encodes queries on torch and logs why."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HYBRID_ENCODER_DIR", str(blocker / "encoders"))
    with pytest.raises(HybridError, match=r"cannot write the ONNX export of .* to .*a-file/encoders"):
        _load_query_encoder(DEFAULT_MODEL, "fp32", "onnx", None)
    fallen_back = _load_query_encoder(DEFAULT_MODEL, "fp32", "auto", None)
    assert isinstance(fallen_back, Embedder) and "queries use torch" in caplog.text
