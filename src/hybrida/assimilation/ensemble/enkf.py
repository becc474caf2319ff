"""Stochastic EnKF with perturbed observations (Burgers et al. 1998; Evensen 2003)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.assimilation.ensemble.base import EnsembleMethod, observed_anomalies
from hybrida.observations.base import Observation


def enkf_analysis(E: Tensor, S: Tensor, D: Tensor) -> Tensor:
    """Members x_k + K D_k with the ensemble Kalman gain in whitened form.

    ``D`` ``(..., N, p)`` are whitened member innovations R^{-1/2}(y + e_k - H x_k).
    K = X (I_N + S Sᵀ)⁻¹ S = X S (Sᵀ S + I_p)⁻¹ with X = Aᵀ/sqrt(N-1): the
    N×N form is used when p > N, the p×p form otherwise (so large ensembles
    with few observations stay cheap).
    """
    N, p = S.shape[-2], S.shape[-1]
    xm = E.mean(-2, keepdim=True)
    A = E - xm
    if p > N:
        C = S @ S.mT
        C.diagonal(dim1=-2, dim2=-1).add_(1.0)
        G = torch.cholesky_solve(S @ D.mT, torch.linalg.cholesky(C))  # (N, N)
        return E + (G.mT @ A) / math.sqrt(N - 1)
    C = S.mT @ S
    C.diagonal(dim1=-2, dim2=-1).add_(1.0)
    Z = torch.cholesky_solve(D.mT, torch.linalg.cholesky(C))  # (p, N)
    return E + (Z.mT @ (S.mT @ A)) / math.sqrt(N - 1)  # never form the N×N product


class EnKF(EnsembleMethod):
    """Stochastic EnKF: each member assimilates y plus a draw from N(0, R).

    The perturbations come from ``obs.error.sample`` with the given generator
    and are centred over the members, so the analysis mean is the Kalman mean
    of the prior sample (common practice; e.g. Evensen 2003, sec. 4.3).
    """

    def _update(self, E: Tensor, obs: Observation, generator: torch.Generator | None) -> Tensor:
        S, _, HE = observed_anomalies(E, obs)
        e = obs.error.sample((*E.shape[:-1],), generator).to(E)
        e = e - e.mean(-2, keepdim=True)
        D = obs.error.whiten(obs.y.to(E) + e - HE)
        return enkf_analysis(E, S, D)
