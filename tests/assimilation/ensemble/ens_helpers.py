"""Shared helpers of the ensemble-method tests: observation builders and an exact Kalman filter."""

from __future__ import annotations

import torch
from torch import Tensor

from hybrida.observations.base import Observation
from hybrida.observations.errors import CorrelatedError, DiagonalError


def linear_obs(Hm: Tensor, y: Tensor, R: Tensor, locations: Tensor | None = None) -> Observation:
    """Observation with matrix ``Hm`` (p, n); R diagonal if 1-D, correlated if 2-D."""
    error = DiagonalError(R) if R.ndim == 1 else CorrelatedError(R)
    return Observation(
        y=y, operator=lambda x: x @ Hm.mT.to(x), error=error, locations=locations, matrix=Hm
    )


def subset_obs(
    idx: Tensor, y: Tensor, var: Tensor | float, n: int, dense: bool = True
) -> Observation:
    """Observe the grid points ``idx`` with diagonal R; locations = idx."""
    var = torch.as_tensor(var, dtype=torch.float64) * torch.ones(len(idx), dtype=torch.float64)
    Hm = None
    if dense:
        Hm = torch.zeros(len(idx), n, dtype=torch.float64)
        Hm[torch.arange(len(idx)), idx] = 1.0
    return Observation(
        y=y,
        operator=lambda x: x[..., idx.to(x.device)],
        error=DiagonalError(var),
        locations=idx.double(),
        matrix=Hm,
    )


def kalman_analysis(
    xm: Tensor, P: Tensor, Hm: Tensor, R: Tensor, y: Tensor
) -> tuple[Tensor, Tensor]:
    """Exact Kalman analysis mean and covariance (Joseph-free textbook form)."""
    S = Hm @ P @ Hm.T + R
    K = torch.linalg.solve(S, Hm @ P).T
    mean = xm + K @ (y - Hm @ xm)
    cov = P - K @ Hm @ P
    return mean, 0.5 * (cov + cov.T)


def sample_stats(E: Tensor) -> tuple[Tensor, Tensor]:
    """Sample mean and unbiased covariance of an ensemble (N, n)."""
    xm = E.mean(0)
    A = E - xm
    return xm, A.T @ A / (E.shape[0] - 1)


def random_spd(p: int, g: torch.Generator, scale: float = 1.0) -> Tensor:
    """A well-conditioned random SPD matrix."""
    M = torch.randn(p, p, generator=g, dtype=torch.float64)
    return scale * (M @ M.T / p + 0.5 * torch.eye(p, dtype=torch.float64))
