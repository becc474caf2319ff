"""The Nile at Aswan: annual flow 1871–1970 as a hybrida observation file (one variable, 100 cycles).

The series ships with statsmodels (``statsmodels/datasets/nile/nile.csv``;
public domain per statsmodels; first analysed by Cobb 1978, the standard
local-level example of Durbin & Koopman 2012, ch. 2). It is read straight
from the installed wheel: no download. Volumes are in 10⁸ m³ per year.

The file observes a state of one variable (the level) at model times
t = year − 1870 (dt = 1 year), so cycle k is the year 1870 + k. Its error
std is a placeholder to be estimated (see :mod:`hybrida.learn.variance_mle`).
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import torch

from hybrida.io.obsfile import write_observations
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError

__all__ = ["NILE_FIRST_YEAR", "NILE_OBS_ERROR_STD", "load_nile", "nile_observations", "write_nile_observations"]

#: model time 0 is the year 1870: the first observation (1871) is at t = 1
NILE_FIRST_YEAR = 1871
#: default observation-error std (10⁸ m³): a round prior guess of the right order (the
#: series' sample std is 169); the maximum-likelihood value is about sqrt(15099) ≈ 123
NILE_OBS_ERROR_STD = 100.0
_CSV = ("datasets", "nile", "nile.csv")


def _csv_path() -> Path:
    """The Nile CSV inside the installed statsmodels, or a one-line error saying what to install."""
    spec = importlib.util.find_spec("statsmodels")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the Nile data ship with statsmodels: install hybrida[data] (pip install statsmodels)")
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*_CSV)
        if path.is_file():
            return path
    raise ImportError(f"statsmodels is installed but has no {'/'.join(_CSV)}; install hybrida[data] again")


def load_nile() -> tuple[np.ndarray, np.ndarray]:
    """Years ``(100,)`` and annual flow volumes ``(100,)`` in 10⁸ m³ from statsmodels' CSV."""
    path = _csv_path()
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    years, volume = table[:, 0], table[:, 1]
    if years.size == 0 or not np.array_equal(np.diff(years), np.ones(years.size - 1)):
        raise ValueError(f"{path}: expected consecutive years, got {years[:3]}...")
    return years, volume


def nile_observations(obs_error_std: float = NILE_OBS_ERROR_STD, dtype: torch.dtype = torch.float64) -> list[Observation]:
    """One :class:`Observation` per year, H = [1] on a one-variable state, R = obs_error_std²."""
    if not math.isfinite(obs_error_std) or obs_error_std <= 0:
        raise ValueError(f"obs_error_std must be a finite number > 0, got {obs_error_std}")
    years, volume = load_nile()
    out = []
    for k, (year, v) in enumerate(zip(years, volume, strict=True), start=1):
        out.append(
            Observation(
                y=torch.tensor([v], dtype=dtype),
                operator=lambda x: x[..., :1],
                error=DiagonalError(torch.tensor([obs_error_std**2], dtype=dtype)),
                locations=torch.zeros(1, dtype=dtype),
                matrix=torch.ones(1, 1, dtype=dtype),
                meta={"cycle": k, "year": int(year)},
            )
        )
    return out


def write_nile_observations(path: str | os.PathLike, obs_error_std: float = NILE_OBS_ERROR_STD) -> Path:
    """Write the Nile series to ``path`` as a hybrida observation file; returns the path.

    n_state = 1, times in years since 1870 (model time, dt = 1), error std
    ``obs_error_std`` (10⁸ m³) for every year; provenance and licence go in
    the global attributes. Raises ImportError (one line: install
    hybrida[data]) when statsmodels is missing.
    """
    observations = nile_observations(obs_error_std)
    years = [o.meta["year"] for o in observations]
    attrs = {
        "title": "Nile river annual flow at Aswan, 1871-1970",
        "source": "statsmodels datasets/nile/nile.csv (Cobb 1978; Durbin and Koopman 2012, ch. 2)",
        "references": (
            "Cobb, G. W. (1978) The problem of the Nile: conditional solution to a changepoint problem, "
            "Biometrika 65(2), 243-251; Durbin, J. and Koopman, S. J. (2012) Time Series Analysis by "
            "State Space Methods, 2nd ed., Oxford University Press"
        ),
        "license": "public domain (statsmodels: 'This is public domain.')",
        "variable": "annual flow volume",
        "units": "1e8 m3",
        "time_origin": "model time t = year - 1870; dt = 1 year",
        "first_year": int(years[0]),
        "obs_error_std_note": "placeholder, to be estimated (hybrida.learn.variance_mle)",
        "model": "local_level",
    }
    times = [float(y - (NILE_FIRST_YEAR - 1)) for y in years]  # 1871 -> t = 1
    return write_observations(path, observations, times, attrs)
