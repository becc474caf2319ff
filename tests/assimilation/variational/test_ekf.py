"""EKF: exact Kalman filter on a linear model, tangent-linear covariance forecast, inflation."""

from __future__ import annotations

import pytest
import torch
from lingauss import random_spd

from hybrida.assimilation.base import GaussianState
from hybrida.assimilation.variational import EKF
from hybrida.cycle import run_cycle
from hybrida.models.base import Model
from hybrida.observations import RadianceObs, SubsetObs
from hybrida.registry import METHODS, resolve


class LinearModel(Model):
    """x_{k+1} = A x_k."""

    def __init__(self, A: torch.Tensor, dt: float = 0.1):
        self.A, self.dt, self.n = A, dt, A.shape[0]

    def step(self, x, t=0.0):
        return x @ self.A.T


class SineModel(Model):
    """x_{k+1} = x_k + dt sin(x_k): Jacobian diag(1 + dt cos x)."""

    n, dt = 5, 0.2

    def step(self, x, t=0.0):
        return x + self.dt * torch.sin(x)


def _A(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.eye(n, dtype=torch.float64) + 0.15 * torch.randn(n, n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("infl,q", [(1.0, None), (3.0, 0.2)])
def test_equals_exact_kalman_filter(infl, q):
    n, steps, dt = 5, 3, 0.1
    model = LinearModel(_A(n), dt)
    sys = SubsetObs(n, [0, 2, 3], std=[0.5, 1.0, 0.7], correlation_length=1.0)
    g = torch.Generator().manual_seed(1)
    x_true = torch.randn(n, generator=g, dtype=torch.float64)
    obs = []
    for k in range(1, 6):
        x_true = model.forecast(x_true, steps)
        obs.append(sys.observe(x_true, k, g))
    obs[2].y[1] = float("nan")
    method = EKF(infl=infl, Q=q)
    state = GaussianState(torch.zeros(n, dtype=torch.float64), random_spd(n, 5, cond=4.0))
    mu, P = state.mean.clone(), state.cov.clone()
    A = model.A
    Qm = torch.zeros(n, n, dtype=torch.float64) if q is None else q * torch.eye(n, dtype=torch.float64)
    for o in obs:
        state = method.analyse(method.forecast(model, state, steps), o)
        for _ in range(steps):  # textbook KF, written independently
            mu, P = A @ mu, infl**dt * A @ P @ A.T + dt * Qm
        keep = torch.isfinite(o.y)
        H, R, y = o.matrix[keep], o.error.cov[keep][:, keep], o.y[keep]
        K = P @ H.T @ torch.linalg.inv(H @ P @ H.T + R)
        mu, P = mu + K @ (y - H @ mu), (torch.eye(n, dtype=torch.float64) - K @ H) @ P
        assert torch.allclose(state.mean, mu, atol=1e-10)
        assert torch.allclose(state.cov, P, atol=1e-10)
    assert torch.allclose(state.cov, state.cov.T)
    assert 0 < method.diagnostics()["trHK"] < 1


def test_covariance_forecast_uses_tangent_linear():
    model = SineModel()
    x = torch.linspace(-2.0, 2.0, 5, dtype=torch.float64)
    P0 = random_spd(5, 2)
    out = EKF(infl=1.0).forecast(model, GaussianState(x, P0), 2)
    F1 = torch.diag(1 + model.dt * torch.cos(x))
    x1 = model.step(x)
    F2 = torch.diag(1 + model.dt * torch.cos(x1))
    F = F2 @ F1
    assert torch.allclose(out.mean, model.forecast(x, 2), atol=1e-14)
    assert torch.allclose(out.cov, F @ P0 @ F.T, atol=1e-12)


def test_inflation_is_per_unit_time():
    model = LinearModel(torch.eye(3, dtype=torch.float64), dt=0.25)
    P0 = torch.eye(3, dtype=torch.float64)
    out = EKF(infl=16.0).forecast(model, GaussianState(torch.zeros(3, dtype=torch.float64), P0), 4)
    # 4 steps of dt=0.25 = one time unit: P grows by exactly infl
    assert torch.allclose(out.cov, 16.0 * P0)


def test_nonlinear_observation_update_and_cycle():
    model = SineModel()
    sys = RadianceObs(5, 5, 0.8, "tanh", scale=2.0, std=0.1)
    g = torch.Generator().manual_seed(0)
    truth = [torch.linspace(-1.0, 1.5, 5, dtype=torch.float64)]
    for _ in range(6):
        truth.append(model.forecast(truth[-1], 2))
    obs = [sys.observe(truth[k], k, g) for k in range(1, 7)]
    method = EKF(infl=1.1, Q=0.01)
    state = method.initial_state(truth[0] + 0.5, 1.0)
    recs = [r for r, _ in run_cycle(model, method, state, torch.stack(truth), obs, 2)]
    assert len(recs) == 6
    assert recs[-1].rmse_a < 0.2 and recs[-1].rmse_a < recs[0].rmse_f


def test_no_valid_obs_returns_prior():
    prior = GaussianState(torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64))
    o = SubsetObs(4, [1]).network(1)
    assert EKF().analyse(prior, o) is prior


@pytest.mark.parametrize(
    "kwargs", [{"infl": 0.0}, {"infl": -2.0}, {"Q": -1.0}, {"Q": torch.ones(2, 3)}, {"Q": -torch.eye(3)}]
)
def test_validation(kwargs):
    with pytest.raises(ValueError):
        EKF(**kwargs)


def test_state_type_is_checked():
    with pytest.raises(TypeError, match="GaussianState"):
        EKF().analyse(torch.zeros(3), SubsetObs(3, [0]).network(1))
    assert resolve(METHODS, "ekf", "method") is EKF and EKF.kind == "gaussian"
