"""Lorenz-96 specifics: the tendency, forcing as a tensor, climate, Lyapunov exponent."""

from __future__ import annotations

import pytest
import torch

from hybrida.models import Lorenz96
from hybrida.models.linearize import lyapunov_exponents


def test_tendency_matches_index_formula():
    n, F = 7, 8.0
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    expected = torch.stack(
        [(x[(i + 1) % n] - x[(i - 2) % n]) * x[(i - 1) % n] - x[i] + F for i in range(n)]
    )
    torch.testing.assert_close(Lorenz96(n=n, F=F).tendency(x), expected, rtol=1e-14, atol=1e-14)


def test_uniform_state_is_fixed_point():
    m = Lorenz96(n=12, F=5.0)
    x = torch.full((12,), 5.0, dtype=torch.float64)
    torch.testing.assert_close(m.step(x), x, rtol=0, atol=1e-14)


def test_tensor_forcing_gradient_and_per_member_forcing():
    x = Lorenz96().initial_state()
    F = torch.tensor(8.0, dtype=torch.float64, requires_grad=True)
    y = Lorenz96(F=F).forecast(x, 2).sum()
    (g,) = torch.autograd.grad(y, F)
    h = 1e-6
    fd = (Lorenz96(F=8.0 + h).forecast(x, 2).sum() - Lorenz96(F=8.0 - h).forecast(x, 2).sum()) / (
        2 * h
    )
    torch.testing.assert_close(g, fd, rtol=1e-7, atol=0)
    # one forcing per member, shape (N, 1)
    Fs = torch.tensor([[7.0], [8.0], [9.0]], dtype=torch.float64)
    out = Lorenz96(F=Fs).step(x.expand(3, 40))
    for i, f in enumerate((7.0, 8.0, 9.0)):
        torch.testing.assert_close(out[i], Lorenz96(F=f).step(x), rtol=1e-14, atol=1e-14)
    # float32 state with a float64 tensor F stays float32, and agrees with the float64 step to
    # float32 round-off (measured 4e-8 of the largest value)
    y32, y64 = Lorenz96(F=F).step(x.float()).detach(), Lorenz96(F=F).step(x).detach()
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, rtol=0, atol=1e-6 * float(y64.abs().max()))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 3},
        {"n": 4.5},
        {"dt": -0.1},
        {"F": float("nan")},
        {"F": torch.ones(5, dtype=torch.float64)},
        {"F": torch.tensor(8)},
    ],
)
def test_invalid_parameters(kwargs):
    with pytest.raises(ValueError):
        Lorenz96(**kwargs)


def test_climate_bounded():
    """Long-run mean ≈ 2.3 and std ≈ 3.6 at F=8 (e.g. Lorenz & Emanuel 1998)."""
    m = Lorenz96()
    traj = m.forecast(m.initial_state(), 2000, trajectory=True)
    assert torch.isfinite(traj).all() and traj.abs().max() < 25
    assert 2.0 < traj.mean() < 2.7 and 3.3 < traj.std() < 3.9


def test_leading_lyapunov_exponent():
    """λ1 ≈ 1.68 per time unit for n=40, F=8 (Lorenz & Emanuel 1998 report ~1.7 / doubling 0.42)."""
    m = Lorenz96()
    x0 = m.initial_state()
    starts = torch.stack([x0, m.forecast(x0, 500)])
    lam = lyapunov_exponents(m, starts, n_steps=1000, k=1, transient=100)
    assert lam.shape == (2, 1)
    assert 1.5 < lam.mean() < 1.9, lam


def test_lyapunov_helper_validates_and_orders():
    m = Lorenz96(n=8)
    x = m.initial_state()
    lam = lyapunov_exponents(m, x, n_steps=200, k=3, transient=40)
    assert lam.shape == (3,) and lam[0] >= lam[1] >= lam[2]
    with pytest.raises(ValueError):
        lyapunov_exponents(m, x, n_steps=10, k=9)


def test_large_ring_initial_state_is_chaotic_everywhere():
    """F·1 is a fixed point: a large ring must not keep resting stretches after the spin-up."""
    x = Lorenz96(n=5000).initial_state()
    resting = ((x - 8.0).abs() < 1e-2).reshape(50, 100).all(-1)
    assert not bool(resting.any())
    assert 3.0 < float(x.std()) < 4.5
