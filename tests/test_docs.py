"""The manual: `mkdocs build --strict` passes, and every shell block of the README and of docs/ runs, as a
reader would paste it, from the repository's root against the real nodes scripts/test.sh starts. A block
that cannot run here says why just above it: ``<!-- test: skip, REASON -->``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
SKIP = re.compile(r"<!-- test: skip, (.+?) -->\n$")
SHELLS = {"bash", "sh", "shell", "console"}
# The nodes the docs address, and the variables under which scripts/test.sh says it started them there.
NODES = {"localhost:9200": ("HYBRID_TEST_OPENSEARCH", "http://127.0.0.1:9200"),
         "127.0.0.1:9210": ("HYBRID_TEST_CLUSTER", "http://127.0.0.1:9210"),
         "127.0.0.1:9220": ("HYBRID_TEST_NEURAL", "http://127.0.0.1:9220"),
         "127.0.0.1:9250": ("HYBRID_TEST_ELASTICSEARCH", "http://127.0.0.1:9250")}


def pages() -> list[Path]:
    """The README, then the manual in the order of its navigation (later pages use what earlier ones made)."""
    nav = re.findall(r"^\s+- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), re.M)
    return [ROOT / "README.md", *(ROOT / "docs" / name for name in nav)]


@dataclass
class Block:
    page: Path
    line: int
    language: str
    body: str
    skip: str | None


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()]
        skip = SKIP.search(before)
        found.append(Block(page, before.count("\n") + 1, match.group(1), match.group(2),
                           skip.group(1) if skip else None))
    return found


def shell_blocks(page: Path) -> list[Block]:
    return [block for block in blocks(page) if block.language in SHELLS]


@dataclass
class Workspace:
    """Where the blocks run: a folder with the repository's examples/ and docker/, a HOME of its own (so
    embedded indexes start empty), and the test environment's `hybrid` first on PATH."""

    folder: Path
    env: dict[str, str]
    results: dict[Path, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    def run(self, page: Path) -> subprocess.CompletedProcess[str]:
        if page not in self.results:
            script = "set -euo pipefail\n" + "".join(
                f"echo '>>> {page.name}:{block.line}' >&2\n{block.body}"
                for block in shell_blocks(page) if block.skip is None)
            self.results[page] = subprocess.run(["bash", "-c", script], cwd=self.folder, env=self.env,
                                                capture_output=True, text=True, timeout=1500)
        return self.results[page]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    folder = tmp_path_factory.mktemp("docs-workspace")
    for name in ("examples", "docker"):
        (folder / name).symlink_to(ROOT / name)
    home = tmp_path_factory.mktemp("docs-home")
    # A reader's shell, not this run's: nothing reroutes the embedded blocks to a cluster or another folder.
    inherited = {name: value for name, value in os.environ.items()
                 if not name.startswith(("OPENSEARCH_", "ELASTICSEARCH_", "HYBRID_")) or name == "HYBRID_ENCODER_DIR"}
    env = {**inherited, "HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           # the node script finds the nodes scripts/test.sh started where it keeps them
           "HYBRID_CACHE": os.environ.get("HYBRID_CACHE", str(Path.home() / ".cache" / "hybrid"))}
    return Workspace(folder, env)


def test_the_manual_builds_strictly(tmp_path):
    result = subprocess.run([BIN / "mkdocs", "build", "--strict", "--site-dir", tmp_path / "site"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    assert "hybrid.Searcher" in reference and "search" in reference  # the API reference was generated


def test_every_page_is_in_the_navigation_and_every_skip_says_why():
    listed = {page.name for page in pages()}
    assert listed >= {page.name for page in (ROOT / "docs").glob("*.md")}
    for page in pages():
        for block in blocks(page):
            assert block.language, f"{page.name}:{block.line}: a code block without a language"
            if block.skip is not None:
                assert block.language in SHELLS and len(block.skip) > 10, f"{page.name}:{block.line}"


def missing_node(page: Path) -> str | None:
    """Why the page's blocks cannot run here (a node they address was not started), or None."""
    commands = "".join(block.body for block in shell_blocks(page) if block.skip is None)
    for address, (variable, url) in NODES.items():
        if address in commands and os.environ.get(variable, "").split(",")[0] != url:
            return (f"{page.name} talks to {url}, where no test node was started ({variable}; "
                    "scripts/test.sh starts them)")
    return None


@pytest.mark.parametrize("page", [page for page in pages() if any(b.skip is None for b in shell_blocks(page))],
                         ids=lambda page: page.name)
def test_the_shell_blocks_run(workspace, page):
    if reason := missing_node(page):
        pytest.skip(reason)
    for earlier in pages()[:pages().index(page)]:  # what this page builds on (each page runs once)
        if missing_node(earlier) is None:
            workspace.run(earlier)
    result = workspace.run(page)
    output = result.stdout + result.stderr
    where = re.findall(r">>> (\S+)", result.stderr)
    assert result.returncode == 0, f"failed in the block at {where[-1] if where else page.name}:\n{output[-6000:]}"
    assert "Traceback" not in output, output[-6000:]
