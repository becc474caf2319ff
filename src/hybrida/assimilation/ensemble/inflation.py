"""Inflation and relaxation of ensemble anomalies, and an adaptive inflation estimate.

Conventions (REFERENCES.md): ensembles are ``(..., N, n)`` with members on
dimension -2; a multiplicative factor multiplies anomalies (a standard-deviation
factor), and fixed inflation is applied to the posterior after the analysis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def _anomalies(E: Tensor) -> tuple[Tensor, Tensor]:
    xm = E.mean(-2, keepdim=True)
    return xm, E - xm


def inflate_multiplicative(E: Tensor, infl: float | Tensor) -> Tensor:
    """Multiplicative inflation x̄ + infl (x_k - x̄) of every member.

    ``infl`` is a standard-deviation factor (scalar or broadcastable over n);
    the ensemble covariance is multiplied by infl² (Anderson & Anderson 1999).
    """
    if isinstance(infl, (int, float)) and infl == 1.0:
        return E
    xm, A = _anomalies(E)
    return xm + A * torch.as_tensor(infl, dtype=E.dtype, device=E.device)


def rtps(Ea: Tensor, Ef: Tensor, alpha: float) -> Tensor:
    """Relaxation to prior spread: σa ← (1-α) σa + α σf per variable.

    Anomalies are rescaled by 1 + α (σf - σa)/σa (Whitaker & Hamill 2012);
    variables with zero analysis spread are left unchanged.
    """
    if alpha == 0.0:
        return Ea
    xm, Aa = _anomalies(Ea)
    sa = Aa.std(-2, unbiased=True, keepdim=True)
    sf = Ef.std(-2, unbiased=True, keepdim=True)
    factor = torch.where(
        sa > 0, 1.0 + alpha * (sf - sa) / sa.clamp_min(torch.finfo(sa.dtype).tiny), 1.0
    )
    return xm + Aa * factor


def rtpp(Ea: Tensor, Ef: Tensor, alpha: float) -> Tensor:
    """Relaxation to prior perturbations: Aa ← (1-α) Aa + α Af (Zhang et al. 2004)."""
    if alpha == 0.0:
        return Ea
    xm, Aa = _anomalies(Ea)
    _, Af = _anomalies(Ef)
    return xm + (1.0 - alpha) * Aa + alpha * Af


def innovation_inflation(d: Tensor, S: Tensor) -> tuple[float, float, float]:
    """Pooled innovation statistics (dᵀd, p, tr(S Sᵀ)) for the inflation estimate.

    ``d`` are whitened innovations R^{-1/2}(y - H x̄) ``(..., p)`` and ``S`` the
    whitened, 1/sqrt(N-1)-scaled observed anomalies ``(..., N, p)``, so that
    E[dᵀd] = λ tr(R^{-1} H P Hᵀ) + p = λ tr(S Sᵀ) + p (Desroziers et al. 2005).
    Leading (batch) dimensions are pooled.
    """
    dd = float((d * d).sum())
    p = float(d.numel())
    tr = float((S * S).sum())
    return dd, p, tr


@dataclass
class AdaptiveInflation:
    """Adaptive multiplicative prior inflation from innovation statistics.

    The observed estimate λo = (dᵀd - p) / tr(R^{-1} H P Hᵀ) (Li, Kalnay &
    Miyoshi 2009) is combined with the previous value λb by a scalar Kalman
    update λa = (vo λb + vb λo) / (vo + vb), whose observation variance
    vo = (2/p) ((λb t + 1) / t)², t = tr/p, follows from the chi-square
    distribution of dᵀd (Miyoshi 2011, global form). ``value`` is a
    *variance* factor applied to the prior anomalies as sqrt(λ).
    """

    #: current variance-inflation factor λ
    value: float = 1.0
    #: variance vb of the persistence forecast of λ (smaller = smoother in time)
    var_prior: float = 0.05**2
    #: lower / upper bounds of λ
    min_value: float = 1.0
    max_value: float = 10.0

    def __post_init__(self) -> None:
        if not (0 < self.min_value <= self.value <= self.max_value):
            raise ValueError("AdaptiveInflation: need 0 < min_value <= value <= max_value")
        if self.var_prior <= 0:
            raise ValueError("AdaptiveInflation: var_prior must be > 0")

    def update(self, d: Tensor, S: Tensor) -> float:
        """Update λ from whitened innovations ``d`` and scaled anomalies ``S``; return it."""
        dd, p, tr = innovation_inflation(d, S)
        if p == 0 or tr <= 0 or not math.isfinite(dd):
            return self.value
        t = tr / p
        lam_o = (dd - p) / tr
        var_o = (2.0 / p) * ((self.value * t + 1.0) / t) ** 2
        lam = (var_o * self.value + self.var_prior * lam_o) / (var_o + self.var_prior)
        self.value = float(min(max(lam, self.min_value), self.max_value))
        return self.value

    @property
    def std_factor(self) -> float:
        """The standard-deviation factor sqrt(λ) applied to the anomalies."""
        return math.sqrt(self.value)
