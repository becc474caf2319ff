"""Replace one marked section of docs/benchmarks.md, leaving the others alone."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Numbers written by the scripts in `benchmarks/`; each section says the command that made it.\n"
)


def write_section(key: str, body: str, path: Path = DOC) -> Path:
    """Put ``body`` between ``<!-- key:start -->`` and ``<!-- key:end -->`` (appended if absent)."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else HEADER
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")  # one blank line before the next
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".benchmarks-", suffix=".md")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path
