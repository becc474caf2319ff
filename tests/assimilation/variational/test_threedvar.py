"""3D-Var: exact BLUE for linear H, convergence for a nonlinear radiance operator, masking."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from lingauss import blue_information_form

from hybrida.assimilation.variational import ThreeDVar
from hybrida.observations import RadianceObs, SubsetObs
from hybrida.registry import METHODS, resolve


def _obs(n: int, seed: int = 0, corr: float = 1.5):
    sys = SubsetObs(n, [0, 2, 3, 6], std=[0.5, 1.0, 0.8, 1.2], correlation_length=corr)
    return sys.observe(torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), 1,
                       torch.Generator().manual_seed(seed + 1))


@pytest.mark.parametrize("corr", [0.0, 1.5])
def test_equals_blue_linear_gaussian(clim8, corr):
    mean, C = clim8
    xB = 0.7
    xb = mean + 0.3
    obs = _obs(8, corr=corr)
    method = ThreeDVar((mean, C), xB=xB)
    xa = method.analyse(xb, obs)
    ref, _ = blue_information_form(xb, xB * C, obs.matrix, obs.error.cov, obs.y)
    assert torch.allclose(xa, ref, atol=1e-8, rtol=0)
    d = method.diagnostics()
    assert d["n_outer"] == 1 and d["grad_norm"] < 1e-8 * d["cost_initial"] ** 0.5 + 1e-10
    assert d["cost_final"] < d["cost_initial"]
    costs = method.inner_cost_history
    assert all(b <= a + 1e-12 for a, b in pairwise(costs))
    assert costs[-1] == pytest.approx(d["cost_final"], rel=1e-8)


def test_rank_deficient_background(clim8):
    mean, C = clim8
    U = torch.linalg.eigh(C).eigenvectors[:, -3:]
    C_low = U @ torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)) @ U.T  # PSD, rank 3
    obs = _obs(8)
    xa = ThreeDVar((mean, C_low)).analyse(mean, obs)
    B, H, R = C_low, obs.matrix, obs.error.cov
    K = B @ H.T @ torch.linalg.inv(H @ B @ H.T + R)
    assert torch.allclose(xa, mean + K @ (obs.y - H @ mean), atol=1e-8)


@pytest.mark.parametrize("nl", ["tanh", "square"])
def test_nonlinear_radiance_converges_to_stationary_point(clim8, nl):
    mean, C = clim8
    sys = RadianceObs(8, 4, 1.0, nl, scale=2.0, std=0.3)
    truth = mean + torch.randn(8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    obs = sys.observe(truth, 1, torch.Generator().manual_seed(5))
    method = ThreeDVar((mean, C), xB=1.0, tol=1e-9, max_outer=60)
    xa = method.analyse(mean, obs)
    d = method.diagnostics()
    costs = method.cost_history
    assert all(b <= a for a, b in pairwise(costs))
    assert d["cost_final"] < 0.5 * d["cost_initial"]
    assert d["grad_norm"] < 1e-6 and d["n_outer"] > 1
    # first-order optimality in state space: x - xb = B H'(x)^T R^-1 (y - H(x))
    Hx = torch.func.jacfwd(obs.H)(xa)
    rhs = C @ Hx.T @ torch.linalg.solve(obs.error.cov, obs.y - obs.H(xa))
    assert torch.allclose(xa - mean, rhs, atol=1e-6)


def test_nan_observations_are_masked(clim8):
    mean, C = clim8
    obs = _obs(8)
    method = ThreeDVar((mean, C))
    obs_nan = _obs(8)
    obs_nan.y[1] = float("nan")
    sub = SubsetObs(8, [0, 3, 6], std=[0.5, 0.8, 1.2], correlation_length=1.5)
    ref_obs = sub.network(1)
    ref_obs.y = obs.y[[0, 2, 3]]
    assert torch.allclose(method.analyse(mean, obs_nan), method.analyse(mean, ref_obs), atol=1e-10)
    obs_nan.y[:] = float("nan")
    assert torch.equal(method.analyse(mean + 1, obs_nan), mean + 1)


def test_float32_follows_input(clim8):
    mean, C = clim8
    obs = _obs(8, corr=0.0)
    xa = ThreeDVar((mean, C), tol=1e-5).analyse(mean.float(), obs)
    assert xa.dtype == torch.float32
    ref = ThreeDVar((mean, C), tol=1e-11).analyse(mean, obs)  # the float64 answer
    # measured 4.6e-7 of the max (the increment is as large as the state)
    torch.testing.assert_close(xa.double(), ref, rtol=0, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize(
    "kwargs",
    [{"xB": 0.0}, {"xB": -1.0}, {"xB": float("nan")}, {"max_iter": 0}],
)
def test_validation(clim8, kwargs):
    with pytest.raises(ValueError):
        ThreeDVar(clim8, **kwargs)


def test_bad_prior_shape(clim8):
    with pytest.raises(ValueError, match="shape"):
        ThreeDVar(clim8).analyse(torch.zeros(3, 8, dtype=torch.float64), _obs(8))


def test_registry():
    assert resolve(METHODS, "3dvar", "method") is ThreeDVar
    assert ThreeDVar.needs_climatology and ThreeDVar.kind == "deterministic"
