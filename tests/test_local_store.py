"""The embedded store under real-world use: writers in several processes, a process killed mid-commit,
numbered versions and rollback, a damaged version, a full disk. Real processes, the real model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hybrid.backends.local import LocalBackend
from hybrid.cli import cli
from hybrid.errors import HybridError
from hybrid.ingest import ingest, reindex, rollback
from hybrid.searcher import Searcher

WORDS = ("shock wave boundary layer flutter wing heat transfer vortex nozzle pressure supersonic laminar "
         "turbulent cylinder cone plate jet").split()


def corpus(path: Path, prefix: str, count: int) -> Path:
    """``count`` small documents with ids ``prefix-N``."""
    records = [{"_id": f"{prefix}-{n}", "title": f"{prefix} {n}",
                "text": " ".join(WORDS[(n * 7 + k) % len(WORDS)] for k in range(12))} for n in range(count)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def hybrid_process(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hybrid", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def test_concurrent_writers_lose_nothing_and_readers_see_whole_versions(tmp_path, embedder):
    data = tmp_path / "indexes"
    ingest(corpus(tmp_path / "seed.jsonl", "seed", 5), "shared", LocalBackend(data), embedder, progress=False)
    parts = [corpus(tmp_path / f"part{i}.jsonl", f"p{i}", 60) for i in range(3)]
    reader_errors: list[Exception] = []
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        searcher = Searcher("shared", LocalBackend(data), embedder=embedder)
        while not done.is_set():
            try:
                seen.append(len(searcher.search("supersonic shock wave", k=500, mode="bm25")))
            except Exception as error:  # any failure while versions are swapped is what this looks for
                reader_errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        writers = [hybrid_process("ingest", part, "--index", "shared", "--data-dir", data, "--quiet") for part in parts]
        outcomes = [writer.communicate(timeout=600) for writer in writers]
    finally:
        done.set()
        reader.join()
    assert [w.returncode for w in writers] == [0, 0, 0], outcomes
    assert LocalBackend(data).count("shared") == 5 + 3 * 60
    assert reader_errors == [] and seen
    assert set(seen) <= {5, 65, 125, 185}  # whole versions only: each one adds a whole part
    assert any("waiting for it to finish" in stderr for _, stderr in outcomes)


def test_ingest_racing_a_reindex_never_brings_the_old_model_back(tmp_path, embedder, other_space_model):
    data = tmp_path / "indexes"
    ingest(corpus(tmp_path / "seed.jsonl", "seed", 20), "raced", LocalBackend(data), embedder, progress=False)
    more = corpus(tmp_path / "more.jsonl", "more", 30)
    racers = [hybrid_process("reindex", "--index", "raced", "--model", other_space_model, "--data-dir", data,
                             "--quiet"),
              hybrid_process("ingest", more, "--index", "raced", "--data-dir", data, "--quiet")]
    (_, reindex_err), (_, ingest_err) = [racer.communicate(timeout=600) for racer in racers]
    assert racers[0].returncode == 0, reindex_err
    backend = LocalBackend(data)
    assert backend.meta("raced").model == other_space_model
    if racers[1].returncode == 0:  # the ingest went first; the re-index then re-embedded its documents too
        assert backend.count("raced") == 50
    else:  # the re-index went first; the ingest, with the old model, was refused before writing anything
        assert "holds 384-d vectors of model" in ingest_err and backend.count("raced") == 20


CRASH = """
import os, sys
import numpy as np
import hybrid.backends.local as local
if sys.argv[1] == "writing":
    np.save = lambda *args, **kwargs: os._exit(9)  # killed while the version's files are written
else:
    local.LocalBackend.swap = lambda *args: os._exit(9)  # killed after the version is complete, before the swap
from hybrid.cli import main
sys.argv = ["hybrid", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize("moment", ["writing", "swap"])
def test_a_killed_commit_leaves_the_previous_version_serving(tmp_path, embedder, moment):
    data = tmp_path / "indexes"
    backend = LocalBackend(data)
    ingest(corpus(tmp_path / "v1.jsonl", "doc", 10), "crashy", backend, embedder, progress=False)
    [serving] = backend.versions("crashy")
    script = tmp_path / "crash.py"
    script.write_text(CRASH)
    changed = corpus(tmp_path / "v2.jsonl", "other", 10)
    killed = subprocess.run([sys.executable, str(script), moment, "ingest", str(changed), "--index", "crashy",
                             "--data-dir", str(data), "--quiet"], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert killed.returncode == 9, killed.stderr
    leftovers = [p.name for p in data.iterdir() if p.name.startswith(".crashy@") and p.name != serving.name]
    assert leftovers  # what the killed process left behind
    fresh = LocalBackend(data)
    assert fresh.count("crashy") == 10 and all(v.serving == (v.name == serving.name) for v in fresh.versions("crashy"))
    assert all(not v.name.startswith(".crashy@tmp") for v in fresh.versions("crashy"))
    assert Searcher("crashy", fresh, embedder=embedder).search("shock wave", k=3)
    assert CliRunner().invoke(cli, ["index", "list", "--data-dir", str(data)]).exit_code == 0
    with pytest.raises(HybridError, match="nothing to roll back to"):
        rollback("crashy", fresh)

    ingest(changed, "crashy", fresh, embedder, progress=False)  # the next write cleans up
    assert fresh.count("crashy") == 20
    assert [p.name for p in data.iterdir() if p.name.startswith(".crashy@")] == [fresh.versions("crashy")[0].name]


def test_versions_are_numbered_by_the_store_and_rollback_returns_to_what_served(tmp_path, embedder, monkeypatch):
    backend = LocalBackend(tmp_path / "indexes")
    served = []
    for step, zone in enumerate(("UTC", "America/Los_Angeles", "Asia/Kolkata", "UTC")):  # within a second or two
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        ingest(corpus(tmp_path / "step.jsonl", f"step{step}", 1), "numbered", backend, embedder, progress=False)
    monkeypatch.undo()
    time.tzset()
    numbers = [v.number for v in backend.versions("numbered")]
    assert numbers == [4]  # each ingest replaced the one before; numbers only grow
    for _ in range(2):
        served.append(reindex("numbered", backend, embedder, progress=False).version)
    assert [v.number for v in backend.versions("numbered")] == [4, 5, 6]
    assert rollback("numbered", backend) == (served[1], served[0])
    assert rollback("numbered", backend)[1].startswith(".numbered@000004-")
    with pytest.raises(HybridError, match="nothing to roll back to"):
        rollback("numbered", backend)
    ingest(corpus(tmp_path / "docs.jsonl", "doc", 5), "numbered", backend, embedder, progress=False)
    [only] = backend.versions("numbered")  # versions no rollback can reach any more are gone
    assert only.number == 7 and only.serving and backend.count("numbered") == 4 + 5
    shown = CliRunner().invoke(cli, ["index", "info", "numbered", "--data-dir", str(backend.data_dir)])
    info = json.loads(shown.output)
    assert info["versions"] == [{"name": only.name, "number": 7, "previous": None, "serving": True}]


def test_a_damaged_version_is_refused_with_what_disagrees(tmp_path, embedder):
    data = tmp_path / "indexes"
    ingest(corpus(tmp_path / "docs.jsonl", "doc", 6), "damaged", LocalBackend(data), embedder, progress=False)
    ingest(corpus(tmp_path / "ok.jsonl", "ok", 2), "fine", LocalBackend(data), embedder, progress=False)
    folder = data / os.readlink(data / "damaged")
    np.save(folder / "vectors.npy", np.zeros((5, 384), dtype=np.float32))
    with pytest.raises(HybridError, match=rf"index version {folder} is damaged \(vectors of shape \(5, 384\) for 6"):
        LocalBackend(data).load("damaged")
    listing = CliRunner().invoke(cli, ["index", "list", "--data-dir", str(data)])
    assert listing.exit_code == 0 and "fine" in listing.output and "damaged" in listing.output
    deleted = CliRunner().invoke(cli, ["index", "delete", "damaged", "--yes", "--data-dir", str(data)])
    assert deleted.exit_code == 0 and LocalBackend(data).names() == ["fine"]


def test_a_full_disk_is_one_line_and_changes_nothing(tmp_path, embedder):
    data = tmp_path / "indexes"
    backend = LocalBackend(data)
    ingest(corpus(tmp_path / "docs.jsonl", "doc", 5), "full", backend, embedder, progress=False)
    big = corpus(tmp_path / "big.jsonl", "big", 400)  # about 600 kB of vectors: past the limit below
    limited = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000)); "
               "from hybrid.cli import main; sys.argv = ['hybrid', *sys.argv[1:]]; main()")
    result = subprocess.run([sys.executable, "-c", limited, "ingest", str(big), "--index", "full", "--data-dir",
                             str(data), "--quiet"], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    assert "cannot write index 'full'" in result.stderr and "it still serves its previous version" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert LocalBackend(data).count("full") == 5
    assert [p.name for p in data.iterdir() if p.name.startswith(".full@")] == [backend.versions("full")[0].name]


def test_versions_written_before_numbering_survive_an_upgrade(tmp_path, embedder):
    """Folders an earlier release named by a time stamp (no version.json) stay versions: the one kept
    for rollback is neither lost at the first write nor skipped by rollback."""
    data = tmp_path / "indexes"
    backend = LocalBackend(data)
    ingest(corpus(tmp_path / "docs.jsonl", "doc", 3), "old", backend, embedder, progress=False)
    current = data / os.readlink(data / "old")
    older, newer = data / ".old@20260101T000000-aaaaaaaa", data / ".old@20260102T000000-bbbbbbbb"
    shutil.copytree(current, older)
    current.rename(newer)
    for folder in (older, newer):
        (folder / "version.json").unlink()
    backend.swap("old", newer)  # the layout an earlier release left
    assert [(v.name, v.previous, v.serving) for v in backend.versions("old")] == [
        (older.name, None, False), (newer.name, older.name, True)]
    ingest(corpus(tmp_path / "more.jsonl", "more", 2), "old", LocalBackend(data), embedder, progress=False)
    after = LocalBackend(data).versions("old")
    assert [v.name for v in after if not v.serving] == [older.name] and LocalBackend(data).count("old") == 5
    assert rollback("old", LocalBackend(data))[1] == older.name
