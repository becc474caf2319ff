"""The ENSO pipeline on observed Niño-3 (short periods), its learned correction, and the CLI's one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from hybrida.cli import app
from hybrida.experiment.enso import EnsoConfig
from hybrida.experiment.enso_learned import (
    fit_seasonal_correction,
    load_correction,
    save_correction,
)
from hybrida.models.recharge import RechargeOscillator

pytest.importorskip("pywt")

#: 1950-1972 only (276 months), 10 members, one Desroziers iteration, a short training
SHORT = ["quick=true", "fit=[1950, 1965]", "verify=[1966, 1970]", "test=[1971, 1972]", "max_lead=6", "epochs=80"]


@pytest.fixture(scope="module")
def obs_file(tmp_path_factory):
    from hybrida.datasets.enso import write_enso_observations

    return write_enso_observations(tmp_path_factory.mktemp("enso") / "obs.nc")


@pytest.fixture(scope="module")
def enso_run(obs_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    args = ["run", "enso/recharge-learned", "--obs", str(obs_file), "--out", str(out), "--quiet"]
    for item in SHORT:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "summary.json").read_text()), result.output


def test_pipeline_writes_analyses_summary_and_plots(enso_run):
    out, _summary, output = enso_run
    for name in ("analyses.nc", "summary.json", "skill.md", "enso_T.png", "enso_h.png", "enso_params.png",
                 "enso_skill.png", "correction.pt"):
        assert (out / name).is_file(), name
    assert "persistence" in output and "ACC" in output
    with xr.open_dataset(out / "analyses.nc") as ds:
        assert ds.sizes["time"] == 23 * 12
        T, obs = ds["T_a"].values, ds["T_obs"].values
        assert np.corrcoef(T, obs)[0, 1] > 0.9
        assert ds["h_a"].values[24:].std() > 0.05  # the unobserved h is analysed, not left at 0
        assert {"param_R", "param_alpha", "param_r", "param_seasonal_amp", "learned_T_a"} <= set(ds.data_vars)
        assert np.all(ds["T_a_spread"].values > 0)


def test_desroziers_tuning_and_innovation_checks(enso_run):
    _, summary, _ = enso_run
    (step,) = summary["desroziers_history"]
    assert step["sigma_o"] == pytest.approx(0.3)  # the file's initial guess ...
    assert summary["sigma_o_tuned"] == pytest.approx(step["desroziers_sigma_o"])  # ... replaced by the estimate
    assert 0.1 < summary["sigma_o_tuned"] < 0.4
    fit = summary["innovations"]["recharge"]["fit"]
    assert fit["oma_rms"] < fit["omb_rms"]
    assert abs(fit["omb_mean"]) < 0.25  # measured -0.15: 1950-1965 anomalies (1981-2010 base) are cool on average
    assert 0.6 < fit["normalised_variance"] < 1.6
    assert -1 <= fit["lag1_autocorr"] <= 1


def test_forecasts_and_independent_check(enso_run):
    _, summary, _ = enso_run
    skill = summary["skill"]["recharge"]["verify"]
    assert len(skill["acc"]) == len(skill["persistence_acc"]) == 6
    assert skill["acc"][0] > 0.8 and skill["rmse"][0] < 0.5
    assert all(c > 0 for c in skill["crps"])
    ind = summary["independent"]["recharge"]["fit"]
    assert ind["corr_T_nino34"] > 0.85  # Niño-3.4 was never assimilated
    assert 0 <= ind["h_leads_T_months"] <= 24
    assert set(summary["targets"]["learned"]) >= {"verify_improves_acc6", "verify_acc6_target_met"}


def _trajectory(model: RechargeOscillator, months: int, noise: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = [torch.tensor([1.0, 0.0], dtype=torch.float64)]
    for k in range(months):
        x.append(model.step(x[-1], float(k)) + noise * torch.randn(2, generator=gen, dtype=torch.float64))
    return torch.stack(x)


@pytest.mark.parametrize("rollout", [1, 3])
def test_learned_correction_recovers_a_missing_seasonal_term(rollout, tmp_path):
    """Truth has a seasonal growth rate the physics lacks: the trained correction must remove most of the error.

    Fails with the untrained network (its output is zero, so its loss equals the physics').
    """
    truth = RechargeOscillator(R=0.02, r=0.02, seasonal_amp=0.1, seasonal_phase=10.0)
    physics = RechargeOscillator(R=0.02, r=0.02)
    x = _trajectory(truth, 480, 0.02, seed=0)
    fit = fit_seasonal_correction(physics, x, torch.arange(481, dtype=torch.float64), epochs=1500, lr=1e-2, rollout=rollout,
                                 seed=0)
    # h's one-month residual is pure noise (loss ~1 of 2 terms): 0.85 means most of T's error is gone
    assert min(fit.valid_loss) < 0.85 * fit.physics_valid_loss
    # fresh data: the hybrid's one-month forecasts of T (measured 0.0010 vs 0.0028, noise floor 0.0004)
    x2 = _trajectory(truth, 120, 0.02, seed=1)

    def err_T(m: RechargeOscillator) -> float:
        pred = torch.stack([m.step(x2[k], float(k)) for k in range(120)])
        return float(((pred - x2[1:])[:, 0] ** 2).mean())

    assert err_T(fit.model) < 0.5 * err_T(physics)
    if rollout == 1:  # save/load round trip gives the same hybrid
        save_correction(fit.model, tmp_path / "c.pt")
        again = load_correction(tmp_path / "c.pt", physics)
        torch.testing.assert_close(again.tendency(x2[:5], 3.0), fit.model.tendency(x2[:5], 3.0), rtol=0, atol=0)


def test_missing_file_and_bad_options_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["run", "enso/recharge"])
    assert result.exit_code == 2
    assert "hybrida data enso" in result.output and "data/enso.nc" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["run", "enso/nino", "--obs", "x.nc"])
    assert result.exit_code == 2 and "enso/recharge" in result.output
    result = runner.invoke(app, ["run", "enso/recharge", "--cycles", "5"])
    assert result.exit_code == 2 and "--cycles" in result.output
    result = runner.invoke(app, ["run", "enso/recharge", "--set", "members=2"])
    assert result.exit_code == 2 and "members" in result.output


def test_config_overrides():
    cfg = EnsoConfig.from_overrides({"name": "x"}, ["members=12", "fit=[1950, 1960]"])
    assert cfg.members == 12 and cfg.fit == [1950, 1960]
    assert EnsoConfig(quick=True).resolved().members == 10
    from hybrida.experiment.config import ConfigError

    for bad in ("members=abc", "learned=3", "fit=1950"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            EnsoConfig.from_overrides({}, [bad])
