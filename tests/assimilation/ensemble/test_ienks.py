"""iEnKS: ETKF at one iteration and lag 0, exact linear-Gaussian smoother, diagnostics, reproduction."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from ens_helpers import linear_obs, sample_stats
from test_enks import exact_ensemble, linear_problem, smoother_oracle

from hybrida.assimilation.ensemble import ETKF
from hybrida.assimilation.ensemble.ienks import IEnKS
from hybrida.assimilation.window import Window
from hybrida.experiment.config import load_config, validate_config
from hybrida.experiment.runner import run_experiment
from hybrida.models import Lorenz63
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError

F64 = torch.float64


def lorenz63_twin(K: int = 12, seed: int = 1, every: int = 25):
    model = Lorenz63()
    g = torch.Generator().manual_seed(seed)
    x = torch.tensor([1.509, -1.531, 25.46], dtype=F64)
    error = DiagonalError(torch.full((3,), 2.0, dtype=F64))
    observations = []
    for _ in range(K):
        x = model.forecast(x, every)
        y = x + math.sqrt(2.0) * torch.randn(3, generator=g, dtype=F64)
        observations.append(Observation(y=y, operator=lambda z: z, error=error))
    return model, observations, x


def cycle(method, model, state, observations, steps, generator):
    """(prior, posterior) of every cycle through the method's forecast/analyse."""
    out = []
    for k, obs in enumerate(observations, start=1):
        prior = method.forecast(model, state, steps, (k - 1) * steps * model.dt)
        state = method.analyse(prior, obs, k * steps * model.dt, generator)
        out.append((prior, state))
    return out


@pytest.mark.parametrize(("infl", "rot"), [(1.0, False), (1.04, False), (1.04, True)])
def test_one_iteration_lag0_equals_etkf(infl, rot):
    model, observations, _ = lorenz63_twin()
    E0 = torch.tensor([1.5, -1.5, 25.0], dtype=F64) + 2.0 * torch.randn(10, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    ienks = IEnKS(10, lag=0, n_iter=1, infl=infl, rot=rot)
    etkf = ETKF(10, infl=infl, rot=rot)
    start = ienks.initial_state(E0.mean(0), 1.0)
    start.current, start.start = E0.clone(), E0.clone()
    ours = cycle(ienks, model, start, observations, 25, torch.Generator().manual_seed(9))
    ref = cycle(etkf, model, E0.clone(), observations, 25, torch.Generator().manual_seed(9))
    for (_, a), (_, b) in zip(ours, ref):
        assert torch.allclose(a.current, b, atol=1e-10, rtol=0)
    diag = ienks.diagnostics()
    assert diag["n_iter"] == 1.0 and diag["n_obs"] == 3.0
    assert len(diag["cost_per_iteration"]) == len(diag["grad_norm_per_iteration"]) == 1


def _window(model, E0, obs, steps, lag_cycles):
    obs_list = obs if isinstance(obs, list) else [obs]
    return Window(
        model=model,
        start=E0,
        t_start=0.0,
        observations=obs_list,
        obs_steps=[steps * (lag_cycles - len(obs_list) + 1 + i) for i in range(len(obs_list))],
        end_steps=steps * lag_cycles,
        steps_per_cycle=steps,
    )


@pytest.mark.parametrize("variant", ["transform", "bundle"])
@pytest.mark.parametrize("n_iter", [1, 4])
def test_lag1_linear_equals_kalman_smoother(variant, n_iter):
    model, Mc, m0, P0, E0, observations, mats = linear_problem()
    method = IEnKS(E0.shape[0], lag=1, n_iter=n_iter, variant=variant)
    Ea = method.analyse_window(_window(model, E0, observations[0], 2, 1), None)
    mean, cov = smoother_oracle(Mc, m0, P0, mats, 0, 1)
    em, ec = sample_stats(Ea)
    tol = 1e-10 if variant == "transform" else 1e-8  # the bundle divides by epsilon
    assert torch.allclose(em, mean, atol=tol, rtol=0)
    assert torch.allclose(ec, cov, atol=tol, rtol=0)
    diag = method.diagnostics()
    assert diag["n_iter"] == n_iter
    if n_iter > 1:  # linear: the first Gauss–Newton step is the minimum
        assert all(gn < 1e-8 for gn in diag["grad_norm_per_iteration"][1:])
        costs = diag["cost_per_iteration"]
        assert abs(costs[-1] - diag["cost_final"]) < 1e-8 < costs[0] - costs[-1]
    assert 0.0 < diag["dfs"] < min(3, E0.shape[0] - 1)


def test_iterations_do_not_change_a_linear_answer():
    model, _, _, _, E0, observations, _ = linear_problem()
    one = IEnKS(E0.shape[0], lag=1, n_iter=1).analyse_window(_window(model, E0, observations[0], 2, 1), None)
    many = IEnKS(E0.shape[0], lag=1, n_iter=5).analyse_window(_window(model, E0, observations[0], 2, 1), None)
    assert torch.allclose(one, many, atol=1e-11, rtol=0)


@pytest.mark.parametrize(("lag", "shift"), [(1, 1), (3, 1), (2, 2)])
def test_cycled_linear_windows_equal_the_exact_smoother(lag, shift):
    """Through forecast/analyse: current = filter, start = smoothed estimate span cycles back."""
    model, Mc, m0, P0, E0, observations, mats = linear_problem()
    method = IEnKS(E0.shape[0], lag=lag, shift=shift, n_iter=2)
    state = method.initial_state(m0, 1.0)
    state.current, state.start = E0.clone(), E0.clone()
    steps = cycle(method, model, state, observations, 2, None)
    for k, (_, post) in enumerate(steps, start=1):
        if post.pending:  # not analysed yet (shift > 1): nothing to compare
            continue
        mean, cov = smoother_oracle(Mc, m0, P0, mats, k, k)
        em, ec = sample_stats(post.current)
        assert torch.allclose(em, mean, atol=1e-9, rtol=0) and torch.allclose(ec, cov, atol=1e-9, rtol=0), k
        j = k - post.span  # the window start, smoothed by all observations up to k
        mean, cov = smoother_oracle(Mc, m0, P0, mats, j, k)
        em, ec = sample_stats(post.start)
        assert torch.allclose(em, mean, atol=1e-9, rtol=0) and torch.allclose(ec, cov, atol=1e-9, rtol=0), k
    assert method.diagnostics()["n_obs"] == 3.0 * shift


def test_missing_observations_are_masked():
    model, _, _, _, E0, observations, mats = linear_problem()
    Hm, R, y = mats[1]  # cycle 2: y[1] is NaN
    method = IEnKS(E0.shape[0], lag=1)
    with_nan = method.analyse_window(_window(model, E0, observations[1], 2, 1), None)
    keep = torch.tensor([0, 2])
    dropped = IEnKS(E0.shape[0], lag=1).analyse_window(
        _window(model, E0, linear_obs(Hm[keep], y[keep], R[keep]), 2, 1), None
    )
    assert torch.allclose(with_nan, dropped, atol=1e-12, rtol=0)
    assert method.diagnostics()["n_obs"] == 2.0
    empty = method.analyse_window(_window(model, E0, observations[3], 2, 1), None)  # all NaN
    assert torch.equal(empty, E0) and method.diagnostics() == {"n_obs": 0.0}


def test_nonlinear_iterations_lower_the_cost_and_wtol_stops_early():
    model, observations, _ = lorenz63_twin(K=1, every=50)
    g = torch.Generator().manual_seed(4)
    E0 = torch.tensor([1.5, -1.5, 25.0], dtype=F64) + 1.5 * torch.randn(10, 3, generator=g, dtype=F64)
    method = IEnKS(10, lag=1, n_iter=8)
    method.analyse_window(_window(model, E0, observations[0], 50, 1), None)
    costs = method.diagnostics()["cost_per_iteration"]
    assert costs[-1] < costs[0] and method.diagnostics()["n_iter"] == 8.0
    bundle = IEnKS(10, lag=1, n_iter=8, variant="bundle", wtol=1e-3)
    bundle.analyse_window(_window(model, E0, observations[0], 50, 1), None)
    diag = bundle.diagnostics()  # the bundle variant converges fast (Gauss–Newton at the mean)
    assert diag["n_iter"] < 8 and diag["grad_norm_per_iteration"][-1] < 1e-2 * diag["grad_norm_per_iteration"][0]


def test_float32_follows_input():
    model, _, _, _, E0, observations, _ = linear_problem()
    E32 = E0.float()
    obs = observations[0]
    obs32 = Observation(y=obs.y.float(), operator=obs.operator, error=DiagonalError(obs.error.variance.float()))
    Ea = IEnKS(E0.shape[0], lag=1).analyse_window(_window(model, E32, obs32, 2, 1), None)
    assert Ea.dtype == torch.float32 and Ea.shape == E0.shape
    ref = IEnKS(E0.shape[0], lag=1).analyse_window(_window(model, E0, obs, 2, 1), None)
    # measured 4.9e-7 of the max (the update moves the members by 67% of it)
    torch.testing.assert_close(Ea.double(), ref, rtol=0, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"N": 1}, "N must be an integer >= 2"),
        ({"n_iter": 0}, "n_iter"),
        ({"variant": "newton"}, "variant"),
        ({"lag": -1}, "lag"),
        ({"wtol": -1.0}, "wtol"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"infl": 0.0}, "infl"),
        ({"rot": "yes"}, "rot"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"N": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        IEnKS(**args)


def test_wrong_ensemble_size():
    model, _, _, _, E0, observations, _ = linear_problem()
    with pytest.raises(ValueError, match="members"):
        IEnKS(E0.shape[0] + 1, lag=1).analyse_window(_window(model, E0, observations[0], 2, 1), None)


def test_exact_ensemble_helper():
    g = torch.Generator().manual_seed(0)
    P = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    E = exact_ensemble(torch.tensor([1.0, -1.0], dtype=F64), P, 4, g)
    m, C = sample_stats(E)
    assert torch.allclose(m, torch.tensor([1.0, -1.0], dtype=F64)) and torch.allclose(C, P)


#: (preset, method params, published rmse_a, cycles, burn-in, seeds, allowed |median - published|)
REPRODUCTION = [
    ("lorenz63/sakov2012", {"N": 10, "infl": 1.02, "rot": True}, 0.31, 150, 4.0, (1,), 0.12),
    ("lorenz96/sakov2008", {"N": 40, "infl": 1.01, "rot": True}, 0.17, 300, 5.0, (1,), 0.05),
]


@pytest.mark.reproduction
@pytest.mark.parametrize(("preset", "params", "published", "cycles", "burn_in", "seeds", "tol"), REPRODUCTION)
def test_shortened_reproduction(preset, params, published, cycles, burn_in, seeds, tol):
    scores = []
    for seed in seeds:
        data = load_config(preset, [f"seed={seed}", f"cycles={cycles}", f"burn_in={burn_in}", "climatology.steps=2000"]).model_dump()
        data["method"] = {"name": "hybrida.assimilation.ensemble.ienks:IEnKS", "params": params}
        summary = run_experiment(validate_config(data), progress=False).summary
        assert not summary["diverged"], summary["diverged_reason"]
        scores.append(summary["rmse_a"])
    median = statistics.median(scores)
    assert abs(median - published) <= tol, f"{preset}: rmse_a {scores}, published {published}"
