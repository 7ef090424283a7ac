"""The README's set-up commands as a new machine runs them: PATH=/usr/bin:/bin (Debian's own python3, no uv),
a new HOME; only uv's wheel cache is shared with this run, so they take seconds, not minutes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BARE_PATH = "/usr/bin:/bin"
# What a new machine behind a proxy has besides PATH and HOME (none of them is set on most machines).
NETWORK = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
NOT_PART_OF_A_CLONE = shutil.ignore_patterns(".git", ".venv*", ".test-logs", "site", "build", "dist", "*.egg-info",
                                             "__pycache__", ".pytest_cache")


@pytest.fixture
def bare_machine(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the checkout (as a fresh clone has it) and the environment of a new machine."""
    for unfit, why in ((shutil.which("python3", path=BARE_PATH) is None, f"no python3 on {BARE_PATH}"),
                       (shutil.which("uv", path=BARE_PATH) is not None, f"uv is installed on {BARE_PATH}")):
        if unfit:  # CI runs on the Debian the scripts bootstrap on: there this is a failure, not a skip
            (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{why}: not the bare machine this test needs")
    clone = tmp_path / "clone"
    shutil.copytree(ROOT, clone, symlinks=True, ignore=NOT_PART_OF_A_CLONE)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": BARE_PATH, "HOME": str(home), **{name: os.environ[name] for name in NETWORK if name in os.environ}}
    if "UV_CACHE_DIR" in os.environ:  # set by scripts/env.sh: the wheels, never an environment
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
    return clone, env


def bash(script: str, clone: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=900)


def test_the_bootstrap_makes_an_environment_without_uv(bare_machine):
    clone, env = bare_machine
    make = 'source scripts/env.sh && new_env "$PWD/.venv" "" && .venv/bin/hybrid --version'
    first = bash(make, clone, env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "version" in first.stdout
    uv = Path(env["HOME"]) / ".cache" / "hybrid" / "uv-bootstrap" / "bin" / "uv"
    assert uv.is_file(), "uv was not installed into the cache folder"
    assert "installing uv" in first.stderr and "warning" not in first.stderr.lower(), first.stderr
    where = bash(".venv/bin/python -c 'import sys, hybrid; print(sys.base_prefix, hybrid.__file__)'", clone, env)
    base, module = where.stdout.split()
    assert base == "/usr" and Path(module).is_relative_to(clone), where.stdout  # Debian's python3, this copy

    again = bash(make, clone, env)  # a second run reuses the bootstrapped uv and builds the environment anew
    assert again.returncode == 0 and "installing uv" not in again.stderr, again.stderr


def test_a_uv_on_path_is_used_as_it_is(bare_machine, tmp_path):
    clone, env = bare_machine
    first = bash('source scripts/env.sh && echo "$UV"', clone, env)
    assert first.returncode == 0, first.stderr
    on_path = tmp_path / "bin"
    on_path.mkdir()
    shutil.copy2(first.stdout.strip(), on_path / "uv")  # a standalone binary, as a package manager installs it
    shutil.rmtree(Path(env["HOME"]) / ".cache" / "hybrid" / "uv-bootstrap")
    with_uv = {**env, "PATH": f"{on_path}:{BARE_PATH}"}
    used = bash('source scripts/env.sh && echo "$UV" && new_env "$PWD/.venv" ""', clone, with_uv)
    assert used.returncode == 0, used.stdout + used.stderr
    assert used.stdout.splitlines()[0] == str(on_path / "uv") and "installing uv" not in used.stderr


def test_the_bootstrap_repairs_a_broken_uv(bare_machine):
    """A bootstrap folder left half-made (a killed run, a Python upgraded under it) is made again."""
    clone, env = bare_machine
    broken = Path(env["HOME"]) / ".cache" / "hybrid" / "uv-bootstrap" / "bin"
    broken.mkdir(parents=True)
    (broken / "uv").write_text("#!/bin/sh\nexit 1\n")
    (broken / "uv").chmod(0o755)
    result = bash('source scripts/env.sh && "$UV" --version', clone, env)
    assert result.returncode == 0 and result.stdout.startswith("uv "), result.stdout + result.stderr


def test_the_demo_runs_quietly_on_a_bare_machine(bare_machine):
    """`bash scripts/demo.sh` from a clone: an environment with every extra, an embedded index of the sample
    corpus, a hybrid query, and no warning or traceback on the way."""
    clone, env = bare_machine
    result = bash("bash scripts/demo.sh", clone, env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    noisy = [line for line in output.splitlines() if any(word in line.lower() for word in
                                                          ("warning", "traceback", "deprecat", "error"))]
    assert noisy == [], output
    table = result.stdout[result.stdout.index("┏"):]
    assert table.splitlines()[3].split("│")[2].strip() == "photosynthesis", output  # the first hit
