"""``hybrida learn analysis PRESET``: train a learned analysis and compare it with the classical ones.

Each preset names a pipeline ``run(out, *, seed, quick, overrides, resume, progress) -> summary``
that makes its twin, trains, saves ``out/analysis.pt``, cycles the learned and the classical
methods on the same test truth and observations, and writes ``out/summary.json`` (``rmse``,
``baselines``, ``train_s``, ``bar``, ``met``) and plots.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from hybrida.experiment.config import ConfigError, apply_overrides, format_validation_error
from hybrida.io.atomic import atomic_write

ConfigT = TypeVar("ConfigT", bound=BaseModel)

#: preset name -> module with ``DESCRIPTION`` and ``run``
PRESETS: dict[str, str] = {
    "aivar": "hybrida.experiment.learned_aivar",
    "cnn_analysis": "hybrida.experiment.learned_cnn",
    "amortised": "hybrida.experiment.learned_amortised",
    "4dvarnet": "hybrida.experiment.learned_4dvarnet",
}


def _pipeline(preset: str) -> Any:
    if preset not in PRESETS:
        raise ConfigError(f"unknown learned-analysis preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    try:
        return importlib.import_module(PRESETS[preset])
    except ModuleNotFoundError as err:
        raise ConfigError(f"preset {preset!r} is not available in this build ({err})") from None


def descriptions() -> dict[str, str]:
    """Preset name -> one-line description (presets not built yet say so)."""
    out = {}
    for name in PRESETS:
        try:
            out[name] = _pipeline(name).DESCRIPTION
        except ConfigError as err:
            out[name] = str(err)
    return out


def run_learned_analysis(
    preset: str,
    out: Path,
    *,
    seed: int = 1,
    quick: bool = False,
    overrides: list[str] | None = None,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run preset ``preset`` into ``out``; returns the summary it wrote to ``out/summary.json``."""
    return _pipeline(preset).run(
        Path(out), seed=int(seed), quick=bool(quick), overrides=list(overrides or []), resume=resume, progress=progress
    )


def pipeline_config(cls: type[ConfigT], quick_values: dict[str, Any], quick: bool, overrides: list[str]) -> ConfigT:
    """``cls`` from its defaults (with ``quick_values`` when ``quick``) and ``--set`` overrides, or a ConfigError."""
    base = cls(**(quick_values if quick else {})).model_dump()
    try:
        return cls(**apply_overrides(base, overrides))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, cls)) from None


def write_json(path: Path, obj: dict[str, Any]) -> Path:
    """``obj`` as indented JSON (keys sorted, tensors/numpy scalars as floats), written atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n"))
