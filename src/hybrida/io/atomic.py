"""Atomic file writes: write a temporary file in the same folder, then ``os.replace`` it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write_fn: Callable[[str], object]) -> Path:
    """Create ``path`` atomically: ``write_fn(tmp)`` fills a temporary file, which then replaces ``path``.

    The temporary file (``.<name>.*.tmp``) lies in the same folder, so the
    ``os.replace`` is atomic; on any failure it is removed and ``path`` is left
    untouched. Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
