"""Observed monthly Niño-3 SST anomalies as a hybrida observation file (the ENSO real-data case).

Two copies of NOAA CPC's monthly Niño-region SST table ship inside PyPI
wheels, so no download is needed:

* ``pywavelets``: ``pywt/data/sst_nino3.npz`` (key ``data``, shape (800, 10)),
  ERSST v4, 1950-01 to 2016-08;
* ``statsmodels``: ``statsmodels/datasets/elnino/src/elnino.dat`` (whitespace
  table), ERSST v3b, 1950-01 to 2010-12 (statsmodels' public loader exposes
  only Niño-1+2, so the table is read directly).

Both have the columns YR MON NINO1+2 ANOM NINO3 ANOM NINO4 ANOM NINO3.4 ANOM
(°C). The file observes the first variable (T, the Niño-3 anomaly) of a
state [T, h] (:class:`hybrida.models.recharge.RechargeOscillator`); model
time is in months with t = 1 at 1950-01, so cycle k is month k. The Niño-3.4
and Niño-4 anomalies travel as extra ``nlocs`` variables (``nino34_anom``,
``nino4_anom``) for an independent check; the loader ignores them.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from hybrida.io.atomic import atomic_write
from hybrida.io.obsfile import write_observations
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError

__all__ = ["ENSO_OBS_ERROR_STD", "ENSO_SOURCES", "EnsoTable", "enso_observations", "load_enso",
           "write_enso_observations"]

#: initial observation-error std of the Niño-3 anomaly (°C), to be tuned by Desroziers diagnostics;
#: of the order of the ERSST uncertainty of a regional monthly mean plus representativeness error
ENSO_OBS_ERROR_STD = 0.3
#: the packaged copies: package, path inside it, SST product, last month
ENSO_SOURCES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "pywavelets": ("pywt", ("data", "sst_nino3.npz"), "ERSST v4"),
    "statsmodels": ("statsmodels", ("datasets", "elnino", "src", "elnino.dat"), "ERSST v3b"),
}
#: column indices of the anomalies in the 10-column table
_COLUMNS = {"nino12": 3, "nino3": 5, "nino4": 7, "nino34": 9}


class EnsoTable(dict):
    """``year``, ``month`` and the anomalies ``nino12``, ``nino3``, ``nino4``, ``nino34`` (°C), 1-D arrays."""


def _packaged_file(source: str) -> Path:
    """The table inside the installed package, or a one-line ImportError saying what to install."""
    if source not in ENSO_SOURCES:
        raise ValueError(f"source must be one of {', '.join(ENSO_SOURCES)}, got {source!r}")
    package, parts, _ = ENSO_SOURCES[source]
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the ENSO data ({source}) ship with {package}: install hybrida[data]")
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*parts)
        if path.is_file():
            return path
    raise ImportError(f"{package} is installed but has no {'/'.join(parts)}; install hybrida[data] again")


def load_enso(source: str = "pywavelets") -> EnsoTable:
    """Read the packaged monthly Niño table: years, months and the four anomaly series."""
    path = _packaged_file(source)
    if path.suffix == ".npz":
        with np.load(path) as npz:
            table = np.asarray(npz["data"], dtype=np.float64)
    else:
        table = np.loadtxt(path, skiprows=1, ndmin=2)
    if table.ndim != 2 or table.shape[1] != 10:
        raise ValueError(f"{path}: expected 10 columns (YR MON and 4 x (SST, ANOM)), got {table.shape}")
    months = table[:, 0] * 12 + table[:, 1]
    if not np.array_equal(np.diff(months), np.ones(months.size - 1)):
        raise ValueError(f"{path}: expected consecutive months")
    out = EnsoTable(year=table[:, 0].astype(np.int64), month=table[:, 1].astype(np.int64))
    for name, col in _COLUMNS.items():
        out[name] = table[:, col]
    return out


def month_index(year: int, month: int) -> int:
    """Model time of a calendar month: t = 1 at 1950-01 (months since 1949-12)."""
    return (year - 1950) * 12 + month


def enso_observations(
    source: str = "pywavelets", obs_error_std: float = ENSO_OBS_ERROR_STD, dtype: torch.dtype = torch.float64
) -> tuple[list[Observation], EnsoTable]:
    """One observation of T = Niño-3 anomaly per month on the state [T, h] (H = [1, 0]), and the table."""
    if not math.isfinite(obs_error_std) or obs_error_std <= 0:
        raise ValueError(f"obs_error_std must be a finite number > 0, got {obs_error_std}")
    table = load_enso(source)
    var = torch.tensor([obs_error_std**2], dtype=dtype)
    matrix = torch.tensor([[1.0, 0.0]], dtype=dtype)
    out = []
    for k, value in enumerate(table["nino3"], start=1):
        out.append(
            Observation(
                y=torch.tensor([float(value)], dtype=dtype),
                operator=lambda x: x[..., :1],
                error=DiagonalError(var),
                locations=torch.zeros(1, dtype=dtype),
                matrix=matrix,
                meta={"cycle": k},
            )
        )
    return out, table


def write_enso_observations(
    path: str | os.PathLike, source: str = "pywavelets", obs_error_std: float = ENSO_OBS_ERROR_STD
) -> Path:
    """Write the Niño-3 anomaly series to ``path`` as a hybrida observation file; returns the path.

    n_state = 2 ([T, h]), location 0 (T), times in months since 1949-12
    (model time, dt = 1 month), error std ``obs_error_std`` (°C) for every
    month; extra variables ``nino34_anom``, ``nino4_anom``, ``nino12_anom``,
    ``year`` and ``month`` for independent checks; provenance and licence in
    the global attributes. Raises ImportError (one line: install
    hybrida[data]) when the package is missing.
    """
    observations, table = enso_observations(source, obs_error_std)
    package, parts, product = ENSO_SOURCES[source]
    first, last = (int(table["year"][0]), int(table["month"][0])), (int(table["year"][-1]), int(table["month"][-1]))
    attrs = {
        "title": f"Observed monthly Nino-3 SST anomaly, {first[0]}-{first[1]:02d} to {last[0]}-{last[1]:02d}",
        "source": f"NOAA Climate Prediction Center monthly Nino-region SST indices ({product}), "
        f"as packaged in {package} ({'/'.join(parts)})",
        "institution": "NOAA NCEP Climate Prediction Center",
        "references": (
            "NOAA CPC Nino indices (https://www.cpc.ncep.noaa.gov/data/indices/); Huang et al. (2015) "
            "Extended Reconstructed Sea Surface Temperature version 4 (ERSST.v4), J. Climate 28, 911-930; "
            "Smith et al. (2008) Improvements to NOAA's historical merged land-ocean surface temperature "
            "analysis (1880-2006), J. Climate 21, 2283-2296 (ERSST v3b)"
        ),
        "license": "public domain (U.S. Government work, NOAA); redistributed in the "
        f"{package} wheel",
        "variable": "Nino-3 (5N-5S, 150W-90W) SST anomaly",
        "units": "degC",
        "state": "[T, h]: T = Nino-3 anomaly (observed, location 0), h = thermocline depth anomaly",
        "time_origin": "model time t = months since 1949-12 (t = 1 is 1950-01); dt = 1 month",
        "sst_product": product,
        "data_source": source,
        "obs_error_std_note": "initial guess, to be tuned by Desroziers diagnostics (hybrida.experiment.enso)",
        "model": "recharge",
    }
    times = [float(month_index(int(y), int(m))) for y, m in zip(table["year"], table["month"], strict=True)]
    path = Path(path)
    write_observations(path, observations, times, attrs)
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        ds = ds.load()
    extra = {
        "nino34_anom": ("nino34", "Nino-3.4 SST anomaly (not assimilated)"),
        "nino4_anom": ("nino4", "Nino-4 SST anomaly (not assimilated)"),
        "nino12_anom": ("nino12", "Nino-1+2 SST anomaly (not assimilated)"),
    }
    for var, (col, long_name) in extra.items():
        ds[var] = ("nlocs", table[col].astype(np.float64), {"long_name": long_name, "units": "degC"})
    ds["year"] = ("nlocs", table["year"].astype(np.int64), {"long_name": "calendar year"})
    ds["month"] = ("nlocs", table["month"].astype(np.int64), {"long_name": "calendar month (1-12)"})
    return atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))
