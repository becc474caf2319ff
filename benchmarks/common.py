"""What every benchmark script shares: the docs-section writer, Markdown tables, provenance lines, arguments.

Scripts live one folder down (``benchmarks/<group>/<script>.py``) and import this module as
``benchmarks.common`` after putting the repository root on ``sys.path``::

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.common import ...

Nothing here is imported by hybrida or by its tests.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Numbers written by the scripts in `benchmarks/`; each section says the command that made it.\n"
)


# ----------------------------------------------------------------------------- docs sections


def write_section(key: str, body: str, path: Path | str = DOC) -> Path:
    """Put ``body`` between ``<!-- key:start -->`` and ``<!-- key:end -->`` of ``path`` (appended if absent).

    The rest of the file is left alone; the file is replaced atomically.
    """
    path = Path(path)
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


def read_section(key: str, path: Path | str = DOC) -> str:
    """The body between the markers of section ``key`` (``ValueError`` if the section is absent)."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    text = Path(path).read_text() if Path(path).exists() else ""
    if start not in text or end not in text:
        raise ValueError(f"{path} has no section {key!r}")
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")


def splice_subsection(key: str, new: str, path: Path | str = DOC) -> str:
    """Section ``key`` with the ``### `` subsection that ``new`` starts with replaced by ``new``.

    The subsection is found by the heading's number (``### 2. ...`` matches ``### 2. ...``)
    and runs to the next ``### `` heading or the end of the section; the others are kept.
    """
    heading = new.lstrip().splitlines()[0]
    if not heading.startswith("### "):
        raise ValueError("splice_subsection: new text must start with a '### ' heading")
    tag = heading.split()[1]
    body = read_section(key, path)
    a = body.find(f"### {tag}")
    if a < 0:
        raise ValueError(f"section {key!r} of {path} has no '### {tag}' subsection")
    b = body.find("\n### ", a + 1)
    rest = "" if b < 0 else "\n\n" + body[b + 1 :]
    return body[:a] + new.strip("\n") + rest


# ----------------------------------------------------------------------------- tables and provenance


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: Sequence[str] | None = None) -> list[str]:
    """Lines of a Markdown table; ``align`` per column: '' (default), 'r' (right) or 'l'."""
    sep = {"": "---", "r": "---:", "l": ":---"}
    align = list(align) if align else [""] * len(header)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(sep[a] for a in align) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def machine() -> str:
    """``x86_64, 2 CPU(s) (CPU model)``."""
    return f"{platform.machine()}, {os.cpu_count()} CPU(s) ({cpu_name()})"


def software() -> str:
    """Python, torch and numpy versions of this process."""
    parts = [f"Python {platform.python_version()}"]
    for mod in ("torch", "numpy"):
        m = sys.modules.get(mod)
        if m is not None:
            parts.append(f"{mod} {m.__version__}")
    return ", ".join(parts)


def command(script: str | Path, argv: Sequence[str] | None = None) -> str:
    """The command line that reproduces this run, from the repository root: ``.venv/bin/python benchmarks/...``."""
    rel = Path(script).resolve().relative_to(ROOT)
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join([".venv/bin/python", str(rel), *(shlex.quote(a) for a in args)])


def provenance(script: str | Path, threads: str, argv: Sequence[str] | None = None, **extra: str) -> list[str]:
    """The closing bullet lines of a docs section: command, date, machine, threads, software, extras."""
    lines = [
        f"- command: `{command(script, argv)}`",
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {machine()}, load average {load_average():.1f} at the end",
        f"- threads: {threads}",
        f"- software: {software()}",
    ]
    return lines + [f"- {k.replace('_', ' ')}: {v}" for k, v in extra.items()]


# ----------------------------------------------------------------------------- arguments


def add_output_args(parser: argparse.ArgumentParser, section: str) -> None:
    """``--output FILE`` (the docs file whose section ``section`` is written; ``-``: none) and ``--no-write``."""
    parser.add_argument(
        "--output", default=str(DOC), help=f"Markdown file whose '{section}' section is written ('-': none)"
    )
    parser.add_argument("--no-write", action="store_true", help="write no docs section (same as --output -)")


def output_path(args: argparse.Namespace) -> Path | None:
    """Where the section goes, or None (``--output -`` or ``--no-write``)."""
    if getattr(args, "no_write", False) or args.output in ("-", "", None):
        return None
    return Path(args.output)
