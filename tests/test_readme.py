"""The README tells the truth about the package: every name it lists imports, every folder exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _table_after(heading: str) -> list[list[str]]:
    """Rows (cells) of the first Markdown table after ``heading``, header and rule skipped."""
    rest = README[README.index(heading) :]
    rows = []
    for line in rest.splitlines()[1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    return rows[2:]


PARTS = [
    (re.search(r"\(`([\w.]+)`\)", part).group(1), re.findall(r"`(\w+)`", names))
    for part, names in _table_after("What is there")
]


def test_the_parts_table_is_parsed():
    assert len(PARTS) >= 8 and all(names for _, names in PARTS)


@pytest.mark.parametrize(("module", "names"), PARTS, ids=[m for m, _ in PARTS])
def test_every_listed_name_imports_from_its_package(module, names):
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"README lists {missing} under {module}"


def test_where_things_live_matches_the_tree():
    rows = _table_after("## Where things live")
    assert len(rows) >= 8
    for folder, *_ in rows:
        for path in re.findall(r"`([\w./]+)`", folder):
            base = folder.split("`")[1].rsplit("/", 1)[0] if "/" not in path else ""
            assert (ROOT / path).exists() or (ROOT / base / path).exists(), path


def test_the_readme_points_at_no_file_outside_the_repository():
    assert "../shared" not in README and "/work/" not in README
