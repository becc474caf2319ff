"""Model error in the DA–ML loop: innovation estimate of the model noise, analysis spread, seeded loop."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from test_loop import small_loop

from hybrida.assimilation.ensemble.etkf import ETKF
from hybrida.experiment.loop import LoopSettings, assimilate, da_ml_loop, forecast_error_std, smooth
from hybrida.experiment.twin import make_twin
from hybrida.models.base import Model
from hybrida.models.lorenz96 import Lorenz96
from hybrida.models.noisy import NoisyModel
from hybrida.models.surrogate import SurrogateModel
from hybrida.nn import ResidualCNN
from hybrida.observations.networks import RandomSubsetObs


class Persistence(Model):
    """x_{k+1} = x_k: makes one-step forecast errors known in closed form."""

    def __init__(self, n: int) -> None:
        self.n, self.dt = n, 0.05

    def step(self, x, t=0.0):
        return x.clone()


@pytest.fixture(scope="module")
def twin():
    model = Lorenz96(n=20, F=8.0)
    net = RandomSubsetObs(n=20, p=0.5, std=0.5)
    return model, make_twin(
        model, net, model.initial_state(), 120, torch.Generator().manual_seed(0)
    )


def test_forecast_error_std_closed_form_with_noise_free_values(twin):
    _, tw = twin
    # observations carry the exact truth values but declare sigma_o = 0.5: the
    # estimate is sqrt(mean (x_{k+1} - x_k)^2 - 0.25) over observed entries
    obs = []
    for k, o in enumerate(tw.observations):
        o = copy.copy(o)
        o.y = o.H(tw.truth[k + 1])
        obs.append(o)
    num, cnt = 0.0, 0
    for k in range(30, len(obs)):
        r = obs[k].y - obs[k].H(tw.truth[k])
        num += float((r * r).sum())
        cnt += obs[k].p
    expected = math.sqrt(max(num / cnt - 0.25, 0.0))
    got = forecast_error_std(Persistence(20), tw.truth, obs, start=30)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got > 0.5
    with pytest.raises(ValueError, match="start"):
        forecast_error_std(Persistence(20), tw.truth, obs, start=len(obs))


def test_forecast_error_std_is_small_for_the_true_model(twin):
    model, tw = twin
    # forecasts from the truth with the true model: innovations are pure obs noise
    assert forecast_error_std(model, tw.truth, tw.observations) < 0.15
    assert forecast_error_std(Lorenz96(n=20, F=16.0), tw.truth, tw.observations) > 0.3


def test_assimilate_returns_the_analysis_spread(twin):
    model, tw = twin
    ana = assimilate(
        NoisyModel(model, 0.1, torch.Generator().manual_seed(3)),
        ETKF(N=10, infl=1.0),
        tw.truth[0],
        tw.observations[:40],
        initial_std=0.5,
        generator=torch.Generator().manual_seed(1),
    )
    assert ana.std.shape == (41, 20)
    torch.testing.assert_close(ana.std[0], torch.full((20,), 0.5, dtype=ana.std.dtype))
    assert bool((ana.std[1:] > 0).all()) and bool((ana.std[1:] < 1.0).all())


def test_loop_with_estimated_model_noise_is_seeded_and_records_it(twin):
    _, tw = twin
    a = small_loop(tw, model_noise="innovation", noise_scale=0.5, weight_by_spread=True, seed=4)
    b = small_loop(tw, model_noise="innovation", noise_scale=0.5, weight_by_spread=True, seed=4)
    assert [s.model_noise for s in a.steps] == [s.model_noise for s in b.steps]
    assert all(s.model_noise > 0 for s in a.steps)
    assert a.steps[0].fit.epochs_run == 3 and a.steps[1].fit.epochs_run == 2
    torch.testing.assert_close(a.analyses, b.analyses, rtol=0, atol=0)
    fixed = small_loop(tw, model_noise=0.2, seed=4)
    assert [s.model_noise for s in fixed.steps] == [0.2, 0.2]
    off = small_loop(tw, seed=4)
    assert all(s.model_noise == 0.0 for s in off.steps)


def test_loop_rejects_bad_noise_settings():
    with pytest.raises(ValueError, match="model_noise"):
        LoopSettings(model_noise="huge")
    with pytest.raises(ValueError, match="model_noise"):
        LoopSettings(model_noise=-0.1)
    with pytest.raises(ValueError, match="noise_scale"):
        LoopSettings(noise_scale=math.nan)
    with pytest.raises(ValueError, match="spread_floor"):
        LoopSettings(spread_floor=0.0)


def test_smoothed_reanalysis_beats_the_filter_and_is_seeded(twin):
    model, tw = twin
    kw = {"truth": tw.truth, "burn_in": 20}
    filt = assimilate(
        model,
        ETKF(N=10, infl=1.02),
        tw.truth[0],
        tw.observations,
        generator=torch.Generator().manual_seed(1),
        **kw,
    )

    def run():
        return smooth(
            model,
            tw.truth[0],
            tw.observations,
            N=10,
            lag=5,
            infl=1.02,
            generator=torch.Generator().manual_seed(1),
            **kw,
        )

    a, b = run(), run()
    assert a.diverged_at is None and a.mean.shape == a.std.shape == (len(tw.observations) + 1, 20)
    assert a.rmse_a < 0.9 * filt.rmse_a  # each state also sees 5 later cycles of observations
    torch.testing.assert_close(a.mean, b.mean, rtol=0, atol=0)
    with pytest.raises(ValueError, match="N"):
        smooth(model, tw.truth[0], tw.observations, N=1, lag=5)


def test_loop_with_a_smoother_trains_on_smoothed_analyses(twin, monkeypatch):
    import hybrida.experiment.loop as loop_module

    _, tw = twin
    calls = []

    def spy(*args, **kwargs):
        out = smooth(*args, **kwargs)
        calls.append((kwargs, out.mean))
        return out

    monkeypatch.setattr(loop_module, "smooth", spy)
    res = small_loop(tw, smoother={"N": 10, "lag": 4, "infl": 1.1}, seed=4)
    assert len(calls) == len(res.steps) == 2  # every iteration's DA is the EnKS, none the filter
    assert all(kw["N"] == 10 and kw["lag"] == 4 and kw["infl"] == 1.1 for kw, _ in calls)
    torch.testing.assert_close(res.analyses, calls[res.best_iteration][1], rtol=0, atol=0)


def test_observation_field_places_values_and_inverse_variances(twin):
    from hybrida.experiment.loop import observation_field

    _, tw = twin
    values, inv_var = observation_field(tw.observations, 20)
    assert values.shape == inv_var.shape == (120, 20)
    for k in (0, 61, 119):
        obs = tw.observations[k]
        idx = obs.locations.long()
        torch.testing.assert_close(values[k, idx], obs.y.double())
        assert torch.all(inv_var[k, idx] == 4.0)  # sigma_o = 0.5
        rest = torch.ones(20, dtype=torch.bool)
        rest[idx] = False
        assert bool(torch.isnan(values[k, rest]).all()) and bool((inv_var[k, rest] == 0).all())


def test_loop_with_observation_targets_fits_analyses_to_the_observations(twin, monkeypatch):
    from hybrida.experiment import loop as lp
    from hybrida.learn.train import TrajectoryDataset

    _, tw = twin
    calls = []
    real_fit = lp.fit

    def spy(model, train, valid, **kw):
        calls.append((train, valid, kw))
        return real_fit(model, train, valid, **kw)

    monkeypatch.setattr(lp, "fit", spy)
    result = da_ml_loop(
        lambda a: SurrogateModel.from_trajectory(ResidualCNN(channels=4, blocks=1, seed=0), a, dt=0.05),
        lambda: ETKF(N=8, infl=1.1),
        tw.observations,
        20,
        LoopSettings(
            max_iterations=2,
            patience=2,
            targets="observations",
            fit_kwargs={"epochs": 2, "batch_size": 32, "rollout": 2},
        ),
    )
    assert len(result.steps) == 2 and len(calls) == 2
    assert isinstance(calls[0][0], torch.Tensor)  # iteration 0: the interpolated first guess
    train, valid, kw = calls[1]
    assert isinstance(valid, TrajectoryDataset)  # validation scored against observations too
    assert isinstance(train, TrajectoryDataset) and "rollout" not in kw and train.rollout == 2
    x, y, w = train.batch(torch.arange(len(train)))
    k = int(train.starts[40])  # archive row k = analysis of cycle k; targets = observations of k+1, k+2
    obs = tw.observations[k]  # observations of cycle k + 1
    idx = obs.locations.long()
    torch.testing.assert_close(y[40, 0, idx], obs.y.double())
    assert bool((w[40, 0, idx] == 4.0).all()) and float(w[40, 0].sum()) == 4.0 * obs.p
    # the inputs are the previous iteration's analyses, not observations
    assert not torch.allclose(x[40], y[40, 0])
    with pytest.raises(ValueError, match="targets"):
        LoopSettings(targets="truth")
