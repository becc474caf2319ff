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
#: keys every checkpoint written by :func:`save_checkpoint` has
REQUIRED_KEYS = ("cycle", "state", "records", "generators", "config_digest")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, truncated, foreign, or for another config."""


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


def _rng_states(gens: Any) -> bool:
    """Whether ``gens`` holds the two RNG states (uint8 tensors) a resumed run restores."""
    return isinstance(gens, dict) and all(
        isinstance(gens.get(k), torch.Tensor) and gens[k].dtype == torch.uint8
        for k in ("analysis", "torch_global")
    )


def load_checkpoint(path: str | Path, config_digest: str | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (our own file: full unpickling).

    With ``config_digest`` given, refuse a checkpoint written for another config.
    """
    fix = "delete it or use a fresh --out folder to start over"
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - truncated zip, random bytes, bad pickle ...
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupt: {reason}); {fix}"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"{path}: not a hybrida checkpoint (holds a {type(payload).__name__}); {fix}"
        )
    if payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {payload.get('format')!r} "
            f"(expected {FORMAT_VERSION}); {fix}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    gens = payload.get("generators")
    if not missing and not _rng_states(gens):
        missing = ["the RNG states generators.analysis/torch_global"]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}; {fix}")
    if config_digest is not None and payload["config_digest"] != config_digest:
        raise CheckpointError(
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
