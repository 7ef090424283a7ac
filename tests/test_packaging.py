"""Packaging: every import declared, a quiet build whose wheel works outside the checkout, one-line
messages for a missing extra."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from cluster import OPENSEARCH_CLUSTERS

from hybrid.cli import cli
from hybrid.errors import DISTRIBUTION, install_hint
from hybrid.ingest import ingest
from hybrid.searcher import Searcher

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env=env or os.environ.copy())


def test_every_import_is_declared():
    result = run(BIN / "deptry", "--no-ansi", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_checker_catches_an_undeclared_import(tmp_path):
    """A copy of the package with an import only available transitively (yaml comes with
    huggingface-hub) and one of a package not installed at all: deptry must fail on both."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    for folder in ("hybrid", "tests", "bench"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    with (tmp_path / "hybrid" / "fusion.py").open("a") as module:
        module.write("\n\ndef _undeclared():\n    import yaml\n    import surely_not_a_package_here\n")
    result = run(BIN / "deptry", "--no-ansi", ".", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Found 2 dependency issues" in output
    assert "DEP003 'yaml' imported but it is a transitive dependency" in output
    assert "DEP001 'surely_not_a_package_here' imported but missing from the dependency definitions" in output


@pytest.mark.parametrize("opensearch", OPENSEARCH_CLUSTERS[:1], indirect=True)  # the install is what is tested
def test_the_wheel_builds_quietly_and_its_query_only_install_searches_both_backends(
        tmp_path, opensearch, local_cranfield, embedder):
    """The base install is the query-only one: no torch, transformers or sentence-transformers. From the
    built wheel, in a new environment, it searches an embedded index copied from elsewhere and an
    OpenSearch index, with the ranking the full install gives; what it cannot do, it says in one line."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # else setuptools says so
    built = run(sys.executable, "-m", "build", "--installer", "uv", "--outdir", tmp_path / "dist", ROOT, env=env)
    assert built.returncode == 0, built.stdout + built.stderr
    log = (built.stdout + built.stderr).lower()
    assert "warning" not in log and "deprecat" not in log, built.stdout + built.stderr
    [wheel] = (tmp_path / "dist").glob("*.whl")
    assert wheel.name.startswith("hybrid_search_toolkit-")  # the name we own on PyPI (hybrid-search is not ours)
    assert {"hybrid/mappings/description.json", "hybrid/mappings/opensearch.json", "hybrid/mappings/elasticsearch.json",
            "hybrid/py.typed"} <= set(zipfile.ZipFile(wheel).namelist())

    venv = tmp_path / "venv"
    assert run(BIN / "uv", "venv", "--quiet", "--python", sys.executable, venv).returncode == 0
    installed = run(BIN / "uv", "pip", "install", "--quiet", "--python", venv / "bin" / "python", wheel)
    assert installed.returncode == 0, installed.stderr
    probe = "import hybrid, importlib.util as u; print(hybrid.__file__); print([m for m in " \
            "('torch', 'transformers', 'sentence_transformers', 'optimum') if u.find_spec(m)])"
    where, heavy = run(venv / "bin" / "python", "-c", probe, cwd=tmp_path).stdout.splitlines()
    assert Path(where).is_relative_to(venv) and heavy == "[]"

    # What a query-only machine gets from the one that ingested: the index folder and the encoder folder.
    data_dir, encoders = tmp_path / "indexes", tmp_path / "encoders"
    shutil.copytree(local_cranfield.data_dir, data_dir, symlinks=True)
    shutil.copytree(os.environ["HYBRID_ENCODER_DIR"], encoders)
    query_env = {**os.environ, "HYBRID_ENCODER_DIR": str(encoders)}
    if opensearch.exists("wheel-check"):
        opensearch.delete("wheel-check")
    ingest(ROOT / "examples" / "sample" / "corpus.jsonl", "wheel-check", opensearch, embedder, progress=False)
    cases = [("cranfield", local_cranfield, "shock waves on blunt bodies", ["--data-dir", data_dir]),
             ("wheel-check", opensearch, "molten rock under pressure", ["--opensearch", opensearch.connection.url])]
    for index, backend, query, where_args in cases:
        searched = run(venv / "bin" / "hybrid", "search", query, "--index", index, "--json", *where_args,
                       cwd=tmp_path, env=query_env)
        assert searched.returncode == 0, searched.stdout + searched.stderr
        expected = Searcher(index, backend, embedder=embedder).search(query)  # queries encoded by torch
        assert [hit["id"] for hit in json.loads(searched.stdout)] == [hit.id for hit in expected]

    no_encoder = run(venv / "bin" / "hybrid", "search", "shock", "--index", "cranfield", "--data-dir", data_dir,
                     cwd=tmp_path, env={**os.environ, "HYBRID_ENCODER_DIR": str(tmp_path / "empty")})
    assert no_encoder.returncode == 1 and "Traceback" not in no_encoder.stderr
    assert len(no_encoder.stderr.strip().splitlines()) == 1, no_encoder.stderr
    assert f"{tmp_path / 'empty'}/all-MiniLM-L6-v2-fp32" in no_encoder.stderr
    assert "Copy that folder" in no_encoder.stderr and install_hint('ingest') in no_encoder.stderr
    no_model = run(venv / "bin" / "hybrid", "ingest", ROOT / "examples" / "sample" / "corpus.jsonl", "--index", "x",
                   "--data-dir", tmp_path / "new", cwd=tmp_path)
    assert no_model.returncode == 1 and len(no_model.stderr.strip().splitlines()) == 1, no_model.stderr
    assert install_hint('ingest') in no_model.stderr
    opensearch.delete("wheel-check")


def test_the_package_type_checks():
    """Applications type-check against hybrid's API (it ships py.typed), so the package must be clean."""
    result = run(BIN / "mypy", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_distribution_name_is_the_one_every_message_gives():
    import tomllib

    name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert name == DISTRIBUTION == "hybrid-search-toolkit"
    assert install_hint("eval") == "pip install 'hybrid-search-toolkit[eval]'"


@pytest.mark.parametrize(("args", "extra"), [
    (["eval", "--index", "x", "--queries", str(ROOT / "README.md"), "--qrels", str(ROOT / "README.md")], "eval"),
    (["tune", "--index", "x"], "eval"),
    (["finetune", "--corpus", ".", "--output", "out"], "train"),
])
def test_a_missing_extra_is_one_line_naming_it(monkeypatch, args, extra):
    for module in ("ranx", "datasets"):
        monkeypatch.setitem(sys.modules, module, None)  # what an install without the extra has
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert install_hint(extra) in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
