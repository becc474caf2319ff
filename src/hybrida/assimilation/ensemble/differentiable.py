"""A local ETKF differentiable end to end, whose inflation and localisation radius are trainable.

Every grid point i analyses with all observations, their R⁻¹ tapered by
ρ_ij = GC(d_ij / c), c = 1.82 · radius (Hunt et al. 2007; the taper's support
2c cuts the far ones to exactly zero): C_i = I + Sᵀ ρ_i S, w_i = C_i⁻¹ Sᵀ ρ_i d,
T_i = C_i^{-1/2}; then multiplicative inflation of the posterior anomalies. For
fixed parameters this is :class:`~hybrida.assimilation.ensemble.letkf.LETKF`
(tested to 1e-12); unlike it, the (n, p) taper is dense and built in torch, so
gradients flow into the radius and a learned taper, and C^{-1/2}, C⁻¹ come from
:func:`~hybrida.assimilation.ensemble.spectral.inv_sqrt_and_inv`, whose backward
is finite where C has repeated eigenvalues. Cost O(n p N²): for n up to ~10³,
to train parameters through many cycles (Bach et al. 2025 differentiate through
the filter the same way); the LETKF class remains the fast path.

Parameters carry their constraint (dynamax style): infl = 1 + softplus(θ_infl) > 1,
radius = softplus(θ_r) > 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from hybrida.assimilation.base import AssimilationMethod
from hybrida.assimilation.ensemble.inflation import inflate_multiplicative
from hybrida.assimilation.ensemble.letkf import GC_HALF_WIDTH_FACTOR
from hybrida.assimilation.ensemble.localization import gaspari_cohn, periodic_distance
from hybrida.assimilation.ensemble.spectral import inv_sqrt_and_inv
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def dense_taper(n: int, locations: Tensor, radius: Tensor, taper: Callable[[Tensor], Tensor] = gaspari_cohn) -> Tensor:
    """Taper ρ ``(n, p)`` between grid point i (coordinate i, periodic length n) and each observation.

    ρ_ij = taper(d_ij / c), c = 1.82 · radius, and 0 beyond the support d ≥ 2c.
    """
    grid = torch.arange(n, dtype=locations.dtype, device=locations.device)
    dist = periodic_distance(grid.unsqueeze(-1), locations.unsqueeze(-2), float(n))
    r = dist / (GC_HALF_WIDTH_FACTOR * radius)
    return taper(r) * (r < 2.0).to(r.dtype)


def local_etkf_update(E: Tensor, obs: Observation, rho: Tensor) -> Tensor:
    """Posterior ensemble ``(..., N, n)`` of the LETKF with taper ``rho`` ``(..., n, p)`` (diagonal R)."""
    if not isinstance(obs.error, DiagonalError):
        raise ValueError("differentiable LETKF: R-localisation needs a diagonal R")  # noqa: TRY004
    sig = obs.error.variance.to(E).sqrt()
    return local_etkf_arrays(E, obs.H(E), obs.y.to(E), sig, rho)


def local_etkf_arrays(E: Tensor, HE: Tensor, y: Tensor, sig: Tensor, rho: Tensor, space: str = "auto") -> Tensor:
    """Posterior ensemble ``(..., N, n)`` of the LETKF from arrays: H(E) ``(..., N, p)``, y ``(..., p)``, σ ``(p,)``.

    ``rho`` ``(..., n, p)`` is the R⁻¹ taper (broadcast over the leading dimensions). Ensemble
    space (N × N per grid point) or, equal in exact arithmetic and cheaper when p < N,
    observation space: with S̃_i = S diag(√ρ_i) and M_i = S̃_iᵀ S̃_i (p × p),
    C_i⁻¹ S̃_i = S̃_i (I + M_i)⁻¹ and C_i^{-1/2} = I − S̃_i (Q_i + I)⁻¹ Q_i² S̃_iᵀ, Q_i = (I + M_i)^{-1/2}
    (from (1 + λ)^{-1/2} − 1 = −λ q² / (1 + q), q = (1 + λ)^{-1/2}). ``space``: "ensemble",
    "observation" or "auto" (the smaller).
    """
    N, p = E.shape[-2], HE.shape[-1]
    xm = E.mean(-2, keepdim=True)
    A = E - xm
    ym = HE.mean(-2, keepdim=True)
    S = (HE - ym) / (sig * math.sqrt(N - 1))  # (..., N, p)
    d = (y - ym.squeeze(-2)) / sig  # (..., p)
    At = A.mT.unsqueeze(-2)  # (..., n, 1, N)
    if space == "observation" or (space == "auto" and p < N):
        pos = rho > 0  # √ρ with a zero (not NaN) gradient where ρ = 0: the double-where
        sq = torch.where(pos, torch.where(pos, rho, 1.0).sqrt(), 0.0)  # (..., n, p)
        St = S.unsqueeze(-3) * sq.unsqueeze(-2)  # (..., n, N, p)
        eye_p = torch.eye(p, dtype=E.dtype, device=E.device)
        Q, Minv = inv_sqrt_and_inv(St.mT @ St + eye_p)
        AS = At @ St  # (..., n, 1, p)
        w_obs = (Minv @ (sq * d.unsqueeze(-2)).unsqueeze(-1)).squeeze(-1)  # (..., n, p)
        mean = xm.squeeze(-2) + (AS.squeeze(-2) * w_obs).sum(-1) / math.sqrt(N - 1)
        G = torch.linalg.solve(Q + eye_p, Q @ Q)
        anomalies = (At - AS @ G @ St.mT).squeeze(-2)  # (..., n, N)
        return (mean.unsqueeze(-1) + anomalies).mT
    eye = torch.eye(N, dtype=E.dtype, device=E.device)
    C = torch.einsum("...ap,...ip,...bp->...iab", S, rho, S) + eye  # (..., n, N, N)
    b = torch.einsum("...ap,...ip,...p->...ia", S, rho, d)  # (..., n, N)
    Z, Cinv = inv_sqrt_and_inv(C)
    w = (Cinv @ b.unsqueeze(-1)).squeeze(-1) / math.sqrt(N - 1)  # (..., n, N)
    mean = xm.squeeze(-2) + (At.squeeze(-2) * w).sum(-1)  # (..., n)
    anomalies = (At @ Z).squeeze(-2)  # (..., n, N): row i of Aᵀ times T_i
    return (mean.unsqueeze(-1) + anomalies).mT


class TrainableLETKF(AssimilationMethod, nn.Module):
    """LETKF with trainable inflation (> 1) and localisation radius (> 0), and an optional learned taper.

    ``taper``: a module or function of the normalised distance r = d / c (the slot of a
    learned localisation, Wang et al. 2023); default Gaspari–Cohn. ``train_infl`` /
    ``train_radius`` switch the parameters' ``requires_grad``.
    """

    kind = "ensemble"

    def __init__(
        self,
        N: int,
        loc_rad: float,
        infl: float = 1.02,
        taper: Callable[[Tensor], Tensor] | None = None,
        train_infl: bool = True,
        train_radius: bool = True,
        field_net: nn.Module | None = None,
    ):
        nn.Module.__init__(self)
        if isinstance(N, bool) or not isinstance(N, int) or N < 2:
            raise ValueError(f"TrainableLETKF: N must be an integer >= 2, got {N!r}")
        if not (math.isfinite(loc_rad) and loc_rad > 0):
            raise ValueError(f"TrainableLETKF: loc_rad must be > 0, got {loc_rad}")
        if not (math.isfinite(infl) and infl > 1.0):
            raise ValueError(f"TrainableLETKF: infl must be > 1 (its constraint), got {infl}")
        self.N = N
        self.theta_infl = nn.Parameter(torch.tensor(_inverse_softplus(infl - 1.0), dtype=torch.float64),
                                       requires_grad=train_infl)
        self.theta_radius = nn.Parameter(torch.tensor(_inverse_softplus(loc_rad), dtype=torch.float64),
                                         requires_grad=train_radius)
        self.taper = taper if taper is not None else gaspari_cohn
        #: optional network E_f -> (radius scale, inflation scale) per grid point (learned_parameters.py)
        self.field_net = field_net
        self._diag: dict[str, float] = {}

    @property
    def infl(self) -> Tensor:
        """Posterior inflation factor 1 + softplus(θ)."""
        return 1.0 + nn.functional.softplus(self.theta_infl)

    @property
    def loc_rad(self) -> Tensor:
        """Localisation radius softplus(θ) (grid points; GC half-width 1.82 · radius)."""
        return nn.functional.softplus(self.theta_radius)

    def analyse(
        self, prior: Tensor, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """Posterior ensemble ``(..., N, n)``; differentiable in the prior, θ_infl, θ_radius and the taper."""
        if not isinstance(prior, Tensor) or prior.ndim < 2 or prior.shape[-2] != self.N:
            raise ValueError(f"TrainableLETKF: prior must be an ensemble (..., {self.N}, n)")
        obs = obs.valid()
        self._diag = {"n_obs": float(obs.p), "infl": float(self.infl.detach()), "loc_rad": float(self.loc_rad.detach())}
        if obs.p == 0:
            return prior
        if obs.locations is None:
            raise ValueError("TrainableLETKF: observations have no locations")
        radius, infl = self.loc_rad.to(prior), self.infl.to(prior)
        if self.field_net is not None:  # per grid point: radius_i and inflation_i scaled by the network
            r_scale, i_scale = self.field_net(prior)
            if prior.ndim > 2:
                raise ValueError("TrainableLETKF: a field network takes one ensemble (N, n), not a batch")
            radius = radius * r_scale.unsqueeze(-1)  # (n, 1): row i of the taper
            infl = 1.0 + (infl - 1.0) * i_scale  # (n,): stays > 1
        rho = dense_taper(prior.shape[-1], obs.locations.to(prior), radius, self.taper)
        Ea = local_etkf_update(prior, obs, rho)
        return inflate_multiplicative(Ea, infl)

    def diagnostics(self) -> dict[str, float]:
        """Number of observations and the current inflation and radius."""
        return dict(self._diag)

    def __repr__(self) -> str:
        return f"TrainableLETKF(N={self.N}, loc_rad={float(self.loc_rad.detach()):.4g}, infl={float(self.infl.detach()):.4g})"
