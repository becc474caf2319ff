"""Assimilating observation files with no truth: round trip, Desroziers, outputs, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from hybrida.cli import app
from hybrida.experiment import runner as runner_module
from hybrida.experiment.assimilate import assimilate_file
from hybrida.experiment.config import validate_config
from hybrida.experiment.presets import get_preset
from hybrida.experiment.runner import run_experiment
from hybrida.io.checkpoint import CheckpointError
from hybrida.io.results import read_dataset


def _config(cycles: int = 60, **update):
    data = get_preset("lorenz96/sakov2008")
    data.update(cycles=cycles, burn_in=0.01 * cycles, **update)
    return validate_config(data)


def _twin(tmp_path: Path, config) -> tuple:
    result = run_experiment(config, tmp_path / "twin", progress=False, write_observations_file=True)
    return result, tmp_path / "twin" / "observations.nc"


def _analyses(result) -> torch.Tensor:
    return torch.stack([r.posterior_mean for r in result.records])


@pytest.mark.parametrize(
    "method",
    [
        {"name": "etkf", "params": {"N": 28, "infl": 1.02}},
        {"name": "letkf", "params": {"N": 20, "infl": 1.04, "loc_rad": 4.0}},
        {"name": "3dvar", "params": {"xB": 0.1}},
        {"name": "4dvar", "params": {"lag": 2, "xB": 0.1, "B": "identity", "max_outer": 3}},
    ],
    ids=lambda m: m["name"],
)
def test_file_round_trip_gives_the_twin_analyses_bit_for_bit(tmp_path, method):
    extra = {"climatology": {"steps": 2000, "spinup": 200, "thin": 1}} if "var" in method["name"] else {}
    config = _config(40, method=method, **extra)
    twin, path = _twin(tmp_path, config)
    from_file = assimilate_file(config, path, tmp_path / "file", progress=False)
    assert len(from_file.records) == len(twin.records) == 40
    assert torch.equal(_analyses(from_file), _analyses(twin))
    assert all(r.truth is None and math.isnan(r.rmse_a) for r in from_file.records)
    # the innovation statistics need no truth: the same in both runs
    for key in ("omb_rms", "oma_rms", "desroziers_sigma_o", "chi2_per_obs"):
        assert from_file.summary[key] == pytest.approx(twin.summary[key], nan_ok=True)  # chi2: NaN without B


@pytest.mark.parametrize("sigma_o", [1.0, 0.5])
def test_desroziers_sigma_o_within_ten_percent_of_the_true_sigma_o(tmp_path, sigma_o):
    config = _config(300, observations={"name": "identity", "params": {"std": sigma_o}, "every": 1})
    _, path = _twin(tmp_path, config)
    summary = assimilate_file(config, path, None, progress=False).summary
    assert abs(summary["desroziers_sigma_o"] / sigma_o - 1) < 0.10, summary
    # a consistent filter: innovations as large as the predicted HBH^T + R
    assert 0.8 < summary["chi2_per_obs"] < 1.25
    assert summary["oma_rms"] < summary["omb_rms"]


def test_desroziers_flags_an_understated_observation_error(tmp_path):
    """Observations with std 1.5 described in the file as std 1: the estimate moves towards 1.5."""
    config = _config(300, observations={"name": "identity", "params": {"std": 1.5}, "every": 1})
    _, path = _twin(tmp_path, config)
    ds = xr.open_dataset(path, engine="h5netcdf").load()
    ds["obs_error"][:] = 1.0
    lied = tmp_path / "understated.nc"
    ds.to_netcdf(lied, engine="h5netcdf")
    summary = assimilate_file(config, lied, None, progress=False).summary
    assert summary["sigma_o_assumed"] == pytest.approx(1.0)
    assert summary["desroziers_sigma_o"] > 1.2
    assert summary["chi2_per_obs"] > 1.5  # innovations too large for the stated R


def test_outputs_hold_analyses_departures_and_summary(tmp_path):
    config = _config(30)
    _, path = _twin(tmp_path, config)
    assimilate_file(config, path, tmp_path / "out", store_members=True, progress=False)
    ds = read_dataset(tmp_path / "out" / "analyses.nc")
    assert "truth" not in ds and "rmse_a" not in ds
    assert ds["posterior_mean"].shape == (30, 40) and ds["members"].shape == (30, 28, 40)
    assert {"omb_rms", "oma_rms", "chi2", "dfs"} <= set(ds.data_vars)
    obs = xr.open_dataset(tmp_path / "out" / "observations.nc", engine="h5netcdf").load()
    assert {"omb", "oma", "hofx_background", "qc_flag"} <= set(obs.data_vars)
    first = obs["cycle"].values == 1
    x_b = ds["prior_mean"].values[0]
    assert obs["hofx_background"].values[first] == pytest.approx(x_b[obs["location"].values[first].astype(int)])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {"omb_rms", "oma_rms", "desroziers_sigma_o"} <= set(summary)
    assert summary["truth"] is False and summary["n_cycles"] == 30


def test_large_analyses_are_written_as_zarr(tmp_path, monkeypatch):
    config = _config(20)
    _, path = _twin(tmp_path, config)
    monkeypatch.setattr(runner_module, "ZARR_BYTES", 0)
    result = assimilate_file(config, path, tmp_path / "out", progress=False)
    store = tmp_path / "out" / "analyses.zarr"
    assert result.files["results"] == store and store.is_dir()
    assert read_dataset(store)["posterior_mean"].values == pytest.approx(_analyses(result).numpy())


def test_a_checkpoint_of_another_file_is_refused(tmp_path):
    config = _config(20, checkpoint_every=10)
    _, path = _twin(tmp_path, config)
    assimilate_file(config, path, tmp_path / "out", progress=False)
    other = _config(20, checkpoint_every=10, seed=7)
    _, path2 = _twin(tmp_path / "b", other)
    with pytest.raises(CheckpointError):
        assimilate_file(config, path2, tmp_path / "out", resume=True, progress=False)
    # the same file resumes from its last checkpoint (cycle 20 of 20: nothing left) to the same analyses
    again = assimilate_file(config, path, tmp_path / "out", resume=True, progress=False)
    assert again.resumed_from == 20


def test_cli_assimilates_a_twin_file(tmp_path):
    cli = CliRunner()
    twin = cli.invoke(
        app,
        ["run", "lorenz96/sakov2008", "--cycles", "40", "--write-obs", "--out", str(tmp_path / "t"), "-q",
         "--no-plots"],
    )
    assert twin.exit_code == 0, twin.output
    res = cli.invoke(
        app,
        ["assimilate", "lorenz96/sakov2008", "--obs", str(tmp_path / "t" / "observations.nc"),
         "--out", str(tmp_path / "a"), "-q"],
    )
    assert res.exit_code == 0, res.output
    assert "desroziers_sigma_o" in res.stdout
    for name in ("analyses.nc", "observations.nc", "summary.json", "config.yaml"):
        assert (tmp_path / "a" / name).exists()
    twin_ds = read_dataset(tmp_path / "t" / "results.nc")
    file_ds = read_dataset(tmp_path / "a" / "analyses.nc")
    assert (twin_ds["posterior_mean"].values == file_ds["posterior_mean"].values).all()


@pytest.mark.parametrize("method", [{"name": "etkf", "params": {"N": 28, "infl": 1.02}}, {"name": "3dvar", "params": {"xB": 0.02}}],
                         ids=lambda m: m["name"])
def test_config_qc_rejects_gross_errors_and_writes_its_flags(tmp_path, method):
    """±10σ errors injected into 5% of a twin's file: the qc section's background check flags them (2)."""
    extra = {"climatology": {"steps": 2000, "spinup": 200, "thin": 1}} if method["name"] == "3dvar" else {}
    config = _config(100, method=method, **extra)
    twin, path = _twin(tmp_path, config)
    ds = xr.open_dataset(path, engine="h5netcdf").load()
    g = torch.Generator().manual_seed(5)
    gross = (torch.rand(ds.sizes["nlocs"], generator=g) < 0.05).numpy()
    sign = torch.where(torch.rand(ds.sizes["nlocs"], generator=g) < 0.5, -1.0, 1.0).numpy()
    ds["obs_value"].values[gross] += 10.0 * sign[gross]
    bad = tmp_path / "gross.nc"
    ds.to_netcdf(bad, engine="h5netcdf")
    checked = validate_config({**config.model_dump(), "qc": {"name": "background", "params": {"k": 4.0}}})
    with_qc = assimilate_file(checked, bad, tmp_path / "qc", progress=False)
    without = assimilate_file(config, bad, None, progress=False)
    flags = xr.open_dataset(tmp_path / "qc" / "observations.nc", engine="h5netcdf")["qc_flag"].values
    hits = (flags[gross] == 2).mean()
    false_alarms = (flags[~gross] == 2).mean()
    assert hits > 0.95 and false_alarms < 0.01, (hits, false_alarms)
    # scored against the twin's truth: the check restores the clean analyses' quality
    truth = twin.dataset()["truth"].values
    err = lambda r: float(((_analyses(r).numpy() - truth) ** 2).mean() ** 0.5)
    assert err(with_qc) < 1.1 * err(twin) and err(without) > 1.5 * err(twin)


def test_variational_qc_flags_reach_the_output_file(tmp_path):
    """3D-Var with the Gaussian-plus-flat norm from a config: gross errors get weight < 0.5, flag 4."""
    method = {"name": "3dvar", "params": {"xB": 0.02, "robust": {"name": "gaussian_flat", "A": 0.05, "d": 15}}}
    config = _config(60, method=method, climatology={"steps": 2000, "spinup": 200, "thin": 1})
    _, path = _twin(tmp_path, config)
    ds = xr.open_dataset(path, engine="h5netcdf").load()
    rows = torch.arange(7, ds.sizes["nlocs"], 97).numpy()
    ds["obs_value"].values[rows] += 10.0
    bad = tmp_path / "gross.nc"
    ds.to_netcdf(bad, engine="h5netcdf")
    assimilate_file(config, bad, tmp_path / "out", progress=False)
    flags = xr.open_dataset(tmp_path / "out" / "observations.nc", engine="h5netcdf")["qc_flag"].values
    assert (flags[rows] == 4).mean() > 0.9
    others = torch.ones(flags.size, dtype=torch.bool).numpy()
    others[rows] = False
    assert (flags[others] == 4).mean() < 0.01
