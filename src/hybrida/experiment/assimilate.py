"""Assimilate observations from a file, with no truth: analyses and innovation statistics out.

The run config says the model, the method and its hyper-parameters; the
observation file (:mod:`hybrida.io.obsfile`) says what was observed, where
and when, so it sets the number of cycles and the steps between them. The
cycle scores against the observations (O−B, O−A, χ², Desroziers, DFS; see
:mod:`hybrida.innovations`), and the departures of every observation are
written back beside the QC decisions.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from hybrida.cycle import Record, Screen
from hybrida.experiment.builder import build_model
from hybrida.experiment.config import ConfigError, ExperimentConfig
from hybrida.experiment.runner import OBSERVATIONS_NAME, Result, run_experiment
from hybrida.io.atomic import atomic_write
from hybrida.io.obsfile import cycle_steps, load_observations
from hybrida.io.results import write_summary
from hybrida.models.base import Model
from hybrida.observations.base import Observation

__all__ = ["assimilate_file", "file_digest", "write_departures"]

log = logging.getLogger(__name__)

#: share of the run discarded as burn-in when the config's burn-in is longer than the file
BURN_IN_SHARE = 0.2


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (identifies the observations in checkpoints)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_config(
    config: ExperimentConfig,
    model: Model,
    observations: list[Observation],
    obs_path: str | Path,
    store_members: bool | None = None,
) -> ExperimentConfig:
    """``config`` with the cycles and steps per cycle of the file (burn-in shortened if the file is shorter)."""
    every = cycle_steps(observations, model.dt, config.observations.every, obs_path)
    n_cycles = len(observations)
    update = {"cycles": n_cycles, "observations": config.observations.model_copy(update={"every": every})}
    total = n_cycles * every * model.dt
    if config.burn_in >= total:
        burn_in = BURN_IN_SHARE * total
        log.warning("burn_in %g is not shorter than the file's %g time units; using %g", config.burn_in, total, burn_in)
        update["burn_in"] = burn_in
    if store_members is not None:
        update["store_members"] = store_members
    return config.model_copy(update=update)


def assimilate_file(
    config: ExperimentConfig,
    obs_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    store_members: bool | None = None,
    qc: Screen | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Result:
    """Cycle ``config``'s model and method over the observations in ``obs_path``; no truth needed.

    Writes into ``out_dir``: ``analyses.nc`` (``.zarr`` when large; analysis
    and background means, members with ``store_members``, innovation series),
    ``observations.nc`` (the input with ``hofx_background``, ``omb``, ``oma``
    and the QC decisions in ``qc_flag``), ``summary.json`` (``omb_rms``,
    ``oma_rms``, ``desroziers_sigma_o``, ...) and ``config.yaml``. The
    initial background is drawn from the config's seed as in the twin, so the
    file a twin wrote gives the twin's analyses bit for bit. ``obs_path``
    defaults to ``config.observations.file``.
    """
    if obs_path is None:
        obs_path = config.observations.file
    if obs_path is None or not Path(obs_path).is_file():
        raise ConfigError(
            f"observations.file: {obs_path} is not a file (write one with `hybrida run PRESET --write-obs` "
            "or `hybrida data`)"
        )
    model = build_model(config)
    observations = load_observations(obs_path, getattr(torch, config.dtype), n_state=model.n)
    config = file_config(config, model, observations, obs_path, store_members)
    result = run_experiment(
        config,
        out_dir,
        resume=resume,
        progress=progress,
        observations=observations,
        qc=qc,
        digest=file_digest(obs_path),
    )
    result.summary["observations_file"] = str(obs_path)
    if out_dir is not None:
        out = Path(out_dir)
        result.files["observations"] = write_departures(obs_path, observations, result.records, out / OBSERVATIONS_NAME)
        result.files["summary"] = write_summary(result.summary, out / "summary.json")
    return result


def write_departures(
    obs_path: str | Path, observations: list[Observation], records: list[Record], path: str | Path
) -> Path:
    """Copy of the observation file with per-observation departures and the QC decisions.

    Adds ``hofx_background`` = H(x̄_b), ``omb`` = y − H(x̄_b) and ``oma`` = y − H(x̄_a)
    (NaN for missing values and for cycles not reached) and sets ``qc_flag``
    to the decisions of the run (IODA's ObsValue/HofX/EffectiveQC in spirit).
    """
    with xr.open_dataset(obs_path, engine="h5netcdf") as ds:
        ds = ds.load()
    n = ds.sizes["nlocs"]
    omb, oma = np.full(n, np.nan), np.full(n, np.nan)
    flags = ds["qc_flag"].values.astype(np.int8).copy()
    for rec in records:
        rows = observations[rec.cycle - 1].meta["rows"]
        if rec.innovation is not None:
            omb[rows] = rec.innovation.omb.detach().cpu().numpy()
            oma[rows] = rec.innovation.oma.detach().cpu().numpy()
        if rec.qc_flags is not None:
            flags[rows] = np.maximum(flags[rows], rec.qc_flags.cpu().numpy().astype(np.int8))
    y = ds["obs_value"].values
    ds["hofx_background"] = ("nlocs", y - omb, {"long_name": "H(background mean)"})
    ds["omb"] = ("nlocs", omb, {"long_name": "observation minus background (mean)"})
    ds["oma"] = ("nlocs", oma, {"long_name": "observation minus analysis (mean)"})
    ds["qc_flag"] = ("nlocs", flags, dict(ds["qc_flag"].attrs))
    ds.attrs["departures"] = "written by hybrida assimilate"
    return atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))


def check_source_is_not_output(obs_path: str | Path, out_dir: str | Path) -> None:
    """Refuse an output folder whose observations.nc would overwrite the input file."""
    if Path(out_dir).resolve() / OBSERVATIONS_NAME == Path(obs_path).resolve():
        raise ConfigError(
            f"--out: {out_dir} holds the input {obs_path}; write the results to another folder"
        )
