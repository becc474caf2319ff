"""AI-Var: the cost and its gradient, the linear-Gaussian oracle, the fast path, save/load, bad input, the pipeline."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hybrida.assimilation.learned import load_learned_analysis, save_learned_analysis
from hybrida.assimilation.learned.aivar import (
    AIVar,
    AIVarNet,
    adjoint_innovation,
    krylov_vectors,
    observation_term,
    threedvar_cost,
)
from hybrida.assimilation.variational.threedvar import ThreeDVar
from hybrida.learn.aivar import aivar_loss, fit_aivar, inverse_sqrt, set_normalisation
from hybrida.observations.base import Observation
from hybrida.observations.errors import CorrelatedError, DiagonalError

D = torch.float64


def _spd(n: int, g: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    A = torch.randn(n, n, generator=g, dtype=D)
    return scale * (A @ A.mT / n + 0.5 * torch.eye(n, dtype=D))


def _random_net(n: int, p: int, g: torch.Generator, hidden: int = 6, krylov: int = 0) -> AIVarNet:
    net = AIVarNet(n, p, hidden=hidden, depth=2, krylov=krylov).double()
    with torch.no_grad():
        for prm in net.parameters():
            prm.copy_(0.3 * torch.randn(prm.shape, generator=g, dtype=D))
    S = torch.linalg.cholesky(_spd(n, g))
    gs = torch.rand(krylov * n, generator=g, dtype=D) + 0.5 if krylov else None
    net.set_statics(S @ S.mT, torch.randn(n, generator=g, dtype=D),  # a symmetric B^{1/2} as psd_sqrt gives
                    torch.rand(n, generator=g, dtype=D) + 0.5, torch.rand(p, generator=g, dtype=D) + 0.5, gs)
    return net


@pytest.mark.parametrize(("correlated", "krylov"), [(False, 0), (True, 0), (False, 2), (True, 2)])
def test_gradcheck_training_loss(correlated: bool, krylov: int) -> None:
    """torch.autograd.gradcheck of the AI-Var loss w.r.t. every weight, nonlinear H, masked obs, float64."""
    g = torch.Generator().manual_seed(0)
    n, p, K = 4, 3, 5
    net = _random_net(n, p, g, hidden=5, krylov=krylov)
    W = torch.randn(p, n, generator=g, dtype=D)

    def H(x: torch.Tensor) -> torch.Tensor:
        return 3.0 * torch.tanh(x / 3.0) @ W.mT

    xb = torch.randn(K, n, generator=g, dtype=D)
    y = torch.randn(K, p, generator=g, dtype=D)
    y[1, 2] = float("nan")
    mask = torch.isfinite(y)
    mask[3, 0] = False
    R = _spd(p, g) if correlated else torch.rand(p, generator=g, dtype=D) + 0.5
    Bis = inverse_sqrt(_spd(n, g))
    if krylov:  # feature scales from the data, as in training (unscaled, the cost is too large for finite differences)
        set_normalisation(net, torch.linalg.inv(Bis @ Bis), xb, y, H, R)
    names = [k for k, _ in net.named_parameters()]
    params = tuple(prm.detach().clone().requires_grad_(True) for prm in net.parameters())
    buffers = dict(net.named_buffers())

    def loss(*ps: torch.Tensor) -> torch.Tensor:
        state = {**dict(zip(names, ps, strict=True)), **buffers}
        d = torch.where(mask, y - H(xb), torch.zeros_like(y))
        adj = krylov_vectors(xb, d, mask, H, R, buffers["B_sqrt"] @ buffers["B_sqrt"], krylov) if krylov else None
        xa = torch.func.functional_call(net, state, (xb, d, mask, adj))
        return threedvar_cost(xa, xb, y, mask, H, Bis, R).mean()

    assert torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-6)
    # the same loss as the training code's
    assert torch.allclose(loss(*params), aivar_loss(net, xb, y, mask, H, Bis, R))


@pytest.mark.parametrize("correlated", [False, True])
def test_adjoint_innovation_is_minus_the_gradient(correlated: bool) -> None:
    """H'(x_b)^T R^-1 d = -∇_x of J's observation term at x_b (nonlinear H, masked obs, batched);
    a selection (indices) and a linear H (matrix) give the same as autodiff."""
    g = torch.Generator().manual_seed(11)
    n, p, K = 6, 4, 3
    W = torch.randn(p, n, generator=g, dtype=D)
    H = lambda x: 2.0 * torch.tanh(x / 2.0) @ W.mT
    R = _spd(p, g) if correlated else torch.rand(p, generator=g, dtype=D) + 0.5
    xb = torch.randn(K, n, generator=g, dtype=D)
    y = torch.randn(K, p, generator=g, dtype=D)
    mask = torch.rand(K, p, generator=g, dtype=D) > 0.3
    d = torch.where(mask, y - H(xb), 0.0)
    x = xb.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(observation_term(y - H(x), mask, R).sum(), x)
    assert torch.allclose(adjoint_innovation(xb, d, mask, H, R), -grad, atol=1e-12)
    # the Krylov vectors with the explicit Jacobian: a_2 = J^T R_m^-1 J B a_1, masked entries dropped
    B = _spd(n, g)
    kv = krylov_vectors(xb, d, mask, H, R, B, 3)
    for b in range(K):
        Jm = torch.autograd.functional.jacobian(H, xb[b])[mask[b]]
        Rm = torch.diag(R[mask[b]]) if R.ndim == 1 else R[mask[b]][:, mask[b]]
        A = Jm.mT @ torch.linalg.solve(Rm, Jm) @ B
        a1 = Jm.mT @ torch.linalg.solve(Rm, d[b, mask[b]])
        assert torch.allclose(kv[b], torch.cat((a1, A @ a1, A @ A @ a1)), atol=1e-10)
    idx = torch.tensor([4, 0, 2, 5])
    Sel = torch.zeros(p, n, dtype=D)
    Sel[torch.arange(p), idx] = 1.0
    d = torch.where(mask, y - xb[:, idx], 0.0)
    sel = lambda x: x[..., idx]
    auto = adjoint_innovation(xb, d, mask, sel, R)
    assert torch.allclose(adjoint_innovation(xb, d, mask, sel, R, indices=idx), auto, atol=1e-12)
    assert torch.allclose(adjoint_innovation(xb, d, mask, sel, R, matrix=Sel), auto, atol=1e-12)
    auto = krylov_vectors(xb, d, mask, sel, R, B, 2)
    assert torch.allclose(krylov_vectors(xb, d, mask, sel, R, B, 2, indices=idx), auto, atol=1e-12)
    assert torch.allclose(krylov_vectors(xb, d, mask, sel, R, B, 2, matrix=Sel), auto, atol=1e-12)


def test_masked_observation_term_matches_subset() -> None:
    """1/2 r_m^T R_mm^-1 r_m of a full R equals the whitened norm of the valid subset (Observation.valid)."""
    g = torch.Generator().manual_seed(1)
    p = 6
    R = _spd(p, g)
    r = torch.randn(p, generator=g, dtype=D)
    mask = torch.tensor([True, False, True, True, False, True])
    idx = torch.nonzero(mask).squeeze(-1)
    w = CorrelatedError(R).subset(idx).whiten(r[idx])
    assert torch.allclose(observation_term(r, mask, R), 0.5 * (w * w).sum())
    wd = DiagonalError(torch.diagonal(R)).subset(idx).whiten(r[idx])
    assert torch.allclose(observation_term(r, mask, torch.diagonal(R)), 0.5 * (wd * wd).sum())


def test_cost_is_minimised_by_iterative_threedvar() -> None:
    """Our J has zero gradient at ThreeDVar's analysis (same B = xB C, missing obs dropped) and is lower there."""
    g = torch.Generator().manual_seed(2)
    n = 8
    C = _spd(n, g, 4.0)
    m3 = ThreeDVar((torch.zeros(n, dtype=D), C), xB=0.1)
    Hm = torch.randn(5, n, generator=g, dtype=D)
    y = torch.randn(5, generator=g, dtype=D)
    y[2] = float("nan")
    obs = Observation(y=y, operator=lambda x: x @ Hm.mT, error=DiagonalError(torch.full((5,), 0.5, dtype=D)), matrix=Hm)
    xb = torch.randn(n, generator=g, dtype=D)
    xa = m3.analyse(xb, obs).detach().requires_grad_(True)
    J = threedvar_cost(xa, xb, y, torch.isfinite(y), obs.operator, inverse_sqrt(m3.B), obs.error.variance)
    (grad,) = torch.autograd.grad(J, xa)
    assert float(grad.abs().max()) < 1e-8
    assert float(J.detach()) < float(threedvar_cost(xb, xb, y, torch.isfinite(y), obs.operator, inverse_sqrt(m3.B),
                                           obs.error.variance))


def _linear_gaussian(K: int, g: torch.Generator, n: int = 8, p: int = 6):
    """Truth from a linear model x_{k+1} = M x_k + q, backgrounds truth + N(0, B), y = H x + N(0, R)."""
    gm = torch.Generator().manual_seed(10)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gm, dtype=D))
    M = 0.95 * Q
    Hm = torch.randn(p, n, generator=gm, dtype=D) / math.sqrt(n)
    B = _spd(n, gm, 0.5)
    R = torch.rand(p, generator=gm, dtype=D) * 0.3 + 0.2
    x = torch.zeros(n, dtype=D)
    truth = []
    for _ in range(K):
        x = M @ x + torch.randn(n, generator=g, dtype=D)
        truth.append(x)
    truth = torch.stack(truth)
    xb = truth + torch.randn(K, n, generator=g, dtype=D) @ torch.linalg.cholesky(B).mT
    y = truth @ Hm.mT + torch.randn(K, p, generator=g, dtype=D) * R.sqrt()
    return xb, y, Hm, B, R


def _blue(xb: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, Hm, B, R) -> torch.Tensor:
    out = []
    for b, yy, m in zip(xb, y, mask, strict=True):
        Hs = Hm[m]
        K = B @ Hs.mT @ torch.linalg.inv(Hs @ B @ Hs.mT + torch.diag(R[m]))
        out.append(b + K @ (yy[m] - Hs @ b))
    return torch.stack(out)


def _train_oracle(lr: float, full_fraction: float):
    g = torch.Generator().manual_seed(3)
    xb, y, Hm, B, R = _linear_gaussian(3000, g)
    H = lambda x: x @ Hm.mT
    net = AIVarNet(8, 6, hidden=32).double()
    fit_aivar(net, xb[:2500], y[:2500], operator=H, B=B, R=R, valid=(xb[2500:], y[2500:]), epochs=60,
              batch_size=128, lr=lr, patience=15, full_fraction=full_fraction, drop_max=0.5,
              generator=torch.Generator().manual_seed(4))
    gt = torch.Generator().manual_seed(5)
    xt, yt, *_ = _linear_gaussian(400, gt)
    return net, xt, yt, H, Hm, B, R


def test_linear_gaussian_oracle_blue() -> None:
    """Linear model, linear H: the trained AI-Var approaches the BLUE.

    Tolerance: rms(x_AI - x_BLUE) <= 5% of rms(x_BLUE - x_b) with all observations, <= 20% with
    ~25% of them missing at random (one network for every mask; the MLP carries the mask).
    Measured 0.031 and 0.135; untrained (lr=0) both are 1.0.
    """
    net, xt, yt, H, Hm, B, R = _train_oracle(lr=3e-3, full_fraction=0.5)
    ai = AIVar(net)
    for drop, tol in ((0.0, 0.05), (0.25, 0.2)):
        g = torch.Generator().manual_seed(6)
        mask = torch.rand(yt.shape, generator=g, dtype=D) >= drop
        y = torch.where(mask, yt, torch.full_like(yt, float("nan")))
        blue = _blue(xt, yt, mask, Hm, B, R)
        obs = [Observation(y=yy, operator=H, error=DiagonalError(R), matrix=Hm) for yy in y]
        xa = torch.stack([ai.analyse(b, o) for b, o in zip(xt, obs, strict=True)])
        err = float((xa - blue).pow(2).mean().sqrt() / (blue - xt).pow(2).mean().sqrt())
        assert err <= tol, (drop, err)


@pytest.mark.parametrize("krylov", [0, 2])
def test_fast_path_batched_and_nan(krylov: int) -> None:
    """The one-state fast path equals the module; batched priors; NaN observations enter only via the mask."""
    g = torch.Generator().manual_seed(7)
    n, p = 5, 4
    net = _random_net(n, p, g, krylov=krylov)
    ai = AIVar(net)
    Hm = torch.randn(p, n, generator=g, dtype=D)
    y = torch.randn(p, generator=g, dtype=D)
    y[1] = float("nan")
    R = torch.rand(p, generator=g, dtype=D) + 0.5
    # nonlinear H with the Krylov features (tangent and adjoint from autodiff), linear H without
    op = (lambda x: torch.tanh(x) @ Hm.mT) if krylov else (lambda x: x @ Hm.mT)
    obs = Observation(y=y, operator=op, error=DiagonalError(R), matrix=None if krylov else Hm)
    xb = torch.randn(3, n, generator=g, dtype=D)
    xa = ai.analyse(xb, obs)
    assert xa.shape == (3, n) and bool(torch.isfinite(xa).all())
    for b, a in zip(xb, xa, strict=True):
        assert torch.allclose(ai.analyse(b, obs), a, atol=1e-12)
    y2 = y.clone()
    y2[1] = 1e6  # the value under a missing entry must not matter
    m = torch.isfinite(y)
    d = torch.where(m, y2 - op(xb[0]), 0.0)
    adj = krylov_vectors(xb[:1], d[None], m[None], op, R, net.B_sqrt @ net.B_sqrt, krylov) if krylov else None
    assert torch.allclose(net(xb[:1], d[None], m[None], adj)[0], xa[0], atol=1e-12)
    if krylov:
        with pytest.raises(ValueError, match="krylov"):
            net(xb[:1], d[None], m[None])


def test_save_load_and_wrong_inputs(tmp_path) -> None:
    """Round trip through save/load_learned_analysis; wrong n, p or dtype give a ValueError naming them."""
    g = torch.Generator().manual_seed(8)
    n, p = 6, 6
    ai = AIVar(_random_net(n, p, g), info={"xB": 0.02})
    path = save_learned_analysis(ai, tmp_path / "analysis.pt")
    back = load_learned_analysis(path)
    assert isinstance(back, AIVar) and back.info == {"xB": 0.02}
    obs = Observation(y=torch.randn(p, generator=g, dtype=D), operator=lambda x: x,
                      error=DiagonalError(torch.ones(p, dtype=D)))
    xb = torch.randn(n, generator=g, dtype=D)
    assert torch.equal(back.analyse(xb, obs), ai.analyse(xb, obs))
    with pytest.raises(ValueError, match="n=6"):
        ai.analyse(torch.zeros(7, dtype=D), obs)
    with pytest.raises(ValueError, match="p=6"):
        ai.analyse(xb, Observation(y=torch.zeros(3, dtype=D), operator=lambda x: x[..., :3],
                                   error=DiagonalError(torch.ones(3, dtype=D))))
    with pytest.raises(ValueError, match="float64"):
        ai.analyse(xb.float(), obs)
    with pytest.raises(ValueError, match="unknown method.params"):
        load_learned_analysis(path, xB=1.0)
    gf = AIVar(_random_net(n, p, g, krylov=2))  # the Krylov features' net and buffer travel too
    back = load_learned_analysis(save_learned_analysis(gf, tmp_path / "gf.pt"))
    assert back.net.krylov == 2 and torch.equal(back.analyse(xb, obs), gf.analyse(xb, obs))


def test_fit_bad_input() -> None:
    """fit_aivar refuses wrong shapes, NaN backgrounds and a B that is not positive definite."""
    net = AIVarNet(4, 3, hidden=4).double()
    B, R = torch.eye(4, dtype=D), torch.ones(3, dtype=D)
    H = lambda x: x[..., :3]
    with pytest.raises(ValueError, match=r"backgrounds must have shape \(K, 4\)"):
        fit_aivar(net, torch.zeros(5, 3, dtype=D), torch.zeros(5, 3, dtype=D), operator=H, B=B, R=R)
    with pytest.raises(ValueError, match=r"observations must have shape \(5, 3\)"):
        fit_aivar(net, torch.zeros(5, 4, dtype=D), torch.zeros(5, 2, dtype=D), operator=H, B=B, R=R)
    xb = torch.zeros(5, 4, dtype=D)
    xb[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_aivar(net, xb, torch.zeros(5, 3, dtype=D), operator=H, B=B, R=R)
    with pytest.raises(ValueError, match="positive definite"):
        fit_aivar(net, torch.randn(5, 4, dtype=D), torch.zeros(5, 3, dtype=D), operator=H, B=-B, R=R)
    with pytest.raises(ValueError, match="set_statics"):
        net.set_statics(torch.eye(3, dtype=D), torch.zeros(4), torch.ones(4), torch.ones(3))
    with pytest.raises(ValueError, match="g_scale"):  # only a net with the gradient feature takes g_scale
        net.set_statics(torch.eye(4, dtype=D), torch.zeros(4), torch.ones(4), torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="schedule"):
        fit_aivar(net, torch.zeros(5, 4, dtype=D), torch.zeros(5, 3, dtype=D), operator=H, B=B, R=R, schedule="step")


def test_cosine_schedule_and_gradient_feature_scale() -> None:
    """schedule='cosine' anneals the learning rate by a half cosine; the descent-direction feature gets its rms."""
    g = torch.Generator().manual_seed(12)
    n, p = 4, 3
    W = torch.randn(p, n, generator=g, dtype=D)
    H = lambda x: torch.tanh(x) @ W.mT
    B, R = _spd(n, g, 0.5), torch.ones(p, dtype=D)
    xb, y = torch.randn(64, n, generator=g, dtype=D), torch.randn(64, p, generator=g, dtype=D)
    net = AIVarNet(n, p, hidden=4, krylov=1).double()
    res = fit_aivar(net, xb, y, operator=H, B=B, R=R, epochs=4, lr=1e-2, patience=10, schedule="cosine",
                    generator=torch.Generator().manual_seed(0))
    assert res.history["lr"] == pytest.approx([1e-2 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])
    d = y - H(xb)
    gv = adjoint_innovation(xb, d, torch.ones_like(y, dtype=torch.bool), H, R) @ net.B_sqrt
    assert torch.allclose(net.g_scale, gv.pow(2).mean(0).sqrt())


def test_set_normalisation_ignores_missing() -> None:
    """Innovation scales come from the observed entries only (NaN y do not poison them)."""
    net = AIVarNet(3, 3, hidden=4).double()
    y = torch.tensor([[1.0, float("nan"), 2.0], [3.0, float("nan"), 0.0]], dtype=D)
    set_normalisation(net, torch.eye(3, dtype=D), torch.zeros(2, 3, dtype=D), y, lambda x: x)
    assert bool(torch.isfinite(net.d_scale).all()) and float(net.d_scale[1]) == 1.0


TINY = ["train_cycles=700", "seed_cycles=700", "valid_cycles=200", "test_cycles=500", "burn_in=150",
        "clim_steps=3000", "epochs=30", "batch_size=64", "hidden=64", "refine_rounds=0", "patience=6"]


@pytest.mark.parametrize("lr", [3e-3, 0.0])
def test_pipeline_tiny_bar(tmp_path, lr: float) -> None:
    """A tiny run (sakov2008 observations) is within 10% of the iterative 3D-Var; untrained (lr=0) it is not."""
    from hybrida.experiment.learned_aivar import run

    s = run(tmp_path, seed=2, quick=True, overrides=[*TINY, f"lr={lr}", "bar_ratio=1.10"], resume=False)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["rmse"] == pytest.approx(s["rmse"])
    for f in ("analysis.pt", "training.png", "rmse.png"):
        assert (tmp_path / f).is_file()
    assert "3dvar" in s["baselines"]
    assert s["met"] is (lr > 0), (s["rmse"], s["baselines"])
    if lr > 0:  # resume reuses the backgrounds and the fit: same network, same score
        again = run(tmp_path, seed=2, quick=True, overrides=[*TINY, f"lr={lr}", "bar_ratio=1.10"], resume=True)
        assert again["rmse"] == pytest.approx(s["rmse"])
        # a fresh run with the same seed trains the same network (its initial weights are seeded)
        torch.manual_seed(12345)  # whatever the global RNG holds
        fresh = run(tmp_path / "fresh", seed=2, quick=True, overrides=[*TINY, f"lr={lr}", "bar_ratio=1.10"],
                    resume=False)
        assert fresh["rmse"] == s["rmse"]
