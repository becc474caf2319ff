"""Chunked, fused Lorenz-96 RK4 step: same numbers and derivatives as the textbook RK4."""

from __future__ import annotations

import pytest
import torch

import hybrida.models.lorenz96 as l96
from hybrida.models import Lorenz96
from hybrida.models.integrators import rk4_step

F64 = torch.float64


def _textbook_step(x, F, dt):
    def f(z, t):
        return (torch.roll(z, -1, -1) - torch.roll(z, 2, -1)) * torch.roll(z, 1, -1) - z + F

    return rk4_step(f, x, 0.0, dt)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(l96, "CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(l96, "MIN_CHUNK_POINTS", 7)  # n=40: chunks 7,7,7,7,7,5


@pytest.mark.parametrize("n", [4, 5, 7, 9, 40])
def test_step_matches_textbook_rk4(n):
    g = torch.Generator().manual_seed(n)
    x = 8 + torch.randn(3, n, generator=g, dtype=F64)
    torch.testing.assert_close(
        Lorenz96(n).step(x), _textbook_step(x, 8.0, 0.05), rtol=0, atol=1e-13
    )


@pytest.mark.parametrize(
    "F", [8.0, torch.linspace(6, 10, 40, dtype=F64), torch.tensor([[7.0], [8.0], [9.0]], dtype=F64)]
)
def test_chunked_step_equals_unchunked(small_chunks, F):
    x = Lorenz96(40).initial_state().expand(3, 40) + 0.1 * torch.arange(3, dtype=F64)[:, None]
    chunked = Lorenz96(40, F=F).step(x)
    torch.testing.assert_close(chunked, _textbook_step(x, F, 0.05), rtol=0, atol=1e-13)


def test_chunked_step_derivatives(small_chunks):
    m = Lorenz96(40)
    x = m.initial_state()
    v = torch.randn(40, generator=torch.Generator().manual_seed(1), dtype=F64)
    _, jvp = torch.func.jvp(m.step, (x,), (v,))
    _, jvp_ref = torch.func.jvp(lambda z: _textbook_step(z, 8.0, 0.05), (x,), (v,))
    torch.testing.assert_close(jvp, jvp_ref, rtol=0, atol=1e-12)
    _, pull = torch.func.vjp(m.step, x)
    _, pull_ref = torch.func.vjp(lambda z: _textbook_step(z, 8.0, 0.05), x)
    torch.testing.assert_close(pull(v)[0], pull_ref(v)[0], rtol=0, atol=1e-12)
    F = torch.tensor(8.0, dtype=F64, requires_grad=True)
    (gF,) = torch.autograd.grad(Lorenz96(40, F=F).step(x).sum(), F)
    (gF_ref,) = torch.autograd.grad(_textbook_step(x, F, 0.05).sum(), F)
    torch.testing.assert_close(gF, gF_ref, rtol=1e-13, atol=0)
