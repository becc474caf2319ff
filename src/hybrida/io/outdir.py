"""Check an output folder before a run starts, so a bad path fails at once and writes nothing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class OutDirError(ValueError):
    """An output folder that cannot be used: an existing file, under a file, or not writable."""


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (something at least: a file or a folder)."""
    probe = path.absolute()
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    return probe


def check_out_dir(path: str | Path, option: str = "--out") -> None:
    """Raise :class:`OutDirError` unless ``path`` is (or can become) a folder this process can write in.

    Nothing is left behind: the write test creates and removes an empty
    temporary folder in ``path`` or in its closest existing ancestor.
    """
    path = Path(path)
    where = f"{option} {path}"
    existing = _nearest_existing(path)
    if existing == path.absolute() and not existing.is_dir():
        raise OutDirError(f"{where}: is an existing file, not a folder; give a folder path")
    if not existing.is_dir():
        raise OutDirError(
            f"{where}: {existing} is a file, so no folder can be made under it; "
            "give a path whose parents are folders"
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".hybrida-write-test-", dir=existing))
    except OSError as err:
        raise OutDirError(
            f"{where}: cannot write in {existing} ({err.strerror or type(err).__name__}); "
            "choose a folder you can write to"
        ) from None
