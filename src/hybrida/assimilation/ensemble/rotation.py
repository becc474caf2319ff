"""Random mean-preserving rotations of ensemble anomalies (Sakov & Oke 2008b)."""

from __future__ import annotations

import torch
from torch import Tensor


def mean_preserving_rotation(
    N: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """A Haar-random orthogonal ``(N, N)`` matrix Ω with Ω 1 = 1.

    Ω = U diag(1, Q) Uᵀ, where U is an orthonormal basis whose first column
    is 1/√N and Q is Haar-distributed on O(N-1) (QR of a Gaussian matrix with
    the signs of R's diagonal fixed, Mezzadri 2007). Mixing members with Ω
    keeps the ensemble mean and sample covariance and randomises the
    anomalies, which avoids the outlier members of square-root filters
    (Sakov & Oke 2008b, "Implications of the form of the ensemble transformation").
    """
    basis = torch.randn(N, N, generator=generator, dtype=dtype)
    basis[:, 0] = 1.0
    U, _ = torch.linalg.qr(basis)
    Q, R = torch.linalg.qr(torch.randn(N - 1, N - 1, generator=generator, dtype=dtype))
    Q = Q * torch.sign(torch.diagonal(R))
    block = torch.eye(N, dtype=dtype)
    block[1:, 1:] = Q
    return (U @ block @ U.mT).to(device)


def rotate_anomalies(E: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The ensemble ``(..., N, n)`` with its anomalies mixed by one random Ω (same for every batch)."""
    N = E.shape[-2]
    omega = mean_preserving_rotation(N, generator, E.dtype, E.device)
    mean = E.mean(-2, keepdim=True)
    return mean + omega.mT @ (E - mean)
