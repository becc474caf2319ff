"""Observation files: a flat NetCDF layout in the spirit of JEDI's IODA.

One dimension ``nlocs`` holds every observation of every cycle, with the
variables

* ``obs_value`` (float64): the observed value, NaN when missing;
* ``obs_error`` (float64): the observation-error standard deviation;
* ``location`` (float64): position in grid-index units (the observed state index);
* ``time`` (float64): the observation time (model time units, or the cycle
  number when no times were given; see its ``units`` attribute);
* ``cycle`` (int64): the analysis cycle the observation belongs to;
* ``qc_flag`` (int8): 0 = good, 1 = missing value, other values = rejected by
  quality control (see :mod:`hybrida.observations.qc`);
* ``predictor_<name>`` (float64, optional): bias-correction predictors.

The global attribute ``n_state`` is the state size. Any NetCDF reader
(xarray, netCDF4, h5py) can read the file; hybrida does not need to be
installed. Only index-type operators (H x = x[..., idx]) with uncorrelated
errors are stored: correlated R has no place in a flat per-location layout.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from hybrida.io.atomic import atomic_write
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError
from hybrida.observations.qc import QC_BACKGROUND, QC_GOOD, QC_LEARNED, QC_MISSING, QC_VARQC

__all__ = ["ObsFileError", "cycle_steps", "load_observations", "read_observations", "write_observations"]

#: qc_flag values and their meanings (the flags of :mod:`hybrida.observations.qc`)
QC_FLAGS = np.array([QC_GOOD, QC_MISSING, QC_BACKGROUND, QC_LEARNED, QC_VARQC], np.int8)
QC_MEANINGS = "good missing rejected_background_check rejected_learned_detector rejected_variational_qc"


class ObsFileError(ValueError):
    """A malformed observation file; the message names the file and the field to fix."""


#: variables every observation file has, all on the ``nlocs`` dimension
REQUIRED = ("obs_value", "obs_error", "location", "time", "cycle", "qc_flag")
#: optional per-observation bias-correction predictors are variables named ``predictor_<name>``
PREDICTOR_PREFIX = "predictor_"


def _index_of(obs: Observation, k: int) -> np.ndarray:
    """The observed state indices of an index-type observation, or a clear error."""
    if obs.indices is not None:
        return obs.indices.detach().cpu().numpy().astype(np.int64)
    if obs.matrix is None or obs.locations is None:
        raise ValueError(
            f"write_observations: observation {k} has no matrix/locations; only index-type "
            "(linear subset) networks can be written"
        )
    m = obs.matrix.detach().cpu().numpy()
    idx = np.rint(obs.locations.detach().cpu().numpy()).astype(np.int64)
    expected = np.zeros_like(m)
    expected[np.arange(m.shape[0]), idx] = 1.0
    if m.shape[0] != obs.p or not np.array_equal(m, expected):
        raise ValueError(
            f"write_observations: observation {k} is not an index operator (rows of H must be unit "
            "vectors at the locations); only subset networks can be written"
        )
    return idx


def write_observations(
    path: str | os.PathLike,
    observations: Sequence[Observation],
    times: Sequence[float] | None = None,
    attrs: dict | None = None,
) -> Path:
    """Write observations of cycles 1..K to ``path`` (NetCDF, h5netcdf engine), atomically.

    ``times[k]`` is the time of ``observations[k]`` (default: its cycle
    number). The cycle is ``obs.meta["cycle"]`` when present, else k + 1.
    The file appears only once complete (temporary file + ``os.replace``).
    """
    path = Path(path)
    if times is not None and len(times) != len(observations):
        raise ValueError(f"write_observations: got {len(times)} times for {len(observations)} observations")
    values, errors, locs, tt, cycles = [], [], [], [], []
    predictors: dict[str, list[np.ndarray]] = {}
    n_state = None
    for k, obs in enumerate(observations):
        if not isinstance(obs.error, DiagonalError):
            raise ValueError(  # noqa: TRY004
                f"write_observations: observation {k} has correlated errors; the flat file stores "
                "only per-observation std (use correlation_length=0)"
            )
        idx = _index_of(obs, k)
        n_k = int(obs.n) if obs.indices is not None else int(obs.matrix.shape[-1])
        if n_state is not None and n_k != n_state:
            raise ValueError(f"write_observations: state sizes differ between observations ({n_state} vs {n_k})")
        n_state = n_k
        cycle = int(obs.meta.get("cycle", k + 1))
        values.append(obs.y.detach().cpu().double().numpy())
        errors.append(obs.error.std.detach().cpu().double().numpy())
        locs.append(idx.astype(np.float64))
        tt.append(np.full(obs.p, float(cycle) if times is None else float(times[k])))
        cycles.append(np.full(obs.p, cycle, dtype=np.int64))
        for name, v in (obs.meta.get("predictors") or {}).items():
            predictors.setdefault(name, []).append(np.asarray(torch.as_tensor(v).detach().cpu(), np.float64))
    if any(len(v) != len(observations) for v in predictors.values()):
        raise ValueError("write_observations: every observation must carry the same meta['predictors'] names")

    def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    y = cat(values, np.float64)
    qc = np.where(np.isfinite(y), QC_GOOD, QC_MISSING).astype(np.int8)
    dim = ("nlocs",)
    ds = xr.Dataset(
        {
            "obs_value": (dim, y, {"long_name": "observed value", "missing_value_flag": "NaN"}),
            "obs_error": (dim, cat(errors, np.float64), {"long_name": "observation-error standard deviation"}),
            "location": (dim, cat(locs, np.float64), {"long_name": "observed state index", "units": "grid index"}),
            "time": (dim, cat(tt, np.float64), {"long_name": "observation time",
                                                 "units": "cycle" if times is None else "model time units"}),
            "cycle": (dim, cat(cycles, np.int64), {"long_name": "analysis cycle"}),
            "qc_flag": (dim, qc, {"long_name": "quality-control flag", "flag_values": QC_FLAGS,
                                  "flag_meanings": QC_MEANINGS}),
            **{
                PREDICTOR_PREFIX + name: (dim, cat(parts, np.float64), {"long_name": f"bias predictor {name}"})
                for name, parts in predictors.items()
            },
        },
        attrs={
            "title": "hybrida observations",
            "layout": "flat nlocs, IODA-like",
            "n_state": -1 if n_state is None else n_state,
            **(attrs or {}),
        },
    )
    return atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_values(path: Path, d: dict[str, np.ndarray], n: int) -> None:
    """Per-value checks: finite values or NaN, positive errors, locations on the grid."""
    bad = ~np.isfinite(d["std"]) | (d["std"] <= 0)
    if bad.any():
        raise ObsFileError(
            f"{path}: obs_error: {int(bad.sum())} values are NaN, inf or <= 0 (first at nlocs="
            f"{_first(bad)}); give each observation a finite error std > 0"
        )
    bad = np.isinf(d["y"])
    if bad.any():
        raise ObsFileError(f"{path}: obs_value: infinite value at nlocs={_first(bad)}; write missing values as NaN")
    loc = d["location"]
    bad = ~np.isfinite(loc) | (loc < 0) | (loc > n - 1) | (np.abs(loc - np.rint(loc)) > 1e-9)
    if bad.any():
        i = _first(bad)
        raise ObsFileError(
            f"{path}: location: {float(loc[i])!r} at nlocs={i} is not a grid index in [0, {n - 1}] "
            f"(n_state={n})"
        )


def _check_cycles(path: Path, d: dict[str, np.ndarray]) -> None:
    """Cycles 1..K without gaps, one time per cycle, times strictly increasing with the cycle."""
    cycles, times = d["cycle"], d["time"]
    if not np.isfinite(times).all():
        raise ObsFileError(f"{path}: time: NaN or inf at nlocs={_first(~np.isfinite(times))}")
    ids = np.unique(cycles)
    if ids.size == 0:
        raise ObsFileError(f"{path}: nlocs: the file holds no observations")
    expected = np.arange(1, ids.size + 1)
    if ids[0] != 1 or not np.array_equal(ids, expected):
        missing = sorted(set(range(1, int(ids.max()) + 1)) - set(ids.tolist()))[:5]
        raise ObsFileError(
            f"{path}: cycle: cycles must run 1..K without gaps (first {int(ids[0])}, missing {missing}); "
            "write a cycle without data as NaN values with qc_flag 1"
        )
    per_cycle = []
    for c in ids:
        t = times[cycles == c]
        if t.min() != t.max():
            raise ObsFileError(
                f"{path}: time: cycle {int(c)} has rows at different times ({t.min():g} .. {t.max():g}); "
                "one analysis time per cycle"
            )
        per_cycle.append(t[0])
    steps = np.diff(per_cycle)
    if (steps <= 0).any():
        k = int(np.flatnonzero(steps <= 0)[0]) + 1
        what = "duplicate" if steps[k - 1] == 0 else "unsorted"
        raise ObsFileError(
            f"{path}: time: {what} times: cycle {k + 1} at {per_cycle[k]:g} is not after cycle {k} at "
            f"{per_cycle[k - 1]:g}"
        )


def read_observations(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read and check an observation file: y, std, location, time, cycle, qc_flag, n_state, predictors.

    Raises :class:`ObsFileError` naming the file and the field for a file
    that cannot be read, lacks a variable, has variables off the ``nlocs``
    dimension, NaN/inf or non-positive errors, locations outside the grid,
    gaps in the cycles, several times in one cycle, or unsorted/duplicate
    times.
    """
    path = Path(path)
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            ds = ds.load()
    except (OSError, ValueError) as err:
        raise ObsFileError(f"{path}: not a readable NetCDF observation file ({err})") from None
    missing = [v for v in REQUIRED if v not in ds.variables]
    if missing:
        raise ObsFileError(f"{path}: missing variables {missing}; an observation file has {', '.join(REQUIRED)}")
    predictors = [str(v) for v in ds.data_vars if str(v).startswith(PREDICTOR_PREFIX)]
    for v in (*REQUIRED, *predictors):
        if ds[v].dims != ("nlocs",):
            raise ObsFileError(f"{path}: {v}: has dimensions {ds[v].dims}; expected ('nlocs',)")
    try:
        n_state = int(ds.attrs.get("n_state", -1))
    except (TypeError, ValueError):
        n_state = -1
    if n_state <= 0:
        raise ObsFileError(f"{path}: n_state: the global attribute must be the state size (> 0)")
    data = {
        "y": ds["obs_value"].values.astype(np.float64),
        "std": ds["obs_error"].values.astype(np.float64),
        "location": ds["location"].values.astype(np.float64),
        "time": ds["time"].values.astype(np.float64),
        "cycle": ds["cycle"].values.astype(np.int64),
        "qc_flag": ds["qc_flag"].values.astype(np.int8),
        "n_state": np.int64(n_state),
        "time_units": str(ds["time"].attrs.get("units", "cycle")),
        "predictors": {v[len(PREDICTOR_PREFIX):]: ds[v].values.astype(np.float64) for v in predictors},
    }
    _check_values(path, data, n_state)
    _check_cycles(path, data)
    return data


def cycle_steps(observations: list[Observation], dt: float, default: int, path: str | os.PathLike = "") -> int:
    """Model steps between two analyses implied by the loaded file's times (``default`` for cycle numbers).

    With times in model time units, cycle k must lie at t = k * every * dt
    (cycles count analyses from t = 0); otherwise an :class:`ObsFileError`.
    """
    if not observations or observations[0].meta.get("time_units", "cycle") == "cycle":
        return default
    times = np.array([o.meta["time"] for o in observations])
    every = int(np.rint(times[0] / dt))
    k = np.arange(1, times.size + 1)
    if every < 1 or not np.allclose(times, k * every * dt, rtol=1e-9, atol=1e-9 * dt):
        raise ObsFileError(
            f"{path}: time: analysis times must be k * every * dt with the model's dt={dt:g}; cycle 1 "
            f"is at {times[0]:g}, cycle {times.size} at {times[-1]:g}"
        )
    return every


def load_observations(
    path: str | os.PathLike, dtype: torch.dtype = torch.float64, n_state: int | None = None
) -> list[Observation]:
    """Read an observation file back into one index-type :class:`Observation` per cycle (in cycle order).

    Values flagged (qc_flag != 0) come back as NaN so that
    :meth:`Observation.valid` masks them; ``meta`` holds the cycle, time,
    file row indices (``rows``) and any bias-correction ``predictors``.
    ``n_state`` (the model's state size) is checked against the file's.
    """
    data = read_observations(path)
    n = int(data["n_state"])
    if n_state is not None and n != n_state:
        raise ObsFileError(f"{path}: n_state: the file observes a state of {n} variables, the model has {n_state}")
    out = []
    for c in np.unique(data["cycle"]):
        sel = data["cycle"] == c
        idx = torch.as_tensor(np.rint(data["location"][sel]).astype(np.int64))
        y = torch.as_tensor(data["y"][sel], dtype=dtype)
        y = torch.where(torch.as_tensor(data["qc_flag"][sel] == QC_GOOD), y, torch.nan)
        std = torch.as_tensor(data["std"][sel], dtype=dtype)

        def operator(x: torch.Tensor, idx: torch.Tensor = idx) -> torch.Tensor:
            return x.index_select(-1, idx.to(x.device))

        meta = {
            "cycle": int(c),
            "time": float(data["time"][sel][0]),
            "time_units": data["time_units"],
            "rows": np.flatnonzero(sel),
        }
        if data["predictors"]:
            meta["predictors"] = {k: torch.as_tensor(v[sel], dtype=dtype) for k, v in data["predictors"].items()}
        out.append(
            Observation(
                y=y,
                operator=operator,
                error=DiagonalError(std * std),
                locations=idx.to(dtype),
                meta=meta,
                indices=idx,
                n=n,
            )
        )
    return out
