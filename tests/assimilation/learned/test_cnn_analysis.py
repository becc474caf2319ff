"""Single-state CNN analysis: Kalman/BLUE oracle, a trained tiny pipeline beats its bar, save/load, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hybrida.assimilation.learned import load_learned_analysis, save_learned_analysis
from hybrida.assimilation.learned.cnn_analysis import CNNAnalysis, CNNAnalysisNet, grid_inputs
from hybrida.experiment.config import ConfigError
from hybrida.experiment.learned_cnn import make_config, run
from hybrida.learn.cnn_analysis import (
    AnalysisPairs,
    Segments,
    cycle_forecasts,
    cycled_rmse,
    fit_cnn_analysis,
)
from hybrida.learn.cnn_unroll import cycle_weights, fit_unrolled, unrolled_loss
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError
from hybrida.observations.networks import EveryKthObs, IdentityObs

N = 20


def _steady_kalman(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steady-state forecast covariance P_f, gain K and R of a KF for a linear advection model with full obs."""
    eye = torch.eye(n, dtype=torch.float64)
    M = 1.02 * (0.6 * eye + 0.4 * torch.roll(eye, 1, 0))
    i = torch.arange(n)
    d = (i[:, None] - i[None]).abs()
    Q = 0.3 * torch.exp(-torch.minimum(d, n - d) / 2.0)
    R = 0.5 * eye
    P = eye.clone()
    for _ in range(300):  # Riccati iteration to the steady state
        K = P @ torch.linalg.inv(P + R)
        P = M @ ((eye - K) @ P) @ M.T + Q
    return P, P @ torch.linalg.inv(P + R), R


def _oracle_pairs(P: torch.Tensor, R: torch.Tensor, m: int, gen: torch.Generator) -> AnalysisPairs:
    """x ~ N(x_f, P_f), y = x + N(0, R): E[x | x_f, y] is exactly the BLUE x_f + K (y - x_f)."""
    n = P.shape[0]
    xf = 3.0 * torch.randn(m, n, generator=gen, dtype=torch.float64)
    x = xf + torch.randn(m, n, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(P).T
    y = x + torch.randn(m, n, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(R).T
    return AnalysisPairs(xf, y, x)


def _net_analysis(net: CNNAnalysisNet, pairs: AnalysisPairs) -> torch.Tensor:
    with torch.no_grad():
        xf = pairs.xf.float()
        d, mask = grid_inputs(xf, pairs.y.float(), torch.arange(pairs.xf.shape[-1]))
        return net(xf, d, mask).double()


@pytest.mark.parametrize("trained", [True])
def test_linear_gaussian_oracle_reaches_the_steady_kalman_analysis(trained: bool) -> None:
    """Trained on (forecast, truth) pairs of a linear-Gaussian system, the CNN analysis is the KF/BLUE analysis.

    Tolerance: rmse(CNN - BLUE) <= 0.1 x the BLUE's own analysis error (the excess mean-square error is
    below 1% of the optimal one); measured ~0.035. The untrained network returns x_f, at 1.2x.
    """
    P, K, R = _steady_kalman(N)
    gen = torch.Generator().manual_seed(0)
    train, valid, test = (_oracle_pairs(P, R, m, gen) for m in (8000, 1000, 2000))
    torch.manual_seed(0)
    net = CNNAnalysisNet(channels=8, blocks=1, kernel=3, radius=4, mean=0.0, scale=3.0, obs_std=0.7).float()
    res = fit_cnn_analysis(
        net, train, valid, torch.arange(N), epochs=6, batch_size=128, lr=3e-3 if trained else 0.0,
        generator=torch.Generator().manual_seed(1),
    )
    assert res.epochs_run >= 1
    blue = test.xf + (test.y - test.xf) @ K.T
    e_net = float(((_net_analysis(net, test) - blue) ** 2).mean().sqrt())
    e_blue = float(((blue - test.target) ** 2).mean().sqrt())
    assert e_net <= 0.1 * e_blue, (e_net, e_blue)


def test_untrained_network_returns_the_forecast() -> None:
    net = CNNAnalysisNet(channels=4, blocks=1)
    xf = torch.randn(3, 10)
    d, mask = grid_inputs(xf, torch.randn(3, 10), torch.arange(10))
    assert torch.equal(net(xf, d, mask), xf)


def test_grid_inputs_mask_missing_and_unobserved() -> None:
    prior = torch.zeros(6, dtype=torch.float64)
    y = torch.tensor([1.0, float("nan"), 3.0], dtype=torch.float64)
    d, mask = grid_inputs(prior, y, torch.tensor([0, 2, 4]))
    assert d.tolist() == [1.0, 0.0, 0.0, 0.0, 3.0, 0.0]
    assert mask.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _method(n: int = 40, index: torch.Tensor | None = None) -> CNNAnalysis:
    torch.manual_seed(0)
    net = CNNAnalysisNet(channels=4, blocks=1, kernel=3, radius=1, mean=2.0, scale=3.0).float()
    torch.nn.init.normal_(net.head.weight, std=0.01)  # not the identity, so the round trip is checked
    return CNNAnalysis(net, torch.arange(n) if index is None else index, n)


def test_save_load_round_trip_and_identical_analysis(tmp_path) -> None:
    method = _method()
    obs = IdentityObs(40).observe(torch.ones(40, dtype=torch.float64), 1, torch.Generator().manual_seed(0))
    prior = torch.linspace(-2, 5, 40, dtype=torch.float64)
    path = save_learned_analysis(method, tmp_path / "analysis.pt")
    loaded = load_learned_analysis(path)
    assert isinstance(loaded, CNNAnalysis) and loaded.kind == "deterministic"
    a, b = method.analyse(prior, obs), loaded.analyse(prior, obs)
    assert a.dtype == torch.float64 and a.shape == (40,)
    assert torch.equal(a, b) and not torch.equal(a, prior)


def test_missing_observations_are_masked_not_propagated() -> None:
    method = _method()
    obs = IdentityObs(40).observe(torch.ones(40, dtype=torch.float64), 1, torch.Generator().manual_seed(0))
    obs.y[::3] = float("nan")
    xa = method.analyse(torch.ones(40, dtype=torch.float64), obs)
    assert bool(torch.isfinite(xa).all())


def test_bad_input_names_what_to_fix() -> None:
    method = _method()
    gen = torch.Generator().manual_seed(0)
    obs40 = IdentityObs(40).observe(torch.ones(40, dtype=torch.float64), 1, gen)
    with pytest.raises(ValueError, match="trained for n=40, p=40"):
        method.analyse(torch.ones(20, dtype=torch.float64), IdentityObs(20).observe(torch.ones(20, dtype=torch.float64), 1, gen))
    with pytest.raises(ValueError, match="float64"):
        method.analyse(torch.ones(40, dtype=torch.float32), obs40)
    with pytest.raises(ValueError, match="p=40"):
        method.analyse(torch.ones(40, dtype=torch.float64), EveryKthObs(40, 2).observe(torch.ones(40, dtype=torch.float64), 1, gen))
    with pytest.raises(ValueError, match="NaN"):
        method.analyse(torch.full((40,), math.nan, dtype=torch.float64), obs40)
    # same p, other points observed
    shifted = CNNAnalysis(method.net, torch.arange(0, 40, 2), 40)
    with pytest.raises(ValueError, match="grid points"):
        shifted.analyse(torch.ones(40, dtype=torch.float64), EveryKthObs(40, 2, offset=1).observe(torch.ones(40, dtype=torch.float64), 1, gen))
    scaled = Observation(obs40.y.clone(), lambda x: 2 * x, DiagonalError(torch.ones(40, dtype=torch.float64)),
                         matrix=2 * torch.eye(40, dtype=torch.float64))
    with pytest.raises(ValueError, match="point observations"):
        method.analyse(torch.ones(40, dtype=torch.float64), scaled)
    with pytest.raises(ValueError, match="unknown parameters"):
        CNNAnalysis.from_payload(method.to_payload(), bogus=1)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="channels"):
        make_config(False, ["channels=0"])
    with pytest.raises(ConfigError, match="variants"):
        make_config(False, ["variants=[ensemble]"])
    with pytest.raises(ConfigError, match="nonsense"):
        make_config(True, ["nonsense=1"])


def test_cycle_forecasts_follow_the_model_without_training() -> None:
    """An untrained network does no analysis: the cycled states are the free model run."""
    model = Lorenz96(40, 8.0, 0.05)
    x0 = model.initial_state().unsqueeze(0)
    net = CNNAnalysisNet(channels=4, blocks=1).double()
    y = torch.zeros(5, 1, 40, dtype=torch.float64)
    _fc, an = cycle_forecasts(net, model, x0, y, torch.arange(40), 1)
    assert torch.allclose(an[-1, 0], model.forecast(x0[0], 5))


#: a tiny pipeline run: ~20-40 s on one free core; its bar is looser than --quick's (0.40)
TINY = [
    "train_cycles=600", "valid_cycles=200", "test_cycles=300", "rounds=1", "epochs=3", "epochs_online=2",
    "channels=16", "blocks=1", "burn_in=50", "segment=25", "valid_segment=50", "spinup=100",
    "variants=[truth]", "clim_steps=3000", "lr_online=2e-3",
    "unroll_epochs=1", "unroll_steps=4", "unroll_window=[8]", "unroll_segment=50", "unroll_batch=32",
]
TINY_BAR = 0.45


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cnn")
    return out, run(out, seed=1, quick=True, overrides=TINY)


def test_tiny_pipeline_beats_its_bar_and_writes_its_outputs(tiny_run) -> None:
    """Trained online on 600 cycles, the cycled CNN analysis beats 3D-Var's neighbourhood; untrained it diverges."""
    out, summary = tiny_run
    assert summary["rmse"] <= TINY_BAR, summary
    assert summary["baselines"]["etkf"] < 0.25 and summary["baselines"]["3dvar"] < 0.5
    on_disk = json.loads((out / "summary.json").read_text())
    for key in ("rmse", "baselines", "train_s", "bar", "met", "quick", "seed"):
        assert key in on_disk
    assert (out / "training.png").is_file() and (out / "rmse.png").is_file()
    loaded = load_learned_analysis(out / "analysis.pt")
    assert isinstance(loaded, CNNAnalysis) and loaded.target == "truth"


def test_tiny_pipeline_resume_reuses_the_trained_variant(tiny_run) -> None:
    out, summary = tiny_run
    again = run(out, seed=1, quick=True, overrides=TINY, resume=True)
    assert again["rmse"] == summary["rmse"]
    assert again["train_s"] == summary["train_s"]


def test_unrolled_loss_gradient_matches_finite_differences() -> None:
    """The loss through W=3 cycles (model + network) has the autograd gradient of its finite differences."""
    model = Lorenz96(8, 8.0, 0.05)
    torch.manual_seed(0)
    net = CNNAnalysisNet(channels=2, blocks=1, kernel=3, radius=1, mean=2.0, scale=3.0).double()
    torch.nn.init.normal_(net.head.weight, std=0.1)
    gen = torch.Generator().manual_seed(1)
    x0 = model.initial_state().unsqueeze(0) + 0.1 * torch.randn(2, 8, generator=gen, dtype=torch.float64)
    y = torch.randn(3, 2, 8, generator=gen, dtype=torch.float64)
    target = torch.randn(3, 2, 8, generator=gen, dtype=torch.float64)
    bias = net.head.bias

    def loss_of(b: torch.Tensor) -> torch.Tensor:
        return _loss_with_bias(net, b, model, x0, y, target)

    assert torch.autograd.gradcheck(loss_of, (bias.detach().clone().requires_grad_(True),))


def test_unrolled_loss_weights_and_truncation() -> None:
    """Weights on the last cycle only give its MSE; truncation keeps the loss value and cuts the early gradient."""
    model = Lorenz96(8, 8.0, 0.05)
    torch.manual_seed(0)
    net = CNNAnalysisNet(channels=2, blocks=1, kernel=3, radius=1, mean=2.0, scale=3.0).double()
    torch.nn.init.normal_(net.head.weight, std=0.1)
    gen = torch.Generator().manual_seed(1)
    x0 = model.initial_state().unsqueeze(0) + 0.1 * torch.randn(2, 8, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 2, 8, generator=gen, dtype=torch.float64)
    target = torch.randn(4, 2, 8, generator=gen, dtype=torch.float64)
    idx = torch.arange(8)
    last = unrolled_loss(net, model, x0, y, target, idx, 1, weights=torch.tensor([0.0, 0, 0, 1]))
    with torch.no_grad():
        x = x0
        for j in range(4):
            xf = model.forecast(x, 1)
            x = net(xf, *grid_inputs(xf, y[j], idx))
    assert torch.allclose(last, ((x - target[3]) ** 2).mean())
    x0g = x0.clone().requires_grad_(True)
    full = unrolled_loss(net, model, x0g, y, target, idx, 1, weights=torch.tensor([0.0, 0, 0, 1]))
    (g_full,) = torch.autograd.grad(full, x0g)
    x0t = x0.clone().requires_grad_(True)
    cut = unrolled_loss(net, model, x0t, y, target, idx, 1, weights=torch.tensor([0.0, 0, 0, 1]), truncate=2)
    assert torch.allclose(cut, full)
    (g_cut,) = torch.autograd.grad(cut, x0t, allow_unused=True)
    assert float(g_full.abs().sum()) > 0 and (g_cut is None or float(g_cut.abs().sum()) == 0)
    assert torch.allclose(cycle_weights(3, 2.0), torch.tensor([1.0, 1.5, 2.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="weights"):
        unrolled_loss(net, model, x0, y, target, idx, 1, weights=torch.ones(3))


def _loss_with_bias(net, b, model, x0, y, target):
    params = {**{k: v.detach() for k, v in net.named_parameters()}, "head.bias": b}
    wrapped = _Wrapped(net, params)
    return unrolled_loss(wrapped, model, x0, y, target, torch.arange(8), 1)


class _Wrapped(torch.nn.Module):
    def __init__(self, net, params):
        super().__init__()
        self.net, self.params = net, params

    def forward(self, xf, d, mask):
        return torch.func.functional_call(self.net, self.params, (xf, d, mask))


def test_fit_unrolled_improves_a_cycled_filter() -> None:
    """From an untrained network (no analysis), two unrolled epochs give a cycled rmse well below the free run."""
    model = Lorenz96(40, 8.0, 0.05)
    gen = torch.Generator().manual_seed(0)
    x = model.forecast(model.initial_state() + 0.1 * torch.randn(40, generator=gen, dtype=torch.float64), 200)
    truth = torch.stack([x := model.forecast(x, 1) for _ in range(1200)])
    y = truth + torch.randn(truth.shape, generator=gen, dtype=torch.float64)
    def segs(a, b, L):
        B = (b - a) // L
        t = truth[a + 1 : a + 1 + B * L].reshape(B, L, 40).transpose(0, 1).contiguous()
        yy = y[a + 1 : a + 1 + B * L].reshape(B, L, 40).transpose(0, 1).contiguous()
        return Segments(truth[a : a + B * L : L] + 0.3 * torch.randn(B, 40, generator=gen, dtype=torch.float64), yy, t)
    train, valid = segs(0, 1000, 25), segs(1000, 1199, 33)
    torch.manual_seed(0)
    net = CNNAnalysisNet(channels=8, blocks=1, kernel=3, radius=1, mean=2.3, scale=3.6).float()
    res = fit_unrolled(net, model, train, valid, torch.arange(40), 1, window=3, epochs=2, batch_size=32, lr=3e-3,
                       generator=torch.Generator().manual_seed(1))
    assert res.epochs_run >= 1
    _, an = valid.cycle(net, model, torch.arange(40), 1)
    assert cycled_rmse(an, valid.target, 10) < 0.6  # untrained: the free run, rmse ~ 3-5
