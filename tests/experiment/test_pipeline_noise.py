"""Additive model noise in the pipeline's DA with the surrogate: config, estimator, reaching the filter."""

from __future__ import annotations

import math

import pytest
import torch
from test_pipeline import tiny

from hybrida.experiment import surrogate_pipeline as pl
from hybrida.experiment.config import ConfigError
from hybrida.experiment.surrogate_pipeline import load_surrogate_config, run_surrogate_experiment
from hybrida.models.base import Model
from hybrida.models.noisy import NoisyModel


class Damped(Model):
    """x_{k+1} = a x_k: a model whose one-step errors on a given archive are known exactly."""

    def __init__(self, a: float, n: int) -> None:
        self.a, self.n, self.dt = a, n, 1.0

    def step(self, x: torch.Tensor, t: float = 0.0) -> torch.Tensor:
        return self.a * x


def with_noise(value, source: str = "reanalysis") -> dict:
    cfg = tiny(source)
    cfg["evaluation"]["model_noise"] = value
    return cfg


@pytest.mark.parametrize(
    "value, expected", [(None, None), (0, 0.0), (0.25, 0.25), ("validation", "validation")]
)
def test_config_accepts_null_numbers_and_validation(value, expected):
    assert load_surrogate_config(with_noise(value)).evaluation.model_noise == expected
    assert (
        load_surrogate_config("demo").evaluation.model_noise is None
    )  # the default changes nothing


@pytest.mark.parametrize("value", [-0.1, "often", math.nan, True])
def test_bad_model_noise_names_the_field(value):
    with pytest.raises(ConfigError, match="evaluation.model_noise: must be null, a number >= 0"):
        load_surrogate_config(with_noise(value))


def test_validation_estimate_needs_a_spread_source():
    with pytest.raises(ConfigError, match="evaluation.model_noise: 'validation' needs"):
        load_surrogate_config(with_noise("validation", "loop"))


def test_validation_estimate_is_the_pair_rms_minus_the_spread():
    g = torch.Generator().manual_seed(0)
    archive = torch.randn(50, 6, generator=g, dtype=torch.float64)
    model = Damped(0.5, 6)
    mse = float(((0.5 * archive[:-1] - archive[1:]) ** 2).mean())
    assert pl.validation_model_noise(model, archive) == pytest.approx(math.sqrt(mse), rel=1e-12)
    spread = torch.full_like(archive, 0.3)
    assert pl.validation_model_noise(model, archive, spread) == pytest.approx(
        math.sqrt(mse - 0.09), rel=1e-12
    )
    # analysis spread larger than the pair error: floored at 0
    assert pl.validation_model_noise(model, archive, torch.full_like(archive, 5.0)) == 0.0
    # a perfect model on its own trajectory: 0
    traj = 0.5 ** torch.arange(20, dtype=torch.float64).unsqueeze(-1) * torch.ones(20, 6)
    assert pl.validation_model_noise(model, traj) == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="archive must be"):
        pl.validation_model_noise(model, archive[:1])
    with pytest.raises(ValueError, match="spread must have"):
        pl.validation_model_noise(model, archive, spread[1:])


def _record_models(monkeypatch) -> list:
    seen: list = []
    real = pl.assimilate

    def spy(model, *args, **kwargs):
        seen.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(pl, "assimilate", spy)
    return seen


def test_noise_reaches_the_surrogate_filter_only_and_is_reproducible(monkeypatch):
    seen = _record_models(monkeypatch)
    base = run_surrogate_experiment(load_surrogate_config(with_noise(None)), None, plots=False)
    assert not any(isinstance(m, NoisyModel) for m in seen)
    assert base["model_noise"] == 0.0
    seen.clear()
    cfg = load_surrogate_config(with_noise(0.3))
    a = run_surrogate_experiment(cfg, None, plots=False)
    noisy = [m for m in seen if isinstance(m, NoisyModel)]
    assert len(noisy) == 1 and float(noisy[0].std) == 0.3 and not noisy[0].shared
    assert a["model_noise"] == 0.3
    # same training, same true-model filter; the surrogate filter sees the noise
    assert a["fit_best_valid"] == base["fit_best_valid"]
    assert a["rmse_a_model"] == base["rmse_a_model"]
    assert a["rmse_a_surrogate"] != base["rmse_a_surrogate"]
    b = run_surrogate_experiment(cfg, None, plots=False)
    assert a["rmse_a_surrogate"] == b["rmse_a_surrogate"]


def test_validation_setting_uses_the_estimate_of_the_held_out_archive(monkeypatch):
    seen = _record_models(monkeypatch)
    s = run_surrogate_experiment(
        load_surrogate_config(with_noise("validation", "truth")), None, plots=False
    )
    # on a true trajectory there is no spread: the estimate is the surrogate's one-step RMS error > 0
    assert s["model_noise"] > 0
    noisy = [m for m in seen if isinstance(m, NoisyModel)]
    assert len(noisy) == 1 and float(noisy[0].std) == pytest.approx(s["model_noise"], rel=1e-12)


@pytest.mark.parametrize("value, expected", [(None, None), (0.1, 0.1), ("innovation", "innovation")])
def test_loop_model_noise_reaches_the_loop(monkeypatch, value, expected):
    seen = {}

    class Stop(Exception):
        pass

    def spy(make_surrogate, make_method, observations, n, settings, **kwargs):
        seen.update(vars(settings))
        raise Stop

    cfg = tiny("loop")
    cfg["loop"]["model_noise"] = value
    monkeypatch.setattr(pl, "da_ml_loop", spy)
    with pytest.raises(Stop):
        run_surrogate_experiment(load_surrogate_config(cfg), plots=False)
    assert seen["model_noise"] == expected


@pytest.mark.parametrize("value", [-0.1, "validation", math.nan, True])
def test_bad_loop_model_noise_names_the_field(value):
    cfg = tiny("loop")
    cfg["loop"]["model_noise"] = value
    with pytest.raises(ConfigError, match="loop.model_noise: must be null, a number >= 0"):
        load_surrogate_config(cfg)


def test_brajard2020_preset_passes_the_loop_settings(monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def spy(make_surrogate, make_method, observations, n, settings, **kwargs):
        seen.update(vars(settings), method=make_method())
        raise Stop

    monkeypatch.setattr(pl, "da_ml_loop", spy)
    with pytest.raises(Stop):
        run_surrogate_experiment(load_surrogate_config("brajard2020"), plots=False)
    assert seen["model_noise"] == 0.22 and seen["weight_by_spread"] is True
    assert seen["first_fit_kwargs"] == {"epochs": 20} and seen["fit_kwargs"]["rollout"] == 2
    assert type(seen["method"]).__name__ == "LETKF" and seen["method"].N == 30
    cfg = tiny("loop")
    cfg["loop"]["first_epochs"] = 0
    with pytest.raises(ConfigError, match="first_epochs"):
        load_surrogate_config(cfg)
