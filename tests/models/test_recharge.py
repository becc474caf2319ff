"""Jin's (1997) recharge oscillator: TL/adjoint, the linear oscillator's known period and decay, batching."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from hybrida.models.augmented import AugmentedModel
from hybrida.models.linearize import tangent_linear, tangent_linear_and_adjoint
from hybrida.models.recharge import RechargeOscillator, h_lead_months, linear_frequency
from hybrida.registry import MODELS, resolve

NONLINEAR = {"R": 0.01, "epsilon": 0.1, "seasonal_amp": 0.05, "seasonal_phase": 10.0}


@pytest.mark.parametrize("memory", [0.0, 2.0])
def test_adjoint_dot_product(memory):
    """<M' dx, dy> == <dx, M'^T dy> over 6 months of the seasonal, cubic oscillator."""
    model = RechargeOscillator(**NONLINEAR, forcing_memory=memory)
    gen = torch.Generator().manual_seed(0)
    x, dx, dy = (torch.randn(model.n, generator=gen, dtype=torch.float64) for _ in range(3))
    lin = tangent_linear_and_adjoint(model, x, n_steps=6, t0=3.0)
    lhs, rhs = torch.dot(lin.tl(dx), dy), torch.dot(dx, lin.adj(dy))
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), abs(rhs))


def test_taylor_remainder_is_quadratic():
    model = RechargeOscillator(**NONLINEAR, dt=1.0)
    x = torch.tensor([1.5, -0.7], dtype=torch.float64)
    dx = torch.tensor([0.6, 0.8], dtype=torch.float64)
    m0, tl = model.forecast(x, 3), tangent_linear(model, x, dx, 3)
    errs = [float(torch.linalg.vector_norm(model.forecast(x + e * dx, 3) - m0 - e * tl)) for e in (1e-2, 1e-3, 1e-4)]
    assert all(60 < a / b < 160 for a, b in itertools.pairwise(errs)), errs


def _crossing_times(series: np.ndarray, dt: float) -> np.ndarray:
    """Up-crossings of zero, linearly interpolated."""
    s0, s1 = series[:-1], series[1:]
    k = np.flatnonzero((s0 < 0) & (s1 >= 0))
    return (k + s0[k] / (s0[k] - s1[k])) * dt


def test_linear_oscillator_period_and_decay():
    """Constant coefficients: period 2π/ω and amplitude ratio exp(σ P) per cycle, ω, σ from the eigenvalues."""
    R, gamma, r, alpha = -0.02, 0.12, 0.03, 0.12
    sigma, omega = linear_frequency(R, gamma, r, alpha)
    period = 2 * math.pi / omega  # ~52 months
    model = RechargeOscillator(R=R, gamma=gamma, r=r, alpha=alpha, dt=0.25)
    traj = model.forecast(torch.tensor([1.0, 0.0], dtype=torch.float64), 4 * 300, trajectory=True)
    T = traj[:, 0].numpy()
    ups = _crossing_times(T, model.dt)
    assert np.diff(ups).mean() == pytest.approx(period, rel=1e-4)
    # RK4 matches the exact linear propagator exp(A t) (4th order, dt = 0.25 month) ...
    steps = round(period / model.dt)
    x0, x1 = traj[400], model.forecast(traj[400], steps)
    A = torch.tensor([[R, gamma], [-alpha, -r]], dtype=torch.float64)
    torch.testing.assert_close(x1, torch.linalg.matrix_exp(A * steps * model.dt) @ x0, rtol=1e-6, atol=1e-9)
    # ... and successive maxima of T shrink by exp(σ P), σ = (R - r)/2
    peaks = [T[int(u / model.dt):int((u + period) / model.dt)].max() for u in ups[1:4]]
    assert peaks[1] / peaks[0] == pytest.approx(math.exp(sigma * period), rel=2e-3)


def test_no_oscillation_is_reported():
    with pytest.raises(ValueError, match="no oscillation"):
        linear_frequency(0.5, 0.01, 0.5, 0.01)


def test_seasonal_growth_rate_and_forcing_memory():
    model = RechargeOscillator(R=-0.02, seasonal_amp=0.05, seasonal_phase=10.0, forcing_memory=2.0)
    assert float(model.growth_rate(10.0)) == pytest.approx(0.03)
    assert float(model.growth_rate(4.0)) == pytest.approx(-0.07)
    f = model.tendency(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), 0.0)
    torch.testing.assert_close(f, torch.tensor([1.0, 0.0, -0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="forcing_memory"):
        RechargeOscillator(forcing_memory=-1.0)


def test_per_member_parameters_match_separate_models():
    """AugmentedModel gives each member its own R, alpha: same as running separate oscillators."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    theta = torch.stack((-0.05 + 0.02 * torch.arange(5.0), 0.1 + 0.01 * torch.arange(5.0)), -1).double()
    aug = AugmentedModel(RechargeOscillator(seasonal_amp=0.04), ("R", "alpha"))
    out = aug.forecast(torch.cat((x, theta), -1), 7, t0=2.0)
    for i in range(5):
        single = RechargeOscillator(R=float(theta[i, 0]), alpha=float(theta[i, 1]), seasonal_amp=0.04)
        torch.testing.assert_close(out[i, :2], single.forecast(x[i], 7, t0=2.0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(out[:, 2:], theta)


def test_registered_and_dtype_follows_input():
    assert resolve(MODELS, "recharge", "model") is RechargeOscillator
    x = torch.tensor([[0.5, 0.1]], dtype=torch.float32)
    assert RechargeOscillator(seasonal_amp=0.05).step(x, 1.0).dtype == torch.float32
    with pytest.raises(ValueError, match="last dimension"):
        RechargeOscillator().step(torch.zeros(3))


@pytest.mark.parametrize("r", [0.03, 0.14])
def test_noise_driven_h_leads_t_by_the_linear_phase(r):
    """A long noise-forced run: the lag maximising corr(h(t), T(t+lag)) is the free mode's phase lead."""
    from hybrida.experiment.enso_scores import h_leads_t

    params = {"R": -0.03 if r < 0.1 else 0.01, "gamma": 0.12, "r": r, "alpha": 0.12 if r < 0.1 else 0.19}
    model = RechargeOscillator(**params)
    gen = torch.Generator().manual_seed(0)
    x, rows = torch.zeros(2, dtype=torch.float64), []
    for _ in range(20000):
        x = model.step(x) + 0.1 * torch.randn(2, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 0.0])
        rows.append(x)
    T, h = torch.stack(rows).numpy().T
    lag, corr = h_leads_t(h, T, np.ones(T.size, dtype=bool), max_lag=30)
    expected = h_lead_months(**params)
    assert abs(lag - expected) <= 2.5, (lag, expected)
    assert corr > (0.5 if r < 0.1 else 0.2)  # a strongly damped h follows T less tightly
    # a quarter period when R + r = 0; longer with a strongly damped h
    assert expected == pytest.approx(0.25 * 2 * math.pi / linear_frequency(**params)[1]) if r < 0.1 else expected > 14
