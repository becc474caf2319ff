"""Kuramoto–Sivashinsky specifics: signs of the PDE, ETDRK4 order, conservation, coefficients."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from hybrida.models import KuramotoSivashinsky, tangent_linear, tangent_linear_and_adjoint
from hybrida.models.ks import etdrk4_coefficients


def test_defaults_follow_bocquet_2019():
    m = KuramotoSivashinsky()
    assert m.n == 128 and m.dt == 0.5 and m.length == pytest.approx(32 * math.pi)


def test_tendency_on_a_sine_matches_the_pde():
    """u = A sin(qx): u_t = -A^2 q sin cos + A q^2 sin - A q^4 sin."""
    m = KuramotoSivashinsky(n=64, length=32 * math.pi)
    A, q = 0.7, 2 * math.pi / m.length * 5
    s, c = torch.sin(q * m.grid), torch.cos(q * m.grid)
    expected = -(A**2) * q * s * c + A * q**2 * s - A * q**4 * s
    torch.testing.assert_close(m.tendency(A * s), expected, rtol=1e-12, atol=1e-12)


def test_etdrk4_converges_at_fourth_order():
    """From the smooth Kassam–Trefethen start, errors at dt = 1, 1/2, 1/4 fall by ~16 each.

    (On the attractor the observed order over dt = 0.5 .. 0.06 is nearer 3, the
    stiff order reduction of Cox–Matthews ETDRK4 noted by Hochbruck & Ostermann 2005.)
    """
    m = KuramotoSivashinsky()
    theta = 2 * math.pi * m.grid / m.length
    u0 = torch.cos(theta) * (1 + torch.sin(theta))
    T = 4.0
    ref = KuramotoSivashinsky(dt=T / 512).forecast(u0, 512)
    errs = [(KuramotoSivashinsky(dt=T / s).forecast(u0, s) - ref).norm().item() for s in (4, 8, 16)]
    ratios = [a / b for a, b in pairwise(errs)]
    assert all(12 < r < 19 for r in ratios), (errs, ratios)


def test_mean_conserved_and_energy_bounded():
    m = KuramotoSivashinsky()
    u = m.initial_state() + 0.3
    traj = m.forecast(u, 400, trajectory=True)
    torch.testing.assert_close(
        traj.mean(-1), torch.full((401,), u.mean().item(), dtype=torch.float64), rtol=0, atol=1e-12
    )
    energy = (traj - 0.3).pow(2).mean(-1)
    assert torch.isfinite(energy).all() and energy.max() < 10 and energy[200:].min() > 0.3


def test_contour_coefficients_match_closed_form():
    """Away from z=0 the contour means equal the closed-form phi-function combinations."""
    z = torch.tensor([-1.5, -3.0, -20.0, -120.0], dtype=torch.float64)
    c = etdrk4_coefficients(z)
    ez = torch.exp(z)
    torch.testing.assert_close(c["Q"], (torch.exp(z / 2) - 1) / z, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        c["f1"], (-4 - z + ez * (4 - 3 * z + z**2)) / z**3, rtol=1e-12, atol=0
    )
    torch.testing.assert_close(c["f2"], (2 + z + ez * (z - 2)) / z**3, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        c["f3"], (-4 - 3 * z - z**2 + ez * (4 - z)) / z**3, rtol=1e-12, atol=0
    )
    # limits at z -> 0: Q -> 1/2, f1 -> 1/6, f2 -> 1/6, f3 -> 1/6
    c0 = etdrk4_coefficients(torch.zeros(1, dtype=torch.float64))
    for name, lim in (("Q", 0.5), ("f1", 1 / 6), ("f2", 1 / 6), ("f3", 1 / 6)):
        torch.testing.assert_close(
            c0[name], torch.tensor([lim], dtype=torch.float64), rtol=1e-13, atol=0
        )


def test_dealias_option_changes_little():
    u = KuramotoSivashinsky().initial_state()
    a = KuramotoSivashinsky().forecast(u, 4)
    b = KuramotoSivashinsky(dealias=True).forecast(u, 4)
    diff = (a - b).abs().max().item()
    assert 0 < diff < 0.05  # a different discretisation, close to the default one


@pytest.mark.parametrize(("nyquist", "factor"), [("damped", None), ("neutral", 1.0)])
def test_nyquist_mode_evolves_linearly(nyquist, factor):
    """The Nyquist coefficient has no nonlinear forcing: it is multiplied by e^{dt L_N} each step.

    ``"damped"``: L_N = k_N^2 - k_N^4 (k_N = pi n / length); ``"neutral"``: L_N = 0, the
    coefficient is constant (Kassam & Trefethen 2005, DAPPER). The other modes feel it.
    """
    m = KuramotoSivashinsky(nyquist=nyquist)
    alternating = (-1.0) ** torch.arange(m.n, dtype=torch.float64)
    u = m.initial_state() + 0.05 * alternating
    v0 = torch.fft.rfft(u)[-1].real
    steps = 3
    v = torch.fft.rfft(m.forecast(u, steps))[-1].real
    if factor is None:
        k = math.pi * m.n / m.length
        factor = math.exp(steps * m.dt * (k**2 - k**4))
    torch.testing.assert_close(v, v0 * factor, rtol=1e-12, atol=1e-9)
    smooth = torch.fft.rfft(m.forecast(m.initial_state(), steps))[:-1]
    assert (torch.fft.rfft(m.forecast(u, steps))[:-1] - smooth).abs().max() > 1e-5


@pytest.mark.parametrize("nyquist", ["neutral", "damped"])
def test_nyquist_variants_adjoint_taylor_and_batching(nyquist):
    """The model contract for both Nyquist treatments, from states with Nyquist content."""
    m = KuramotoSivashinsky(nyquist=nyquist)
    gen = torch.Generator().manual_seed(5)
    x = m.initial_state() + 0.1 * torch.randn(m.n, generator=gen, dtype=torch.float64)
    dx, dy = torch.randn(2, m.n, generator=gen, dtype=torch.float64)
    lin = tangent_linear_and_adjoint(m, x, n_steps=3)
    lhs, rhs = torch.dot(lin.tl(dx), dy), torch.dot(dx, lin.adj(dy))
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), abs(rhs))
    m0, tl = m.step(x), tangent_linear(m, x, dx)
    errs = [(m.step(x + e * dx) - m0 - e * tl).norm().item() for e in (1e-2, 1e-3, 1e-4)]
    assert all(60 < a / b < 160 for a, b in pairwise(errs)), errs
    batch = x + 0.1 * torch.randn(2, 3, m.n, generator=gen, dtype=torch.float64)
    out = m.step(batch)
    torch.testing.assert_close(out[1, 2], m.step(batch[1, 2]), rtol=1e-13, atol=1e-13)
    out32 = m.step(batch.float())
    assert out32.dtype == torch.float32  # float64 answer to float32 round-off, measured 3e-7 of max
    torch.testing.assert_close(out32.double(), out, rtol=0, atol=1e-5 * float(out.abs().max()))


@pytest.mark.parametrize(
    "kwargs",
    [{"n": 7}, {"n": 2}, {"dt": 0.0}, {"length": -1.0}, {"n_contour": 2}, {"nyquist": "zero"}],
)
def test_invalid_parameters(kwargs):
    with pytest.raises(ValueError):
        KuramotoSivashinsky(**kwargs)
