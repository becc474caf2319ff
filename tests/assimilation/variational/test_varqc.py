"""Variational QC: robust norms (Huber, Gaussian-plus-flat) inside 3D-Var and 4D-Var."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from hybrida.assimilation.variational.fourdvar import FourDVar
from hybrida.assimilation.variational.robust import GaussianFlat, Huber, varqc_flags
from hybrida.assimilation.variational.threedvar import ThreeDVar
from hybrida.assimilation.window import Window
from hybrida.models.base import Model
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError

F64 = torch.float64
N = 20


def _B(n: int = N, length: float = 2.0) -> Tensor:
    i = torch.arange(n, dtype=F64)
    d = (i[:, None] - i[None, :]).abs()
    d = torch.minimum(d, n - d)
    return torch.exp(-d / length)


def _obs(y: Tensor, std: float = 0.5) -> Observation:
    p = y.shape[-1]
    H = torch.eye(p, dtype=F64)
    return Observation(y, lambda x: x, DiagonalError(torch.full((p,), std**2, dtype=F64)),
                       locations=torch.arange(p, dtype=F64), matrix=H)


def _case(seed: int = 0):
    """Truth, background (B-distributed error) and clean observations (sigma 0.5)."""
    g = torch.Generator().manual_seed(seed)
    B = _B()
    truth = torch.randn(N, generator=g, dtype=F64)
    L = torch.linalg.cholesky(B)
    xb = truth + L @ torch.randn(N, generator=g, dtype=F64)
    y = truth + 0.5 * torch.randn(N, generator=g, dtype=F64)
    return (torch.zeros(N, dtype=F64), B), xb, y


@pytest.mark.parametrize("norm", [Huber(1.5), GaussianFlat(0.1, 10.0)])
def test_norms_transform_is_the_square_root_of_twice_the_penalty_with_finite_gradients(norm):
    r = torch.tensor([-12.0, -3.0, -1.5, -0.3, 0.0, 1e-6, 0.7, 1.5, 2.0, 20.0], dtype=F64, requires_grad=True)
    rho = norm(r)
    assert torch.allclose(0.5 * rho * rho, norm.penalty(r), rtol=1e-10, atol=1e-14)
    (g,) = torch.autograd.grad(rho.sum(), r)
    assert bool(torch.isfinite(g).all()) and bool((g > -1e-12).all())  # monotone (mixture: flat far out), no NaN at 0 or c
    w = norm.weight(r.detach())
    assert bool((w > 0).all()) and bool((w <= 1).all()) and float(w[-1]) < 0.5 and float(w[4]) > 0.5


def test_huber_is_quadratic_inside_and_linear_outside():
    h = Huber(2.0)
    r = torch.tensor([0.5, -2.0, 6.0], dtype=F64)
    assert torch.allclose(h.penalty(r), torch.tensor([0.125, 2.0, 2.0 * 6.0 - 2.0], dtype=F64))
    assert torch.equal(h(torch.tensor([0.5, -1.9], dtype=F64)), torch.tensor([0.5, -1.9], dtype=F64))
    assert torch.allclose(h.weight(r), torch.tensor([1.0, 1.0, 1.0 / 3.0], dtype=F64))


def test_gaussian_flat_weight_is_the_posterior_probability_of_a_good_observation():
    m = GaussianFlat(A=0.05, d=10.0)
    r = torch.tensor([0.0, 3.0, 10.0], dtype=F64)
    good = 0.95 * torch.exp(-0.5 * r * r) / math.sqrt(2 * math.pi)
    flat = 0.05 / 20.0
    assert torch.allclose(m.weight(r), good / (good + flat), rtol=1e-12)


def test_huber_with_a_huge_threshold_equals_plain_3dvar():
    clim, xb, y = _case()
    plain = ThreeDVar(clim, xB=1.0).analyse(xb, _obs(y))
    robust = ThreeDVar(clim, xB=1.0, robust=Huber(1e6))
    xa = robust.analyse(xb, _obs(y))
    assert torch.allclose(xa, plain, rtol=0, atol=1e-10)  # to rounding: the GN loop may take a last tiny step
    assert torch.equal(robust.analysis_flags(), torch.zeros(N, dtype=torch.int8))


def test_default_3dvar_has_no_varqc_and_is_the_blue():
    clim, xb, y = _case(1)
    m = ThreeDVar(clim, xB=1.0)
    xa = m.analyse(xb, _obs(y))
    B, R = clim[1], 0.25 * torch.eye(N, dtype=F64)
    blue = xb + B @ torch.linalg.solve(B + R, y - xb)
    assert torch.allclose(xa, blue, atol=1e-9)
    assert m.analysis_flags() is None and m.varqc_weights is None and "varqc_rejected" not in m.diagnostics()


@pytest.mark.parametrize(("norm", "factor", "drop"), [(Huber(1.5), 0.5, False), (GaussianFlat(0.05, 15.0), 0.02, True)])
def test_one_gross_error_pulls_plain_3dvar_but_not_varqc(norm, factor, drop):
    """Huber bounds the gross error's pull; the mixture rejects it (the analysis without that observation)."""
    clim, xb, y = _case(2)
    bad = y.clone()
    bad[7] += 10 * 0.5  # +10 sigma_o
    ref = y.clone()
    if drop:
        ref[7] = torch.nan
    clean = ThreeDVar(clim, xB=1.0).analyse(xb, _obs(ref))
    plain = ThreeDVar(clim, xB=1.0).analyse(xb, _obs(bad))
    m = ThreeDVar(clim, xB=1.0, robust=norm)
    xa = m.analyse(xb, _obs(bad))
    pull_plain = float((plain - clean).norm())
    pull_robust = float((xa - clean).norm())
    assert pull_plain > 1.0
    assert pull_robust < factor * pull_plain, (pull_robust, pull_plain)
    flags = m.analysis_flags()
    assert int(flags[7]) == 4 and int((flags == 4).sum()) == 1
    assert m.diagnostics()["varqc_rejected"] == 1.0


def test_varqc_flags_map_weights_back_past_missing_values():
    clim, xb, y = _case(3)
    y[[0, 5]] = torch.nan
    y[9] += 8.0
    m = ThreeDVar(clim, xB=1.0, robust=GaussianFlat(0.05, 15.0))
    m.analyse(xb, _obs(y))
    f = m.analysis_flags()
    assert f.tolist() == [1 if i in (0, 5) else 4 if i == 9 else 0 for i in range(N)]
    valid = torch.tensor([True, False, True])
    assert varqc_flags(torch.tensor([0.9, 0.1]), valid).tolist() == [0, 1, 4]


class _Linear(Model):
    """x_{k+1} = A x_k (a slowly rotating/damped map)."""

    def __init__(self, A: Tensor, dt: float = 0.1):
        self.A, self.dt, self.n = A, dt, A.shape[0]

    def step(self, x: Tensor, t: float = 0.0) -> Tensor:
        return x @ self.A.to(x).mT


def _window_case(seed: int = 4):
    g = torch.Generator().manual_seed(seed)
    A = torch.eye(N, dtype=F64) + 0.05 * torch.randn(N, N, generator=g, dtype=F64)
    model = _Linear(A)
    clim, xb, _ = _case(seed)
    truth = xb + torch.randn(N, generator=g, dtype=F64)
    ys, x = [], truth
    for _ in range(3):
        x = model.forecast(x, 2)
        ys.append(x + 0.5 * torch.randn(N, generator=g, dtype=F64))
    return model, clim, xb, ys


def _fourdvar(model, clim, xb, ys, robust=None):
    m = FourDVar(clim, xB=1.0, lag=3, shift=3, tol=1e-12, max_inner=200, robust=robust)
    w = Window(model, xb, 0.0, [_obs(y) for y in ys], [2, 4, 6], 6, 2)
    return m, m.analyse_window(w, None)


def test_fourdvar_huber_with_a_huge_threshold_equals_plain_and_one_gross_error_is_downweighted():
    model, clim, xb, ys = _window_case()
    _, plain = _fourdvar(model, clim, xb, ys)
    _, same = _fourdvar(model, clim, xb, ys, Huber(1e6))
    assert torch.allclose(same, plain, rtol=0, atol=1e-10)
    bad = [y.clone() for y in ys]
    bad[1][4] -= 10 * 0.5
    _, pulled = _fourdvar(model, clim, xb, bad)
    m, robust = _fourdvar(model, clim, xb, bad, GaussianFlat(0.05, 15.0))
    dropped = [y.clone() for y in ys]
    dropped[1][4] = torch.nan
    _, without = _fourdvar(model, clim, xb, dropped)
    assert float((pulled - without).norm()) > 0.5
    assert float((robust - without).norm()) < 0.1 * float((pulled - without).norm())
    w = m.varqc_weights
    assert w.shape == (3 * N,) and float(w[N + 4]) < 0.5 and int((w < 0.5).sum()) == 1
    assert m.diagnostics()["varqc_rejected"] == 1.0
