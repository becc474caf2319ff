"""The package layout keeps its promises: dependencies point down, and no module grows too large."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "hybrida"


def _hybrida_imports(path: Path) -> set[str]:
    """Every ``hybrida...`` module a file imports, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hybrida"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("hybrida")}
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("nn", ("hybrida.",)), ("learn", ("hybrida.experiment", "hybrida.cli"))],
)
def test_dependencies_point_down(package, forbidden):
    for path in sorted((SRC / package).rglob("*.py")):
        bad = {
            m for m in _hybrida_imports(path)
            if m.startswith(forbidden) and not m.startswith(f"hybrida.{package}")
        }
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_no_module_passes_about_400_lines():
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 420
    }
    assert not long, f"split these modules: {long}"


def test_no_test_imports_benchmarks():
    """Plain ``pytest`` must collect what ``python -m pytest`` does: tests use package code only."""
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""] if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names] if isinstance(node, ast.Import) else []
            )
            assert not any(n.split(".")[0] == "benchmarks" for n in names), path
