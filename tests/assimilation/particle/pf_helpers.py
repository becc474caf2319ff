"""Helpers of the particle-filter tests: linear observations, Gaussian particle clouds, Kalman oracle."""

from __future__ import annotations

import torch
from torch import Tensor

from hybrida.assimilation.base import ParticleState
from hybrida.observations.base import Observation
from hybrida.observations.errors import CorrelatedError, DiagonalError


def linear_obs(Hm: Tensor, y: Tensor, R: Tensor, locations: Tensor | None = None) -> Observation:
    """Observation y = Hm x + e; R diagonal if 1-D, correlated if 2-D."""
    error = DiagonalError(R) if R.ndim == 1 else CorrelatedError(R)
    return Observation(
        y=y, operator=lambda x: x @ Hm.mT.to(x), error=error, locations=locations, matrix=Hm
    )


def gaussian_particles(m: Tensor, P: Tensor, N: int, seed: int) -> ParticleState:
    """N particles from N(m, P) with uniform weights."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, m.shape[0], generator=g, dtype=m.dtype)
    X = m + z @ torch.linalg.cholesky(P).T
    return ParticleState(X, torch.full((N,), 1.0 / N, dtype=m.dtype))


def kalman(m: Tensor, P: Tensor, Hm: Tensor, R: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Kalman posterior mean and covariance (R full)."""
    S = Hm @ P @ Hm.T + R
    K = torch.linalg.solve(S, Hm @ P).T
    return m + K @ (y - Hm @ m), P - K @ Hm @ P


def weighted_stats(state: ParticleState) -> tuple[Tensor, Tensor]:
    """Weighted mean and (biased) covariance of a particle state."""
    w, X = state.weights, state.particles
    mean = w @ X
    A = X - mean
    return mean, (w[:, None] * A).T @ A
