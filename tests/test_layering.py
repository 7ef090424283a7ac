"""The package's modules import one another in one direction only (../shared/DESIGN.md): no cycles, even
through imports made inside functions; fusion imports nothing of ours; backends know nothing of the CLI or
the use cases. Read from the source, so a new cycle fails here before it fails someone's import."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hybrid"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The hybrid modules ``path`` imports, anywhere in it but under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for node in ast.walk(block)}
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only or not isinstance(node, ast.ImportFrom | ast.Import):
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "hybrid"}
            continue
        base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
        target = ".".join([*base, *([node.module] if node.module else [])])
        if target.split(".")[0] != "hybrid":
            continue
        names = {f"{target}.{alias.name}" for alias in node.names}
        found |= {name for name in names if name in MODULES} or {target}
    return found - {module_name(path)}


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: {target for target in imports(path) if target in MODULES} for name, path in MODULES.items()}


def test_no_module_imports_itself_back():
    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen = set()
        while stack:
            name, path = stack.pop()
            for target in GRAPH[name] - {"hybrid"}:  # the package's face re-exports; nothing below may use it
                if target == start:
                    return [*path, target]
                if target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))
        return None

    cycles = [cycle for name in GRAPH if name != "hybrid" and (cycle := cycle_from(name))]
    assert cycles == [], cycles


def test_nothing_below_the_package_imports_its_face():
    assert [name for name, targets in GRAPH.items() if "hybrid" in targets] == []


def test_fusion_imports_nothing_of_ours_and_backends_know_no_use_case():
    assert GRAPH["hybrid.fusion"] == set()
    use_cases = {"hybrid.cli", "hybrid.ingest", "hybrid.searcher", "hybrid.evaluate", "hybrid.finetune"}
    for name, targets in GRAPH.items():
        if name.startswith("hybrid.backends"):
            assert not targets & use_cases, (name, targets & use_cases)
