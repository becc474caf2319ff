"""Ensemble transform Kalman filter: symmetric square-root update in ensemble space."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.assimilation.ensemble.base import EnsembleMethod, observed_anomalies
from hybrida.observations.base import Observation


def etkf_transform(S: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """Mean weights w and symmetric transform T of the ETKF in ensemble space.

    With C = I + S Sᵀ (N×N, S the whitened scaled observed anomalies),
    w = C⁻¹ S d and T = C^{-1/2}, both from one eigendecomposition of C
    (Hunt et al. 2007, eqs. 21-24). The posterior is x̄ + Aᵀ w / sqrt(N-1)
    for the mean and T A for the anomalies A ``(N, n)``.
    """
    C = S @ S.mT
    C.diagonal(dim1=-2, dim2=-1).add_(1.0)
    lam, V = torch.linalg.eigh(C)
    u = (V.mT @ (S @ d.unsqueeze(-1))).squeeze(-1)
    w = (V @ (u / lam).unsqueeze(-1)).squeeze(-1)
    T = (V * lam.rsqrt().unsqueeze(-2)) @ V.mT
    return w, T


def etkf_analysis(E: Tensor, S: Tensor, d: Tensor) -> Tensor:
    """ETKF posterior ensemble ``(..., N, n)`` from the prior and whitened S, d (Hunt et al. 2007)."""
    N = E.shape[-2]
    xm = E.mean(-2, keepdim=True)
    A = E - xm
    w, T = etkf_transform(S, d)
    return xm + (w.unsqueeze(-2) @ A) / math.sqrt(N - 1) + T @ A


class ETKF(EnsembleMethod):
    """Ensemble transform Kalman filter with the symmetric square root (Hunt et al. 2007).

    Works with nonlinear H (through H applied to members) and with correlated
    R (through ``obs.error.whiten``); leading batch dimensions ``(B, N, n)``
    are processed at once.
    """

    def _update(self, E: Tensor, obs: Observation, generator: torch.Generator | None) -> Tensor:
        S, d, _ = observed_anomalies(E, obs)
        return etkf_analysis(E, S, d)
