"""4DVarNet: exact L96 prior, interpolation, gradient checks through the unrolled solver, training, cycling, files."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.func import functional_call

from hybrida.assimilation.learned import load_learned_analysis, save_learned_analysis
from hybrida.assimilation.learned.fourdvarnet import (
    CNNPrior,
    FourDVarNet,
    FourDVarNetSolver,
    ODEPrior,
    interpolate_window,
    l96_ode_coefficients,
    observation_row,
)
from hybrida.cycle import run_cycle
from hybrida.learn.fourdvarnet import (
    fit_fourdvarnet,
    gradient_descent_4dvar,
    make_windows,
    observe_windows,
    reconstruct,
)
from hybrida.models.lorenz96 import Lorenz96
from hybrida.nn.convlstm import ConvLSTM2d
from hybrida.observations.networks import RadianceObs, RandomSubsetObs


def test_ode_prior_with_l96_coefficients_is_the_l96_rk4_step():
    model = Lorenz96()
    traj = model.forecast(model.initial_state(), 30, trajectory=True)
    prior = ODEPrior(mean=2.0, std=3.0).double()
    prior.load_state_dict(l96_ode_coefficients(prior))
    z = ((traj - 2.0) / 3.0).unsqueeze(0)
    phi = prior(z)
    torch.testing.assert_close(phi[0, 1:], z[0, 1:], rtol=0, atol=1e-12)
    torch.testing.assert_close(phi[0, 0], z[0, 0])


def test_interpolation_is_exact_on_linear_series_and_constant_beyond_the_ends():
    T, n = 12, 3
    t = torch.arange(T, dtype=torch.float64).view(-1, 1)
    y = (2.0 * t + torch.arange(n)).expand(T, n).clone()
    mask = torch.zeros(T, n)
    mask[[2, 5, 9], :] = 1.0
    x = interpolate_window(y * mask, mask.double())
    torch.testing.assert_close(x[2:10], y[2:10])
    torch.testing.assert_close(x[:2], y[2].expand(2, n))
    torch.testing.assert_close(x[10:], y[9].expand(2, n))
    assert bool((interpolate_window(y, torch.zeros(T, n, dtype=torch.float64)) == 0).all())


def _small(prior: str = "ode", n_iter: int = 3) -> FourDVarNetSolver:
    cfg = {"mean": 2.0, "std": 3.0, "init": "random", "seed": 1} if prior == "ode" else {"channels": 2, "seed": 1}
    return FourDVarNetSolver(prior, cfg, hidden=2, n_iter=n_iter, seed=1).double()


def _window(T: int = 8, n: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(1, T, n, generator=gen, dtype=torch.float64)
    mask = (torch.rand(1, T, n, generator=gen) < 0.5).double()
    return z, z * mask, mask


@pytest.mark.parametrize("prior", ["ode", "cnn"])
def test_gradcheck_through_the_unrolled_solver_inputs(prior):
    solver = _small(prior)
    z0, y, mask = _window()
    assert torch.autograd.gradcheck(lambda a, b: solver(a, b, mask), (z0.requires_grad_(), y.requires_grad_()))


def test_gradcheck_through_the_unrolled_solver_parameters():
    """d(loss)/d(theta) of the training loss through K=3 iterations (second-order terms of grad U included)."""
    solver = _small("ode")
    z0, y, mask = _window()
    target = torch.randn_like(z0)
    names = ["prior.quad", "log_lambda", "out.weight"]
    params = {k: v.detach() for k, v in solver.named_parameters()}

    def loss(*theta):
        p = dict(params, **dict(zip(names, theta)))
        return ((functional_call(solver, p, (z0, y, mask)) - target) ** 2).mean()

    theta = tuple(params[k].clone().requires_grad_() for k in names)
    assert torch.autograd.gradcheck(loss, theta)


def test_convlstm_shapes_and_bad_input():
    cell = ConvLSTM2d(1, 3)
    h, c = cell(torch.randn(2, 1, 10, 7))
    assert h.shape == c.shape == (2, 3, 10, 7)
    with pytest.raises(ValueError, match="shape"):
        cell(torch.randn(10, 7))
    with pytest.raises(ValueError, match="odd"):
        ConvLSTM2d(1, 3, kernel_time=2)


def test_cnn_prior_cannot_see_the_point_it_predicts():
    prior = CNNPrior(channels=3).double()
    z = torch.randn(1, 9, 8, dtype=torch.float64)
    z2 = z.clone()
    z2[0, 4, 3] += 10.0
    diff = (prior(z2) - prior(z)).abs()
    assert float(diff[0, 4, 3].detach()) < 1e-12
    assert float(diff.max().detach()) > 1e-6


def _data(n_train: int = 24, T: int = 64, seed: int = 0):
    model = Lorenz96()
    x0 = model.initial_state()
    train = make_windows(model, x0, n_train, T)
    val = make_windows(model, train[-1, -1], 3, T, spinup=100)
    return train, val, float(train.mean()), float(train.std())


def _fit(lr: float, steps: int = 60):
    train, val, mean, std = _data()
    solver = FourDVarNetSolver("ode", {"mean": mean, "std": std}, hidden=4, n_iter=6, seed=0)
    res = fit_fourdvarnet(
        solver, train.float(), val.float(), mean=mean, std=std, steps=steps, batch=4, crop=32, lr=lr,
        eval_every=steps, patience=5, generator=torch.Generator().manual_seed(0),
    )
    y, _ = observe_windows(val, 4, 0.5, math.sqrt(2.0), torch.Generator().manual_seed(0))
    mask = torch.isfinite(y)
    z = torch.nan_to_num((y - mean) / std)
    interp = float(((mean + std * interpolate_window(z, mask.double()) - val) ** 2).mean() / std**2)
    return res, interp, solver


def test_training_beats_interpolation_and_fails_when_disabled():
    """Quick bar: after 60 steps (~15 s) the validation error is <= 0.7 x the interpolation's; lr=0 is not."""
    res, interp, solver = _fit(lr=1e-2)
    assert res.best_score <= 0.7 * interp, (res.best_score, interp)
    quad = solver.prior.quad.detach()
    assert float(quad.abs().max()) > 0.02  # the ODE coefficients moved from 0 toward L96's
    res0, interp0, _ = _fit(lr=1e-9, steps=10)
    assert res0.best_score > 0.7 * interp0, (res0.best_score, interp0)


def test_cosine_schedule_anneals_the_learning_rate_and_bad_schedule_fails():
    train, val, mean, std = _data(n_train=4, T=32)
    solver = FourDVarNetSolver("ode", {"mean": mean, "std": std}, hidden=2, n_iter=2, seed=0)
    lrs = []
    fit_fourdvarnet(
        solver, train.float(), val.float(), mean=mean, std=std, steps=4, batch=2, crop=32, lr=0.1, eval_every=1,
        patience=10, schedule="cosine", generator=torch.Generator().manual_seed(0),
        on_eval=lambda res, best, opt: lrs.append(opt["param_groups"][0]["lr"]),
    )
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="schedule"):
        fit_fourdvarnet(solver, train.float(), val.float(), mean=mean, std=std, steps=1, crop=32, schedule="step")


def test_gradient_descent_4dvar_with_the_true_prior_improves_on_interpolation():
    train, _, mean, std = _data(n_train=2)
    y, mask = observe_windows(train, 4, 0.5, math.sqrt(2.0), torch.Generator().manual_seed(3))
    prior = ODEPrior(mean=mean, std=std).double()
    prior.load_state_dict(l96_ode_coefficients(prior))
    z = torch.nan_to_num((y - mean) / std)
    e_interp = float(((mean + std * interpolate_window(z, mask) - train) ** 2).mean())
    x = gradient_descent_4dvar(prior, y, mean, std, 1.0, 10.0, 100, 0.02)
    assert float(((x - train) ** 2).mean()) < 0.8 * e_interp


def _method(window: int = 4, **kw) -> FourDVarNet:
    solver = FourDVarNetSolver("ode", {"mean": 2.3, "std": 3.6}, hidden=2, n_iter=2, seed=0)
    return FourDVarNet(solver, n=40, p=20, every=4, mean=2.3, std=3.6, window=window, **kw)


def test_fourdvarnet_cycles_with_run_cycle_and_round_trips(tmp_path):
    model = Lorenz96()
    net = RandomSubsetObs(40, 0.5, std=math.sqrt(2.0), every=4)
    gen = torch.Generator().manual_seed(0)
    truth = torch.stack([model.forecast(model.initial_state(), 4 * k) for k in range(7)])
    obs = [net.observe(truth[k], k, gen) for k in range(1, 7)]
    method = _method()
    records = [r for r, _ in run_cycle(model, method, method.initial_state(truth[0], 1.0), truth, obs, 4)]
    assert len(records) == 6 and all(math.isfinite(r.rmse_a) for r in records)
    assert method.last_window.shape == (16, 40)
    path = save_learned_analysis(method, tmp_path / "analysis.pt")
    loaded = load_learned_analysis(path, window=3)
    assert isinstance(loaded, FourDVarNet) and loaded.window == 3
    rows = [observation_row(o, 40) for o in obs[-4:]]
    torch.testing.assert_close(load_learned_analysis(path).reconstruct_window(rows), method.reconstruct_window(rows))


def test_fourdvarnet_bad_inputs():
    model = Lorenz96()
    method = _method()
    state = method.forecast(model, method.initial_state(model.initial_state(), 1.0), 4)
    with pytest.raises(ValueError, match="every 4"):
        method.forecast(model, state, 3)
    with pytest.raises(ValueError, match="trained for n=40, p=20"):
        method.analyse(state, RandomSubsetObs(40, 10, every=4).observe(state.current, 1))
    with pytest.raises(ValueError, match="select variables"):
        m2 = FourDVarNet(method.solver, n=40, p=4, every=4, mean=2.3, std=3.6)
        m2.analyse(state, RadianceObs(40, 4, 2.0, nonlinearity="linear", every=4).observe(state.current, 1))
    with pytest.raises(ValueError, match="shift"):
        _method(window=2, shift=3)
    with pytest.raises(ValueError, match="unknown parameter"):
        FourDVarNet.from_payload(method.to_payload(), bogus=1)
    with pytest.raises(ValueError, match="share a shape"):
        method.solver(torch.zeros(1, 8, 40), torch.zeros(1, 8, 39), torch.zeros(1, 8, 40))


def test_pipeline_writes_summary_plots_and_resumes(tmp_path):
    from hybrida.experiment.learned_4dvarnet import run

    tiny = [
        "window=32", "crop=32", "train_windows=4", "val_windows=1", "test_windows=2", "steps=4", "eval_every=2",
        "hidden=2", "n_iter=2", "gd_iter=5", "fourdvar_windows=1", "cycles=12", "burn_in=2", "cycle_window=4",
        "cycle_lag=1",
    ]
    s = run(tmp_path, seed=1, quick=True, overrides=tiny, resume=False)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("rmse", "baselines", "train_s", "bar", "met", "quick", "seed", "window_score", "window_baselines"):
        assert key in on_disk
    assert set(s["baselines"]) == {"fourdvar_weak"}
    assert (tmp_path / "training.png").is_file() and (tmp_path / "rmse.png").is_file()
    assert isinstance(load_learned_analysis(tmp_path / "analysis.pt"), FourDVarNet)
    s2 = run(tmp_path, seed=1, quick=True, overrides=tiny, resume=True)
    assert s2["train_steps"] == s["train_steps"] == 4
    from hybrida.experiment.config import ConfigError

    with pytest.raises(ConfigError, match="hidden"):
        run(tmp_path, seed=1, quick=True, overrides=["hidden=0"], resume=False)


def test_reconstruct_matches_the_cycled_window():
    """The method's window reconstruction equals reconstruct() on the same observation grid."""
    method = _method(window=4)
    gen = torch.Generator().manual_seed(1)
    truth = make_windows(Lorenz96(), Lorenz96().initial_state(), 1, 16)
    y, _ = observe_windows(truth, 4, 0.5, 1.0, gen)
    rows = [y[0, 4 * i + 3] for i in range(4)]
    a = method.reconstruct_window(rows)
    b = reconstruct(method.solver, y, 2.3, 3.6)[0]
    torch.testing.assert_close(a, b.to(a.dtype))
