"""The packaged Niño SST tables as hybrida observation files: round trip, provenance, one-line errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from hybrida.cli import app
from hybrida.datasets import enso
from hybrida.io.obsfile import load_observations

pytest.importorskip("pywt")
pytest.importorskip("statsmodels")


@pytest.mark.parametrize(("source", "months", "last"), [("pywavelets", 800, (2016, 8)), ("statsmodels", 732, (2010, 12))])
def test_round_trip(tmp_path, source, months, last):
    table = enso.load_enso(source)
    path = enso.write_enso_observations(tmp_path / "obs.nc", source, obs_error_std=0.25)
    obs = load_observations(path, n_state=2)
    assert len(obs) == months
    assert (int(table["year"][-1]), int(table["month"][-1])) == last
    y = np.array([float(o.y[0]) for o in obs])
    np.testing.assert_array_equal(y, table["nino3"])
    assert [o.meta["time"] for o in obs[:3]] == [1.0, 2.0, 3.0]  # months since 1949-12
    assert obs[0].meta["time_units"] == "model time units"
    assert float(obs[0].error.variance[0]) == pytest.approx(0.0625)
    assert obs[0].H(torch.tensor([0.7, -3.0], dtype=torch.float64)).item() == 0.7
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        np.testing.assert_array_equal(ds["nino34_anom"].values, table["nino34"])
        np.testing.assert_array_equal(ds["nino4_anom"].values, table["nino4"])
        assert ds["month"].values[0] == 1 and ds["year"].values[-1] == last[0]
        assert "public domain" in ds.attrs["license"]
        assert "ERSST" in ds.attrs["source"] and ds.attrs["data_source"] == source


def test_known_values_of_the_tables():
    """First rows of both files (NOAA CPC, as packaged): Niño-3 anomaly 1950-01."""
    assert enso.load_enso("statsmodels")["nino3"][0] == pytest.approx(-1.91)
    assert enso.load_enso("pywavelets")["nino3"][0] == pytest.approx(-1.96)
    a, b = enso.load_enso("statsmodels"), enso.load_enso("pywavelets")
    # ERSST v3b vs v4 differ by a few hundredths but describe the same events
    assert np.corrcoef(a["nino3"], b["nino3"][: a["nino3"].size])[0, 1] > 0.98


def test_missing_package_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pywt" else real(name, *a))
    with pytest.raises(ImportError, match=r"install hybrida\[data\]"):
        enso.load_enso("pywavelets")
    result = CliRunner().invoke(app, ["data", "enso", "--out", "x.nc"])
    assert result.exit_code == 2
    assert "install hybrida[data]" in result.output and "Traceback" not in result.output


def test_bad_source_and_error():
    with pytest.raises(ValueError, match="source must be one of"):
        enso.load_enso("noaa")
    with pytest.raises(ValueError, match="obs_error_std"):
        enso.enso_observations(obs_error_std=0.0)


def test_cli_writes_enso_and_nile(tmp_path):
    runner = CliRunner()
    out = tmp_path / "d" / "enso.nc"
    result = runner.invoke(app, ["data", "enso", "--out", str(out), "--source", "statsmodels"])
    assert result.exit_code == 0, result.output
    assert len(load_observations(out)) == 732
    result = runner.invoke(app, ["data", "nile", "--out", str(tmp_path / "nile.nc")])
    assert result.exit_code == 0, result.output
    assert len(load_observations(tmp_path / "nile.nc")) == 100
    result = runner.invoke(app, ["data", "enso", "--out", str(tmp_path / "e.nc"), "--source", "noaa"])
    assert result.exit_code == 2 and "--source" in result.output
