"""The DA–ML loop: interpolation first guess, truth-free score, assimilation with a surrogate."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from hybrida import metrics
from hybrida.assimilation.ensemble.etkf import ETKF
from hybrida.experiment.loop import (
    LoopSettings,
    assimilate,
    da_ml_loop,
    interpolate_observations,
    observation_mask,
    observation_score,
)
from hybrida.experiment.twin import make_twin
from hybrida.models.lorenz96 import Lorenz96
from hybrida.models.surrogate import SurrogateModel
from hybrida.nn import BrajardCNN, ResidualCNN
from hybrida.observations.networks import IdentityObs, RandomSubsetObs


@pytest.fixture(scope="module")
def twin():
    model = Lorenz96(n=20, F=8.0)
    net = RandomSubsetObs(n=20, p=0.5, std=0.5)
    return model, make_twin(model, net, model.initial_state(), 120, torch.Generator().manual_seed(0))


def test_interpolation_is_exact_at_observed_points_and_linear_between(twin):
    _, tw = twin
    guess = interpolate_observations(tw.observations, 20)
    mask = observation_mask(tw.observations, 20)
    assert guess.shape == (120, 20) and mask.shape == (120, 20)
    for k in (0, 57, 119):
        obs = tw.observations[k]
        idx = obs.locations.long()
        torch.testing.assert_close(guess[k, idx], obs.y)
        assert int(mask[k].sum()) == obs.p
    # a linear field on the periodic grid is reproduced between the observations
    obs = copy.copy(tw.observations[3])
    obs.y = obs.locations.double() * 2.0
    gap = interpolate_observations([obs], 20)[0]
    inside = (torch.arange(20.0) >= obs.locations.min()) & (torch.arange(20.0) <= obs.locations.max())
    torch.testing.assert_close(gap[inside], 2.0 * torch.arange(20.0, dtype=torch.float64)[inside])


def test_time_interpolation_is_exact_at_observations_and_beats_space(twin):
    _, tw = twin
    along_time = interpolate_observations(tw.observations, 20, along="time")
    along_space = interpolate_observations(tw.observations, 20, along="space")
    for k in (0, 57, 119):
        obs = tw.observations[k]
        torch.testing.assert_close(along_time[k, obs.locations.long()], obs.y)
    truth = tw.truth[1:]
    err_t = float(((along_time - truth) ** 2).mean().sqrt())
    err_s = float(((along_space - truth) ** 2).mean().sqrt())
    assert err_t < 0.6 * err_s
    with pytest.raises(ValueError, match="along"):
        interpolate_observations(tw.observations, 20, along="diagonal")


def test_observation_score_prefers_the_true_model(twin):
    model, tw = twin
    good = observation_score(model, tw.truth, tw.observations, lead=10)
    bad = observation_score(Lorenz96(n=20, F=9.0), tw.truth, tw.observations, lead=10)
    # forecasts from the truth: whitened innovations are pure noise, score ~ 1
    assert 0.7 < good < 1.3
    assert bad > 2 * good
    # the score grows with the lead for a wrong model
    assert observation_score(Lorenz96(n=20, F=9.0), tw.truth, tw.observations, lead=1) < bad
    with pytest.raises(ValueError, match="lead"):
        observation_score(model, tw.truth, tw.observations, lead=0)


def test_assimilate_with_the_true_model_beats_the_observations(twin):
    model, tw = twin
    ana = assimilate(
        model,
        ETKF(N=15, infl=1.05),
        tw.truth[0],
        tw.observations,
        initial_std=0.5,
        truth=tw.truth,
        burn_in=20,
        generator=torch.Generator().manual_seed(1),
    )
    assert ana.mean.shape == (121, 20) and ana.diverged_at is None
    assert ana.rmse_a < 0.5  # below the observation error std, with half the grid unobserved


def small_loop(tw, **kwargs):
    """Two DA–ML iterations with a small ResidualCNN and an ETKF: the loop tests' common setup."""

    def make_surrogate(archive):
        return SurrogateModel.from_trajectory(ResidualCNN(channels=8, blocks=1, seed=0), archive, dt=0.05)

    return da_ml_loop(
        make_surrogate,
        lambda: ETKF(N=10, infl=1.1),
        tw.observations,
        20,
        LoopSettings(
            max_iterations=2,
            patience=2,
            burn_in=20,
            fit_kwargs={"epochs": 2, "batch_size": 32, "lr": 1e-3},
            first_fit_kwargs={"epochs": 3},
            **kwargs,
        ),
        truth=tw.truth,
    )


def test_loop_trains_assimilates_and_keeps_the_best(twin):
    _, tw = twin
    result = small_loop(tw)
    assert 1 <= len(result.steps) <= 2
    assert result.best_iteration in [s.iteration for s in result.steps]
    best = min(result.steps, key=lambda s: s.obs_score)
    assert best.iteration == result.best_iteration
    assert math.isfinite(result.first_guess_rmse) and result.analyses.shape == (121, 20)
    x = tw.truth[5]
    assert torch.isfinite(result.surrogate.step(x)).all()


def test_loop_rejects_bad_input(twin):
    _, tw = twin
    with pytest.raises(ValueError, match="valid_fraction"):
        LoopSettings(valid_fraction=1.5)
    with pytest.raises(ValueError, match="first_guess"):
        da_ml_loop(lambda a: None, lambda: None, tw.observations, 20, first_guess=torch.zeros(5, 20))
    full = [IdentityObs(n=20).network(1)]
    full[0].locations = None
    full[0].y = torch.zeros(20)
    with pytest.raises(ValueError, match="locations"):
        interpolate_observations(full, 20)


def test_loop_surrogate_beats_the_interpolation_first_guess_at_lead_1(twin):
    """The loop learns: its surrogate's one-step forecasts from the truth are more accurate than the
    time-interpolated observations it started from. Measured (seed 0): 0.24 against 0.72, ratio
    0.33; with learning off (lr 1e-12) the untrained CNN gives 1.08, ratio 1.49, worse than
    persistence (0.96)."""
    _, tw = twin

    def make_surrogate(archive):
        return SurrogateModel.from_trajectory(BrajardCNN(filters=4, hidden=8, seed=0), archive, dt=0.05)

    result = da_ml_loop(
        make_surrogate,
        lambda: ETKF(N=10, infl=1.1),
        tw.observations,
        20,
        LoopSettings(
            max_iterations=2, patience=2, burn_in=20,
            fit_kwargs={"epochs": 10, "batch_size": 32, "lr": 1e-2}, first_fit_kwargs={"epochs": 30},
        ),
        truth=tw.truth,
    )
    x, target = tw.truth[21:-1], tw.truth[22:]
    with torch.no_grad():
        lead1 = float(metrics.rmse(result.surrogate.step(x), target).mean())
    persistence = float(metrics.rmse(x, target).mean())
    assert lead1 < 0.5 * result.first_guess_rmse
    assert lead1 < 0.4 * persistence  # measured 0.25
