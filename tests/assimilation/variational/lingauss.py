"""Linear-Gaussian helpers for the variational/classical method tests."""

from __future__ import annotations

import torch


def random_spd(n: int, seed: int, cond: float = 30.0) -> torch.Tensor:
    """A random symmetric positive-definite matrix with eigenvalues in [1, cond]."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64)
    return (Q * lam) @ Q.T


def blue_information_form(xb, B, H, R, y):
    """xa = (B^-1 + H^T R^-1 H)^-1 (B^-1 xb + H^T R^-1 y): an independent BLUE formula."""
    Bi, Ri = torch.linalg.inv(B), torch.linalg.inv(R)
    A = Bi + H.T @ Ri @ H
    return torch.linalg.solve(A, Bi @ xb + H.T @ Ri @ y), torch.linalg.inv(A)
