"""Packaging: every import declared, a quiet build whose wheel works outside the checkout, one-line
messages for a missing extra."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from hybrid.cli import cli

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


def test_wheel_builds_without_warnings_and_works_outside_the_checkout(tmp_path, opensearch):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # else setuptools says so
    built = run(sys.executable, "-m", "build", "--installer", "uv", "--outdir", tmp_path / "dist", ROOT, env=env)
    assert built.returncode == 0, built.stdout + built.stderr
    log = (built.stdout + built.stderr).lower()
    assert "warning" not in log and "deprecat" not in log, built.stdout + built.stderr
    [wheel] = (tmp_path / "dist").glob("*.whl")
    assert "hybrid/mappings/index.json" in zipfile.ZipFile(wheel).namelist()

    venv = tmp_path / "venv"
    assert run(BIN / "uv", "venv", "--quiet", "--python", sys.executable, venv).returncode == 0
    installed = run(BIN / "uv", "pip", "install", "--quiet", "--python", venv / "bin" / "python", wheel)
    assert installed.returncode == 0, installed.stderr
    where = run(venv / "bin" / "python", "-c", "import hybrid; print(hybrid.__file__)", cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr

    url = opensearch.connection.url
    if opensearch.exists("wheel-check"):
        opensearch.delete("wheel-check")
    ingest = run(venv / "bin" / "hybrid", "ingest", ROOT / "examples" / "sample.jsonl", "--index", "wheel-check",
                 "--opensearch", url, "--quiet", cwd=tmp_path)
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr
    assert opensearch.count("wheel-check") == sum(1 for _ in (ROOT / "examples" / "sample.jsonl").open())
    assert opensearch.meta("wheel-check").dimension == 384
    opensearch.delete("wheel-check")


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
    assert f"pip install 'hybrid-search[{extra}]'" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
