"""Regularisation (kernel jitter) of resampled particles with the weighted empirical covariance."""

from __future__ import annotations

import torch
from torch import Tensor

from hybrida.assimilation.particle.resampling import ess

#: weights with 1 - max w below this are degenerate: their covariance is taken unweighted
DEGENERATE = 1e-10


def bandwidth(N: int, n: int) -> float:
    """Gaussian-kernel bandwidth factor h = N^{-1/(n+4)} (Scott's rule; DAPPER's ``auto_bandw``).

    The optimal factor for a Gaussian kernel is (4 / (N (n+2)))^{1/(n+4)}
    (Musso, Oudjane & Le Gland 2001); the tuning factor ``reg`` absorbs the
    constant, and this form keeps hybrida's ``reg`` equal to DAPPER's.
    """
    return float(N) ** (-1.0 / (n + 4))


def weighted_sqrt_cov(X: Tensor, w: Tensor) -> Tensor:
    """Raw square root ``(..., N, n)`` of the weighted covariance: rows sqrt(u w_i) (x_i - μ).

    C = Σ_i u w_i (x_i - μ)(x_i - μ)ᵀ with μ = Σ w_i x_i and the reliability
    correction u = 1 / (1 - 1/ESS); degenerate weights (one particle holds all
    the weight) fall back to uniform weights so that C does not vanish.
    """
    w = w.to(X)
    degenerate = (1.0 - w.max(-1, keepdim=True).values) < DEGENERATE
    w = torch.where(degenerate, torch.full_like(w, 1.0 / w.shape[-1]), w)
    mu = (w.unsqueeze(-1) * X).sum(-2, keepdim=True)
    u = 1.0 / (1.0 - 1.0 / ess(w))
    return (u.unsqueeze(-1) * w).clamp_min(0).sqrt().unsqueeze(-1) * (X - mu)


def kernel_noise(
    C12: Tensor, scale: float, generator: torch.Generator | None, n_draws: int
) -> Tensor:
    """``n_draws`` samples ``(..., n_draws, n)`` of N(0, scale² C12ᵀ C12).

    Coloured by C12 itself when N <= 2n, else by the symmetric square root of
    the n×n covariance (eigh, robust to singular C), whichever is cheaper.
    """
    N, n = C12.shape[-2], C12.shape[-1]
    lead = C12.shape[:-2]
    device = generator.device if generator is not None else C12.device
    if N > 2 * n:
        C = C12.mT @ C12
        lam, V = torch.linalg.eigh(C)
        colour = (V * lam.clamp_min(0).sqrt().unsqueeze(-2)) @ V.mT  # (..., n, n), symmetric
        k = n
    else:
        colour = C12
        k = N
    z = torch.randn((*lead, n_draws, k), generator=generator, dtype=C12.dtype, device=device)
    return scale * (z.to(C12.device) @ colour)
