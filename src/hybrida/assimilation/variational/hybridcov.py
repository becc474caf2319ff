"""Hybrid background covariance in control-variable form: static B_s plus localized ensemble P_e.

The hybrid covariance (Hamill & Snyder 2000; Lorenc 2003; Buehner 2005)

    B = beta B_s + (1 - beta) L ∘ P_e,   P_e = A^T A / (N - 1),

is never formed: the analysis increment is written through the control
variables ``v`` (n) and ``alpha_i`` (one per member, Lorenc 2003's "alpha
control variable")

    dx = sqrt(beta) B_s^{1/2} v + sqrt(1 - beta) / sqrt(N - 1) sum_i (L^{1/2} alpha_i) ∘ a_i,

so that E[dx dx^T] = B when v, alpha_i ~ N(0, I). Without localization each
alpha_i is a scalar and the ensemble part is sqrt(1-beta) A^T alpha / sqrt(N-1).
L is the model-space Gaspari–Cohn (1999) correlation on a periodic 1-D grid
(grid point i at coordinate i, half-width c = 1.82 loc_rad, as the LETKF's
R-localization), a circulant matrix whose symmetric square root comes from
its Fourier spectrum. With anomalies at several times ``a_i(t_k)`` the same
control variables give the 4D-EnVar increments (Liu et al. 2008; Buehner et
al. 2010): no tangent-linear model, the static part constant in the window.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.assimilation.ensemble.localization import gaspari_cohn, periodic_distance

__all__ = ["GC_HALF_WIDTH_FACTOR", "HybridControl", "localization_matrix", "localization_sqrt"]

#: GC half-width per unit of ``loc_rad`` (docs/conventions.md, as the LETKF)
GC_HALF_WIDTH_FACTOR = 1.82


def localization_matrix(n: int, loc_rad: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """Model-space localization L_ij = GC(d(i, j) / c), c = 1.82 loc_rad, periodic distance d on n points."""
    idx = torch.arange(n, dtype=torch.float64)
    dist = periodic_distance(idx[:, None], idx[None, :], float(n))
    return gaspari_cohn(dist / (GC_HALF_WIDTH_FACTOR * loc_rad)).to(dtype)


def localization_sqrt(n: int, loc_rad: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """Symmetric square root L^{1/2} of the circulant localization matrix, by FFT.

    L is circulant and symmetric, so its eigenvalues are the (real) DFT of its
    first row; L^{1/2} is the circulant matrix whose first row is the inverse
    DFT of sqrt(max(λ, 0)). Negative eigenvalues (possible when the taper
    support wraps around a short periodic domain) are clipped to 0, so
    L^{1/2} L^{1/2} is the nearest PSD circulant matrix to L.
    """
    row = localization_matrix(n, loc_rad, torch.float64)[0]
    lam = torch.fft.fft(row).real.clamp_min(0.0)
    root = torch.fft.ifft(lam.sqrt()).real
    shift = (torch.arange(n)[None, :] - torch.arange(n)[:, None]) % n
    S = root[shift]
    return (0.5 * (S + S.mT)).to(dtype)


class HybridControl:
    """The control-variable transform U: c = [v, alpha] -> dx of the hybrid covariance.

    ``static_sqrt`` is B_s^{1/2} (n, n) (already including ``xB``), ``loc_sqrt``
    L^{1/2} (n, n) or None (no localization). The static block is present when
    beta > 0, the ensemble block when beta < 1; :attr:`size` is the length of c.
    """

    def __init__(self, static_sqrt: Tensor, beta: float, N: int, loc_sqrt: Tensor | None):
        self.n = static_sqrt.shape[-1]
        self.N = N
        self.beta = beta
        self.static_sqrt = static_sqrt
        self.loc_sqrt = loc_sqrt
        self.n_static = self.n if beta > 0 else 0
        per_member = self.n if loc_sqrt is not None else 1
        self.n_ens = N * per_member if beta < 1 else 0
        self.size = self.n_static + self.n_ens
        self.w_static = math.sqrt(beta)
        self.w_ens = math.sqrt(1.0 - beta) / math.sqrt(N - 1)

    def increment(self, c: Tensor, A: Tensor) -> Tensor:
        """dx = U(A) c for anomalies ``A`` (N, n), or (T, N, n) at T times (gives (T, n))."""
        dx = torch.zeros(A.shape[:-2] + (self.n,), dtype=c.dtype, device=c.device)
        if self.n_static:
            dx = dx + self.w_static * (self.static_sqrt.to(c) @ c[: self.n_static])
        if self.n_ens:
            alpha = c[self.n_static :]
            if self.loc_sqrt is None:
                dx = dx + self.w_ens * (alpha @ A)
            else:
                La = alpha.reshape(self.N, self.n) @ self.loc_sqrt.to(c)  # rows L^{1/2} alpha_i
                dx = dx + self.w_ens * (La * A).sum(-2)
        return dx

    def matrix(self, A: Tensor, H: Tensor | None = None) -> Tensor:
        """H U(A) as a dense matrix (p, size) for anomalies ``A`` (N, n); U itself when H is None."""
        H = torch.eye(self.n, dtype=A.dtype, device=A.device) if H is None else H.to(A)
        blocks = []
        if self.n_static:
            blocks.append(self.w_static * (H @ self.static_sqrt.to(A)))
        if self.n_ens:
            if self.loc_sqrt is None:
                blocks.append(self.w_ens * (H @ A.mT))
            else:
                HA = H.unsqueeze(-2) * A  # (p, N, n): H diag(a_i)
                blocks.append(self.w_ens * (HA @ self.loc_sqrt.to(A)).reshape(H.shape[0], -1))
        return torch.cat(blocks, -1)

    def covariance(self, A: Tensor, xB_cov: Tensor | None = None) -> Tensor:
        """The dense hybrid B = beta B_s + (1 - beta) L ∘ P_e (n, n) this transform represents.

        B_s is recovered as static_sqrt², or taken from ``xB_cov`` when given.
        """
        B = torch.zeros(self.n, self.n, dtype=A.dtype, device=A.device)
        if self.n_static:
            Bs = self.static_sqrt.to(A) @ self.static_sqrt.to(A) if xB_cov is None else xB_cov.to(A)
            B = B + self.beta * Bs
        if self.n_ens:
            Pe = A.mT @ A / (self.N - 1)
            if self.loc_sqrt is not None:
                Ls = self.loc_sqrt.to(A)
                Pe = Pe * (Ls @ Ls)
            B = B + (1.0 - self.beta) * Pe
        return B
