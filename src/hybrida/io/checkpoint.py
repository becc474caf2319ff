"""Experiment checkpoints: everything needed to continue a run bit-identically."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hybrida.io.atomic import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """State after ``cycle`` analyses: the next run starts at ``cycle + 1``.

    ``generators`` holds the RNG states (``torch.Generator.get_state()``) of the
    analysis stream and the torch global RNG; ``method_state`` the method's
    attributes (adaptive inflation and the like evolve between cycles).
    """

    cycle: int
    state: Any
    records: list
    generators: dict[str, torch.Tensor]
    config_digest: str
    wall_s: float = 0.0
    method_state: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` it into place."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write(path, write)


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write ``ckpt`` atomically (a crash mid-write leaves the previous checkpoint intact)."""
    payload = {
        "format": FORMAT_VERSION,
        "cycle": ckpt.cycle,
        "state": ckpt.state,
        "records": ckpt.records,
        "generators": ckpt.generators,
        "config_digest": ckpt.config_digest,
        "wall_s": ckpt.wall_s,
        "method_state": ckpt.method_state,
        "extra": ckpt.extra,
    }
    return atomic_torch_save(payload, path)


def load_checkpoint(path: str | Path, config_digest: str | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (our own file: full unpickling).

    With ``config_digest`` given, refuse a checkpoint written for another config.
    """
    payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    if payload.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint format {payload.get('format')!r}")
    if config_digest is not None and payload["config_digest"] != config_digest:
        raise ValueError(
            f"{path}: checkpoint was written for a different configuration; "
            "run without --resume or use a fresh --out folder"
        )
    return Checkpoint(
        cycle=payload["cycle"],
        state=payload["state"],
        records=payload["records"],
        generators=payload["generators"],
        config_digest=payload["config_digest"],
        wall_s=payload.get("wall_s", 0.0),
        method_state=payload.get("method_state"),
        extra=payload.get("extra", {}),
    )
