"""Bad observation files: one line naming the file and the field, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from hybrida.cli import app
from hybrida.io.obsfile import ObsFileError, load_observations, write_observations
from hybrida.observations import IdentityObs

runner = CliRunner()


def _good(tmp_path: Path, cycles: int = 4, n: int = 40) -> Path:
    net = IdentityObs(n)
    g = torch.Generator().manual_seed(0)
    obs = [net.observe(torch.zeros(n, dtype=torch.float64), k, g) for k in range(1, cycles + 1)]
    return write_observations(tmp_path / "good.nc", obs, times=[0.05 * k for k in range(1, cycles + 1)])


def _edit(tmp_path: Path, change) -> Path:
    ds = xr.open_dataset(_good(tmp_path), engine="h5netcdf").load()
    ds = change(ds) or ds
    path = tmp_path / "bad.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def _set(var: str, index: int, value: float):
    def change(ds: xr.Dataset) -> None:
        ds[var].values[index] = value

    return change


def _shuffle_times(ds: xr.Dataset) -> None:
    t = ds["time"].values
    c = ds["cycle"].values
    t[c == 2], t[c == 3] = 0.15, 0.10


def _duplicate_time(ds: xr.Dataset) -> None:
    ds["time"].values[ds["cycle"].values == 3] = 0.10


CASES = {
    "missing variable": (lambda ds: ds.drop_vars("obs_error"), "missing variables ['obs_error']"),
    "wrong dimensions": (
        lambda ds: ds.assign(obs_value=(("a", "b"), ds["obs_value"].values.reshape(4, 40))),
        "obs_value: has dimensions",
    ),
    "NaN error": (_set("obs_error", 5, np.nan), "obs_error: 1 values are NaN, inf or <= 0 (first at nlocs=5)"),
    "non-positive error": (_set("obs_error", 7, 0.0), "obs_error: 1 values are NaN, inf or <= 0 (first at nlocs=7)"),
    "location outside the domain": (_set("location", 3, 40.0), "location: 40.0 at nlocs=3 is not a grid index"),
    "unsorted times": (_shuffle_times, "time: unsorted times"),
    "duplicate times": (_duplicate_time, "time: duplicate times"),
    "gap in cycles": (lambda ds: ds.where(ds["cycle"] != 2, drop=True), "cycle: cycles must run 1..K"),
    "no n_state": (lambda ds: ds.assign_attrs(n_state=0), "n_state: the global attribute"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_is_refused_with_the_file_and_field_named(tmp_path, case):
    change, needle = CASES[case]
    path = _edit(tmp_path, change)
    with pytest.raises(ObsFileError) as err:
        load_observations(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_state_size_must_match_the_model(tmp_path):
    path = _good(tmp_path, n=36)
    with pytest.raises(ObsFileError, match="n_state: the file observes a state of 36 variables, the model has 40"):
        load_observations(path, n_state=40)


@pytest.mark.parametrize("case", ["NaN error", "location outside the domain", "unsorted times"])
def test_cli_error_is_one_line_and_nothing_is_written(tmp_path, case):
    change, needle = CASES[case]
    path = _edit(tmp_path, change)
    out = tmp_path / "out"
    res = runner.invoke(app, ["assimilate", "lorenz96/sakov2008", "--obs", str(path), "--out", str(out), "-q"])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr
    assert "Traceback" not in res.output
    assert not out.exists() or not any(out.iterdir())


def test_cli_refuses_a_state_size_mismatch_and_a_non_netcdf_file(tmp_path):
    small = _good(tmp_path, n=36)
    res = runner.invoke(app, ["assimilate", "lorenz96/sakov2008", "--obs", str(small), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "n_state" in res.stderr
    junk = tmp_path / "junk.nc"
    junk.write_text("not netcdf")
    res = runner.invoke(app, ["assimilate", "lorenz96/sakov2008", "--obs", str(junk), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "not a readable NetCDF observation file" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_times_off_the_model_step_are_refused(tmp_path):
    path = _edit(tmp_path, lambda ds: ds.assign(time=ds["time"] * 1.37))
    res = runner.invoke(app, ["assimilate", "lorenz96/sakov2008", "--obs", str(path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "time: analysis times must be k * every * dt" in res.stderr


def test_predictors_round_trip(tmp_path):
    net = IdentityObs(6)
    obs = [net.observe(torch.zeros(6, dtype=torch.float64), k) for k in (1, 2)]
    for k, o in enumerate(obs):
        o.meta["predictors"] = {"scan": torch.arange(6.0) + k}
    back = load_observations(write_observations(tmp_path / "p.nc", obs))
    assert torch.equal(back[1].meta["predictors"]["scan"], torch.arange(6.0, dtype=torch.float64) + 1)
