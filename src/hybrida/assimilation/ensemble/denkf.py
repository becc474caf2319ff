"""Deterministic EnKF: anomalies updated with half the Kalman gain (Sakov & Oke 2008)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.assimilation.ensemble.base import EnsembleMethod, observed_anomalies
from hybrida.observations.base import Observation


def denkf_analysis(E: Tensor, S: Tensor, d: Tensor) -> Tensor:
    """DEnKF posterior: x̄a = x̄ + K d, Aa = A - ½ K H A (Sakov & Oke 2008, eqs. 4-5).

    In ensemble space with C = I + S Sᵀ: K d = Aᵀ C⁻¹ S d / sqrt(N-1) and
    A - ½ K H A = ½ (I + C⁻¹) A, using one Cholesky factorisation of C.
    """
    N = E.shape[-2]
    xm = E.mean(-2, keepdim=True)
    A = E - xm
    C = S @ S.mT
    C.diagonal(dim1=-2, dim2=-1).add_(1.0)
    L = torch.linalg.cholesky(C)
    eye = torch.eye(N, dtype=E.dtype, device=E.device).expand_as(C)
    rhs = torch.cat([(S @ d.unsqueeze(-1)), eye], dim=-1)
    sol = torch.cholesky_solve(rhs, L)
    w, Cinv = sol[..., 0], sol[..., 1:]
    T = 0.5 * (eye + Cinv)
    return xm + (w.unsqueeze(-2) @ A) / math.sqrt(N - 1) + T @ A


class DEnKF(EnsembleMethod):
    """Deterministic EnKF of Sakov & Oke (2008): mean with the full gain, anomalies with half."""

    def _update(self, E: Tensor, obs: Observation, generator: torch.Generator | None) -> Tensor:
        S, d, _ = observed_anomalies(E, obs)
        return denkf_analysis(E, S, d)
