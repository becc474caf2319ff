"""Diagnostics of learned dynamics, checked on the true Lorenz-96 model and exact cases."""

from __future__ import annotations

import math

import pytest
import torch

from hybrida.learn import (
    L96_LEADING_LYAPUNOV,
    SkillCurve,
    adjoint_test,
    forecast_skill,
    free_run,
    leading_lyapunov,
    lyapunov_time,
    power_spectrum,
    spectrum_log_distance,
    taylor_test,
    tl_comparison,
    valid_time,
)
from hybrida.models import Lorenz96
from hybrida.models.base import Model


@pytest.fixture(scope="module")
def l96_run():
    m = Lorenz96(n=40, F=8.0, dt=0.05)
    return m, free_run(m, m.initial_state(), 3000)


def test_leading_lyapunov_of_true_l96(l96_run):
    m, traj = l96_run
    lam = leading_lyapunov(m, traj[::1000][:3].clone(), n_steps=2000, transient=200)
    assert abs(lam - L96_LEADING_LYAPUNOV) < 0.1 * L96_LEADING_LYAPUNOV
    assert lyapunov_time() == pytest.approx(1 / 1.68)


def test_forecast_skill_alignment_and_valid_time(l96_run):
    m, traj = l96_run
    starts = torch.arange(0, 2500, 100)
    perfect = forecast_skill(m, traj, starts, 60)
    assert float(perfect.nrmse.abs().max()) < 1e-10  # same model: rows line up exactly
    wrong = forecast_skill(Lorenz96(n=40, F=8.5, dt=0.05), traj, starts, 200)
    assert wrong.times.shape == (201,) and wrong.nrmse_starts.shape == (25, 201)
    assert float(wrong.nrmse[0]) == 0.0 and float(wrong.nrmse[-1]) > 0.8
    vt = valid_time(wrong, 0.5, L96_LEADING_LYAPUNOV)
    assert 0.0 < vt.time < 10.0 and vt.lyapunov_times == pytest.approx(vt.time * 1.68)
    assert vt.time_starts.shape == (25,)
    # a truth model gives the same curve as its trajectory
    by_model = forecast_skill(Lorenz96(n=40, F=8.5), m, traj[starts], 200, clim_std=wrong.clim_std)
    torch.testing.assert_close(by_model.nrmse, wrong.nrmse)


def test_valid_time_on_known_curve():
    times = torch.arange(6) * 0.1
    e = torch.tensor([0.0, 0.1, 0.3, 0.6, 0.9, 1.0])
    c = SkillCurve(times, e, e.unsqueeze(0), 1.0)
    assert valid_time(c, 0.5).time == pytest.approx(0.3)
    assert valid_time(c, 2.0).time == pytest.approx(0.5)  # never exceeded: last lead
    assert valid_time(c, 0.5).lyapunov_times is None


def test_power_spectrum_peak_parseval_and_distance():
    n = 32
    i = torch.arange(n, dtype=torch.float64)
    traj = torch.stack([torch.cos(2 * math.pi * 3 * i / n + p) for p in (0.0, 1.0, 2.0)])
    s = power_spectrum(traj)
    assert s.shape == (n // 2 + 1,) and int(s.argmax()) == 3
    w = torch.full_like(s, 2.0)
    w[0], w[-1] = 1.0, 1.0
    torch.testing.assert_close((w * s).sum(), (traj**2).sum(-1).mean())  # Parseval
    assert spectrum_log_distance(s + 1e-3, s + 1e-3) == 0.0
    assert spectrum_log_distance(10 * (s + 1e-3), s + 1e-3) == pytest.approx(1.0)


def test_layered_2d_power_spectrum_is_isotropic_by_rings():
    ny, nx = 16, 16
    yy, xx = torch.meshgrid(torch.arange(ny, dtype=torch.float64), torch.arange(nx, dtype=torch.float64), indexing="ij")
    # waves (3, 4) and (5, 0) have the same total wavenumber 5: one ring
    w1 = torch.cos(2 * math.pi * (3 * yy + 4 * xx) / ny)
    w2 = torch.cos(2 * math.pi * 5 * yy / ny)
    states = torch.stack([torch.stack([w1, 2 * w1]).reshape(-1), torch.stack([w2, 2 * w2]).reshape(-1)])
    s = power_spectrum(states, grid=(2, ny, nx))
    assert s.shape == (9,) and int(s.argmax()) == 5
    # Parseval per ring: the time-and-layer mean of sum x^2 (both waves lie inside the kept rings)
    torch.testing.assert_close(s.sum(), (states.reshape(2, 2, -1) ** 2).sum(-1).mean())
    torch.testing.assert_close(s[5], s.sum())
    with pytest.raises(ValueError, match="does not hold"):
        power_spectrum(states, grid=(2, 16, 15))


def test_taylor_and_adjoint_tests_on_true_model(l96_run):
    m, traj = l96_run
    assert adjoint_test(m, traj[-1], n_steps=5) < 1e-12
    assert abs(taylor_test(m, traj[-1], n_steps=5).slope - 2.0) < 0.15


class _WrongTL(Model):
    """L96 whose tangent-linear is scaled by 1/2 (straight-through trick): the Taylor test must fail."""

    def __init__(self) -> None:
        self.inner = Lorenz96(n=40)
        self.n, self.dt = 40, 0.05

    def step(self, x, t=0.0):
        y = self.inner.step(x, t)
        return y.detach() + 0.5 * (y - y.detach())


def test_taylor_test_detects_a_wrong_tangent_linear(l96_run):
    _, traj = l96_run
    assert taylor_test(_WrongTL(), traj[-1]).slope < 1.2


def test_tl_comparison(l96_run):
    m, traj = l96_run
    same = tl_comparison(m, m, traj[-1], n_steps=4, k=3)
    assert torch.equal(same.sv_model, same.sv_truth) and same.sv_model.shape == (3,)
    assert float(same.angle_initial.max()) < 1e-6 and same.rel_frobenius == 0.0
    other = tl_comparison(
        Lorenz96(n=40, F=8.0, dt=0.05), Lorenz96(n=40, F=8.0, dt=0.06), traj[-1], 4
    )
    assert float(other.sv_model[0]) != float(other.sv_truth[0]) and other.rel_frobenius > 1e-3
    with pytest.raises(ValueError, match="single state"):
        tl_comparison(m, m, traj[-2:], 1)
