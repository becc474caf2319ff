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
    Centring shrinks each member's perturbation variance to (N-1)/N R;
    ``rescale=True`` (default) multiplies them by sqrt(N/(N-1)) to restore R
    per member, as DAPPER's ``EnKF('PertObs')`` does (its ``mean0``), the
    convention the published L63/L96 rows were tuned with (their sample
    covariance with the 1/(N-1) normalisation is then N/(N-1) R; with
    ``rescale=False`` it is R, unbiased).
    """

    def __init__(
        self,
        N: int,
        infl: float = 1.0,
        rtps: float = 0.0,
        rtpp: float = 0.0,
        adaptive: bool = False,
        rot: bool = False,
        rescale: bool = True,
    ):
        super().__init__(N, infl=infl, rtps=rtps, rtpp=rtpp, adaptive=adaptive, rot=rot)
        if not isinstance(rescale, bool):
            raise ValueError(f"EnKF: rescale must be True or False, got {rescale!r}")  # noqa: TRY004
        self.rescale = rescale

    def _update(self, E: Tensor, obs: Observation, generator: torch.Generator | None) -> Tensor:
        S, _, HE = observed_anomalies(E, obs)
        e = obs.error.sample((*E.shape[:-1],), generator).to(E)
        e = e - e.mean(-2, keepdim=True)
        if self.rescale:
            N = E.shape[-2]
            e = e * math.sqrt(N / (N - 1))
        D = obs.error.whiten(obs.y.to(E) + e - HE)
        return enkf_analysis(E, S, D)
