"""Minimisers: conjugate gradient and Gauss–Newton on known problems."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from lingauss import random_spd

from hybrida.assimilation.variational.minimize import conjugate_gradient, gauss_newton


def test_cg_solves_spd_system_in_at_most_n_iterations():
    A = random_spd(12, 0, cond=100.0)
    b = torch.randn(12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = conjugate_gradient(lambda v: A @ v, b, max_iter=50, tol=1e-12)
    assert res.converged and res.n_iter <= 18  # n = 12 plus a few for rounding
    assert torch.allclose(res.x, torch.linalg.solve(A, b), atol=1e-9)
    e = res.energies
    assert all(b2 <= a + 1e-12 for a, b2 in pairwise(e))
    assert e[-1] == pytest.approx(-0.5 * float(b @ torch.linalg.solve(A, b)), rel=1e-10)


def test_cg_rejects_indefinite_operator():
    A = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="positive definite"):
        conjugate_gradient(lambda v: A @ v, torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_gauss_newton_linear_residual_is_exact_after_one_outer_loop():
    g = torch.Generator().manual_seed(2)
    J = torch.randn(5, 7, generator=g, dtype=torch.float64)
    c = torch.randn(5, generator=g, dtype=torch.float64)
    res = gauss_newton(lambda v: J @ v - c, torch.zeros(7, dtype=torch.float64), max_outer=5)
    v_star = torch.linalg.solve(torch.eye(7, dtype=torch.float64) + J.T @ J, J.T @ c)
    assert torch.allclose(res.v, v_star, atol=1e-10)
    assert res.converged and res.n_outer <= 2


def test_gauss_newton_nonlinear_decreases_and_converges():
    def residual(v):
        return torch.stack([v[0] ** 2 - 3.0, torch.sin(v[1]) + v[0] - 1.0, 2.0 * v[1] - 0.5])

    res = gauss_newton(residual, torch.zeros(2, dtype=torch.float64), max_outer=100, tol=1e-10)
    assert all(b <= a for a, b in pairwise(res.costs))
    assert res.converged and res.grad_norm < 1e-8
    grad = torch.func.grad(lambda v: 0.5 * (v * v).sum() + 0.5 * (residual(v) ** 2).sum())(res.v)
    assert grad.norm() < 1e-8
