"""``hybrida learn {analysis,latent,score,filter,subgrid} PRESET``: train a learned DA part and compare it with the classical ones.

Each preset names a pipeline ``run(out, *, seed, quick, overrides, resume, progress) -> summary``
that makes its twin, trains, saves the trained part into ``out``, cycles the learned and the
classical methods on the same test truth and observations, and writes ``out/summary.json``
(``rmse`` or ``r_rmse``, ``baselines``, ``train_s``, ``bar``, ``met``) and plots. Presets are
grouped in families, one CLI command each.
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

#: family (``hybrida learn FAMILY``) -> preset name -> module with ``DESCRIPTION`` and ``run``
FAMILIES: dict[str, dict[str, str]] = {
    "analysis": {
        "aivar": "hybrida.experiment.learned_aivar",
        "cnn_analysis": "hybrida.experiment.learned_cnn",
        "amortised": "hybrida.experiment.learned_amortised",
        "4dvarnet": "hybrida.experiment.learned_4dvarnet",
    },
    "latent": {
        "latent_ks": "hybrida.experiment.latent_ks",
        "latent_l96": "hybrida.experiment.latent_l96",
    },
    "score": {
        "score_l96": "hybrida.experiment.score_l96",
    },
    "filter": {
        "bach2025_l96": "hybrida.experiment.filter_bach_l96",
    },
    "subgrid": {
        "qg_subgrid": "hybrida.experiment.qg_subgrid",
    },
}
#: the learned analyses proper (``hybrida learn analysis``)
PRESETS: dict[str, str] = FAMILIES["analysis"]


def _presets(family: str) -> dict[str, str]:
    if family not in FAMILIES:
        raise ConfigError(f"unknown family of learned parts {family!r}; choose one of: {', '.join(FAMILIES)}")
    return FAMILIES[family]


def _pipeline(preset: str, family: str = "analysis") -> Any:
    presets = _presets(family)
    if preset not in presets:
        raise ConfigError(f"unknown learned-{family} preset {preset!r}; choose one of: {', '.join(presets)}")
    try:
        return importlib.import_module(presets[preset])
    except ModuleNotFoundError as err:
        if err.name != presets[preset]:  # a dependency of the pipeline is missing: say which
            raise ConfigError(f"preset {preset!r} needs the package {err.name!r}: install it") from None
        raise ConfigError(f"preset {preset!r} is not available in this build") from None


def descriptions(family: str = "analysis") -> dict[str, str]:
    """Preset name -> one-line description (presets not built yet say so)."""
    out = {}
    for name in _presets(family):
        try:
            out[name] = _pipeline(name, family).DESCRIPTION
        except ConfigError as err:
            out[name] = str(err)
    return out


def run_learned_analysis(
    preset: str,
    out: Path,
    *,
    family: str = "analysis",
    seed: int = 1,
    quick: bool = False,
    overrides: list[str] | None = None,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run preset ``preset`` of ``family`` into ``out``; returns the summary it wrote to ``out/summary.json``."""
    return _pipeline(preset, family).run(
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
