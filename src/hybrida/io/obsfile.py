"""Observation files: a flat NetCDF layout in the spirit of JEDI's IODA.

One dimension ``nlocs`` holds every observation of every cycle, with the
variables

* ``obs_value`` (float64): the observed value, NaN when missing;
* ``obs_error`` (float64): the observation-error standard deviation;
* ``location`` (float64): position in grid-index units (the observed state index);
* ``time`` (float64): the observation time (model time units, or the cycle
  number when no times were given; see its ``units`` attribute);
* ``cycle`` (int64): the analysis cycle the observation belongs to;
* ``qc_flag`` (int8): 0 = good, 1 = missing value.

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

__all__ = ["load_observations", "read_observations", "write_observations"]

QC_GOOD = 0
QC_MISSING = 1


def _index_of(obs: Observation, k: int) -> np.ndarray:
    """The observed state indices of an index-type observation, or a clear error."""
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
    n_state = None
    for k, obs in enumerate(observations):
        if not isinstance(obs.error, DiagonalError):
            raise ValueError(  # noqa: TRY004
                f"write_observations: observation {k} has correlated errors; the flat file stores "
                "only per-observation std (use correlation_length=0)"
            )
        idx = _index_of(obs, k)
        n_k = int(obs.matrix.shape[-1])
        if n_state is not None and n_k != n_state:
            raise ValueError(f"write_observations: state sizes differ between observations ({n_state} vs {n_k})")
        n_state = n_k
        cycle = int(obs.meta.get("cycle", k + 1))
        values.append(obs.y.detach().cpu().double().numpy())
        errors.append(obs.error.std.detach().cpu().double().numpy())
        locs.append(idx.astype(np.float64))
        tt.append(np.full(obs.p, float(cycle) if times is None else float(times[k])))
        cycles.append(np.full(obs.p, cycle, dtype=np.int64))

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
            "qc_flag": (dim, qc, {"long_name": "quality-control flag", "flag_values": np.array([0, 1], np.int8),
                                  "flag_meanings": "good missing"}),
        },
        attrs={
            "title": "hybrida observations",
            "layout": "flat nlocs, IODA-like",
            "n_state": -1 if n_state is None else n_state,
            **(attrs or {}),
        },
    )
    return atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))


def read_observations(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an observation file into numpy arrays: y, std, location, time, cycle, qc_flag, n_state."""
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        ds = ds.load()
    missing = {"obs_value", "obs_error", "location", "time", "cycle", "qc_flag"} - set(ds.variables)
    if missing:
        raise ValueError(f"read_observations: {path} lacks variables {sorted(missing)}")
    return {
        "y": ds["obs_value"].values.astype(np.float64),
        "std": ds["obs_error"].values.astype(np.float64),
        "location": ds["location"].values.astype(np.float64),
        "time": ds["time"].values.astype(np.float64),
        "cycle": ds["cycle"].values.astype(np.int64),
        "qc_flag": ds["qc_flag"].values.astype(np.int8),
        "n_state": np.int64(ds.attrs.get("n_state", -1)),
    }


def load_observations(path: str | os.PathLike, dtype: torch.dtype = torch.float64) -> list[Observation]:
    """Read an observation file back into one index-type :class:`Observation` per cycle (in cycle order).

    Values flagged missing (qc_flag != 0) come back as NaN so that
    :meth:`Observation.valid` masks them.
    """
    data = read_observations(path)
    n = int(data["n_state"])
    if n <= 0 and data["y"].size:
        raise ValueError(f"load_observations: {path} has no valid n_state attribute")
    out = []
    for c in np.unique(data["cycle"]):
        sel = data["cycle"] == c
        idx = torch.as_tensor(np.rint(data["location"][sel]).astype(np.int64))
        y = torch.as_tensor(data["y"][sel], dtype=dtype)
        y = torch.where(torch.as_tensor(data["qc_flag"][sel] == QC_GOOD), y, torch.nan)
        std = torch.as_tensor(data["std"][sel], dtype=dtype)
        matrix = torch.zeros(idx.numel(), n, dtype=dtype)
        matrix[torch.arange(idx.numel()), idx] = 1.0

        def operator(x: torch.Tensor, idx: torch.Tensor = idx) -> torch.Tensor:
            return x.index_select(-1, idx.to(x.device))

        out.append(
            Observation(
                y=y,
                operator=operator,
                error=DiagonalError(std * std),
                locations=idx.to(dtype),
                matrix=matrix,
                meta={"cycle": int(c), "time": float(data["time"][sel][0])},
            )
        )
    return out
