"""Observation bias: predictors, the biased scenario, the bias models and the learned fit."""

from __future__ import annotations

import pytest
import torch

from hybrida.experiment.twin import nature_run
from hybrida.learn.bias import BiasCorrected, bias_departures, fit_bias_model
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.bias import (
    BiasedObs,
    BiasPredictors,
    ChannelBias,
    LinearBias,
    NeuralBias,
    scan_covariate,
)
from hybrida.observations.networks import IdentityObs, SubsetObs

N = 40


def _predictors() -> BiasPredictors:
    loc = torch.arange(N)
    return BiasPredictors(torch.where(loc % 2 == 0, -1, (loc // 2) % 3), scan_covariate(N, 8), 2.5, 4.0)


def _bias(shape: str = "quadratic") -> ChannelBias:
    return ChannelBias(_predictors(), [1.0, -0.8, 0.6], [0.8, 0.6, -0.7], [0.3, 0.0, -0.3], shape, 2.5, 4.0)


def test_design_places_predictors_in_channel_blocks():
    pred = BiasPredictors([-1, 0, 1, 0], scan=[0.0, 0.5, -0.5, 1.0], offset=1.0, scale=2.0)
    obs = SubsetObs(4, [3, 0, 2]).network(1)
    hx = torch.tensor([5.0, 7.0, -1.0], dtype=torch.float64)
    P = pred.design(obs, hx)
    assert P.shape == (3, 6) and pred.n_coefficients == 6
    torch.testing.assert_close(P[0], torch.tensor([1.0, 2.0, 1.0, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(P[1], torch.zeros(6, dtype=torch.float64))  # location 0: anchor
    torch.testing.assert_close(P[2], torch.tensor([0, 0, 0, 1.0, -1.0, -0.5], dtype=torch.float64))
    # batched simulated values (members) give batched designs
    assert pred.design(obs, hx.expand(5, 3)).shape == (5, 3, 6)
    beta = torch.arange(6, dtype=torch.float64)
    torch.testing.assert_close(LinearBias(pred, beta).bias(obs, hx), P @ beta)


def test_biased_obs_adds_the_bias_and_leaves_anchors_and_H_alone():
    model = Lorenz96(N)
    x = model.forecast(model.initial_state(), 300)
    net = IdentityObs(N, std=1.0)
    bias = _bias()
    o_b = BiasedObs(net, bias).observe(x, 1, torch.Generator().manual_seed(4))
    o_u = net.observe(x, 1, torch.Generator().manual_seed(4))
    torch.testing.assert_close(o_b.y - o_u.y, bias(o_u, x))
    torch.testing.assert_close(o_b.meta["bias"], bias(o_u, x))
    assert bool((o_b.y[::2] == o_u.y[::2]).all())
    assert float(o_b.meta["bias"][1::2].abs().min()) > 0
    torch.testing.assert_close(o_b.H(x), x)


def test_correct_subtracts_the_bias_at_the_background():
    pred = _predictors()
    obs = IdentityObs(N).network(1)
    obs.y = torch.randn(N, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xb = torch.linspace(-3, 9, N, dtype=torch.float64)
    model = LinearBias(pred, torch.linspace(-1, 1, pred.n_coefficients, dtype=torch.float64))
    c = model.correct(obs, xb)
    torch.testing.assert_close(c.y, obs.y - model.bias(obs, xb))
    assert c.operator is obs.operator and c.error is obs.error


def _states(seed: int, T: int) -> torch.Tensor:
    model = Lorenz96(N)
    g = torch.Generator().manual_seed(seed)
    x0 = model.forecast(model.initial_state() + torch.randn(N, generator=g, dtype=torch.float64), 300)
    return nature_run(model, x0, T, 3)[1:]


def _learned_error(epochs: int, lr: float) -> tuple[float, float]:
    """Held-out rmse of a NeuralBias fitted to noisy departures of a nonlinear bias, and the bias rms."""
    pred, bias = _predictors(), _bias("quadratic")
    net = IdentityObs(N, std=1.0)
    g = torch.Generator().manual_seed(1)
    states = _states(0, 400)
    train = [BiasedObs(net, bias).observe(x, k, g) for k, x in enumerate(states)]
    hx, d = bias_departures(train, states)  # departures = bias + observation noise
    model = NeuralBias(pred, width=32, depth=2, seed=0)
    fit_bias_model(model, train[0], hx, d, epochs=epochs, lr=lr, batch_size=64, seed=0)
    test = _states(7, 100)  # held-out truth from another initial state
    template = net.network(1)
    with torch.no_grad():
        true_b = bias(template, test)[:, 1::2]
        err = model.bias(template, test)[:, 1::2] - true_b
    return float(err.pow(2).mean().sqrt()), float(true_b.pow(2).mean().sqrt())


def test_learned_bias_fits_a_nonlinear_bias_on_held_out_states():
    err, size = _learned_error(epochs=60, lr=3e-3)
    assert size > 0.8
    assert err < 0.2, f"held-out rmse {err:.3f} against a bias of rms {size:.3f}"


def test_learned_bias_test_fails_without_learning():
    err, _ = _learned_error(epochs=0, lr=3e-3)
    assert err > 0.5  # the fitted test's bar (0.2) is far from what an untrained net gives
    err_lr0, _ = _learned_error(epochs=5, lr=0.0)
    assert err_lr0 > 0.5


def test_online_learning_within_the_cycle_tracks_the_bias():
    """BiasCorrected(ThreeDVar) with online steps from an untrained net: the applied bias approaches the truth."""
    from hybrida.assimilation.variational.threedvar import ThreeDVar
    from hybrida.cycle import run_cycle
    from hybrida.experiment.twin import climatology, make_twin

    model = Lorenz96(N)
    x0 = _states(3, 1)[0]
    clim = climatology(model, x0, 3000, thin=5)
    bias = _bias("linear")
    twin = make_twin(model, BiasedObs(IdentityObs(N, std=1.0), bias), x0, 250, torch.Generator().manual_seed(2))

    def run(steps: int) -> float:
        net = NeuralBias(_predictors(), width=16, depth=1, seed=0)
        method = BiasCorrected(ThreeDVar(clim, xB=0.02), net, online_steps=steps, lr=1e-2, buffer=30)
        errs = []
        for rec, _ in run_cycle(model, method, x0.clone(), twin.truth, twin.observations, 1, innovations=False):
            o = twin.observations[rec.cycle - 1]
            with torch.no_grad():
                errs.append(float((net.bias(o, rec.prior_mean) - o.meta["bias"]).pow(2).mean().sqrt()))
        return sum(errs[-50:]) / 50

    assert run(5) < 0.3
    assert run(0) > 0.5


def test_bias_corrected_rejects_online_learning_of_a_linear_model():
    from hybrida.assimilation.ensemble.etkf import ETKF

    with pytest.raises(ValueError, match="NeuralBias"):
        BiasCorrected(ETKF(N=5), LinearBias(_predictors()), online_steps=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channel": [[0, 1]]}, "1-D"),
        ({"channel": [0, -2]}, ">= -1"),
        ({"channel": [0, 1], "scan": [0.0]}, "scan"),
        ({"channel": [0, 1], "names": ["slope"]}, "names"),
        ({"channel": [0, 1], "scale": 0.0}, "scale"),
    ],
)
def test_predictors_validate(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BiasPredictors(**kwargs)


def test_online_learning_masks_missing_values():
    from hybrida.assimilation.ensemble.etkf import ETKF

    x = _states(5, 1)[0]
    obs = BiasedObs(IdentityObs(N, std=1.0), _bias()).observe(x, 1, torch.Generator().manual_seed(0))
    obs.y[[1, 7]] = float("nan")
    net = NeuralBias(_predictors(), width=8, depth=1, seed=0)
    before = [p.detach().clone() for p in net.parameters()]
    method = BiasCorrected(ETKF(N=10), net, online_steps=2, lr=1e-2)
    prior = method.initial_state(x, 1.0, torch.Generator().manual_seed(1))
    post = method.analyse(prior, obs, 0.0, torch.Generator().manual_seed(2))
    assert bool(torch.isfinite(post).all())
    assert all(bool(torch.isfinite(p).all()) for p in net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert torch.isfinite(torch.tensor(method.diagnostics()["bias_loss"]))
