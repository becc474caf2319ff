"""Memory a twin experiment keeps for its whole run, checked against the RAM available before it starts.

A run holds the truth at every analysis time, one observation per cycle and
one record per cycle in memory; a run of 10^10 cycles would otherwise start
allocating silently until the machine swaps or the process is killed.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from hybrida.experiment.config import ConfigError, ExperimentConfig

#: share of the available RAM a run may plan to use
MEMORY_SHARE = 0.5
#: Python objects (record, observation, tensor headers) per cycle, measured on
#: the Lorenz-63 / Lorenz-96 presets (about 7 KB per cycle on top of the tensors)
OBJECT_BYTES_PER_CYCLE = 8192


def available_memory(device: str | None = None) -> int | None:
    """Bytes available now: RAM (psutil when installed, else the free pages; None if unknown), or the
    free memory of a CUDA ``device`` (``torch.cuda.mem_get_info``), where a run on it keeps its tensors.
    """
    if device is not None and torch.device(device).type == "cuda":
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _available(config: ExperimentConfig) -> int | None:
    """:func:`available_memory` where the run keeps its tensors (RAM for a CPU run)."""
    return available_memory() if torch.device(config.device).type == "cpu" else available_memory(config.device)


def _tensor_bytes(obj: Any, depth: int = 1) -> int:
    """Bytes of the tensors among the attributes of ``obj`` (and of its attributes, ``depth`` deep)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if depth < 0 or not hasattr(obj, "__dict__"):
        return 0
    return sum(_tensor_bytes(v, depth - 1) for v in vars(obj).values())


def observation_bytes(obs_system: Any, x: torch.Tensor) -> int:
    """Tensor bytes of one observation of ``x`` (a throwaway generator: no seed stream is touched)."""
    try:
        obs = obs_system.observe(x, 1, torch.Generator().manual_seed(0))
    except Exception:  # noqa: BLE001 - building reports the real problem; assume y + H
        return x.element_size() * x.numel() * (x.numel() + 1)
    return _tensor_bytes(obs)


def _item_bytes(config: ExperimentConfig) -> int:
    """Bytes per number in ``config``'s dtype."""
    return torch.finfo(getattr(torch, config.dtype)).bits // 8


def estimate_run_memory(
    config: ExperimentConfig, n: int, n_truth: int, obs_bytes: int, ensemble: int | None
) -> int:
    """Bytes a run of ``config`` keeps: truth (built as a list, then stacked), observations, records.

    ``n``/``n_truth``: variables of the forecast / truth model; ``obs_bytes``:
    tensor bytes of one observation; ``ensemble``: members stored per record
    (``store_members``), else None.
    """
    item = _item_bytes(config)
    truth = item * (2 * n_truth + n)
    records = item * 4 * n + (item * n * ensemble if ensemble else 0)
    return config.cycles * (truth + obs_bytes + records + OBJECT_BYTES_PER_CYCLE)


#: dense (n, n) copies a climatology-based method holds at once: the accumulated sums, the
#: normalised covariance and the method's checked / symmetrised copy
CLIMATOLOGY_COPIES = 3


def check_climatology_memory(config: ExperimentConfig, n: int, available: int | None = None) -> None:
    """Raise :class:`ConfigError` when the dense (n, n) climatological covariance cannot fit.

    Methods with a climatology (3D-Var, OI, 4D-Var, ...) receive it as a dense matrix:
    ``CLIMATOLOGY_COPIES`` x n² numbers (n = 32 768, a 128×128×2 QG state: 26 GB), which
    a machine of 24 GB cannot hold; refuse before the long climatology run, not after it.
    """
    available = _available(config) if available is None else available
    if not available:
        return
    item = _item_bytes(config)
    need = CLIMATOLOGY_COPIES * item * n * n
    if need > MEMORY_SHARE * available:
        raise ConfigError(
            f"method.name: '{config.method.name}' needs the dense ({n}, {n}) climatological covariance, "
            f"about {_size(need)} with its working copies, more than {MEMORY_SHARE:.0%} of the "
            f"{_size(available)} available; use a method without a climatology (letkf, etkf, enkf) "
            "or a smaller state"
        )


def _size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1000 or unit == "PB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1000
    raise AssertionError  # pragma: no cover


def check_run_memory(
    config: ExperimentConfig, n: int, n_truth: int, obs_bytes: int, available: int | None = None
) -> None:
    """Raise :class:`ConfigError` when the run needs more than ``MEMORY_SHARE`` of the available RAM.

    ``obs_bytes``: see :func:`observation_bytes`; ``available`` defaults to
    :func:`available_memory`.
    """
    available = _available(config) if available is None else available
    if not available:
        return
    N = config.method.params.get("N") if config.store_members else None
    ensemble = N if isinstance(N, int) else None
    need = estimate_run_memory(config, n, n_truth, obs_bytes, ensemble)
    budget = MEMORY_SHARE * available
    if need <= budget:
        return
    per_cycle = need / config.cycles
    hint = f"use at most {int(budget // per_cycle)} cycles"
    if ensemble:
        hint += " or set store_members: false"
    raise ConfigError(
        f"cycles: {config.cycles} cycles need about {_size(need)} of memory (truth, observations "
        f"and records, {_size(per_cycle)} per cycle), more than {MEMORY_SHARE:.0%} of the "
        f"{_size(available)} available; {hint}"
    )
