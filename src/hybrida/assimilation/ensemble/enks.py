"""Fixed-lag ensemble Kalman smoother (EnKS) in square-root form, run offline over a time series.

The EnKS (Evensen & van Leeuwen 2000; Evensen 2009, ch. 9) cycles an ensemble
filter and applies each analysis to the ensembles of the previous ``lag``
analysis times as well: the analysis of cycle k is a linear combination of the
forecast members, E_k^a = x̄ + (w/√(N-1) 1ᵀ + T)(E_k^f - x̄) per member, with the
ETKF mean weights w = (I + S Sᵀ)⁻¹ S d and symmetric transform
T = (I + S Sᵀ)^{-1/2} (Hunt et al. 2007), and the same combination of the
members of every lagged ensemble E_j, j = k-lag .. k-1, updates them with y_k.
The lagged ensembles keep their member correspondence with the filter ensemble,
so for a linear model, linear H and Gaussian errors the smoothed means and
covariances equal the Kalman (RTS) smoother's of the initial sample statistics
when the lag covers the run. ``lag=0`` is the ETKF filter.

Post-processing follows DAPPER's ``EnKS``: multiplicative inflation ``infl``
is applied to the filter ensemble only (lagged ensembles are not re-inflated);
with ``rot=True`` a random mean-preserving rotation Ω mixes the filter members
and the same Ω mixes the lagged members (which keeps their mean and covariance
and the correspondence between members across times).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hybrida.assimilation.ensemble.base import observed_anomalies
from hybrida.assimilation.ensemble.etkf import etkf_transform
from hybrida.assimilation.ensemble.inflation import inflate_multiplicative
from hybrida.assimilation.ensemble.rotation import mean_preserving_rotation
from hybrida.models.base import Model
from hybrida.observations.base import Observation

__all__ = ["EnKSResult", "enks"]


@dataclass
class EnKSResult:
    """Filtered and smoothed ensembles at analysis times 0..K.

    ``filtered[k]`` / ``smoothed[k]`` ``(K+1, ..., N, n)`` are the ensembles at
    ``times[k]``; index 0 is the initial ensemble (smoothed: conditioned on the
    observations of cycles 1..lag). ``n_obs[k-1]`` counts the valid observations
    of cycle k.
    """

    filtered: Tensor
    smoothed: Tensor
    times: Tensor
    n_obs: list[int]
    lag: int


def _apply_transform(E: Tensor, w: Tensor, T: Tensor) -> Tensor:
    """x̄ + (w/√(N-1))ᵀ A + T A for ensembles ``(..., N, n)`` and transforms ``(..., N)``, ``(..., N, N)``."""
    N = E.shape[-2]
    xm = E.mean(-2, keepdim=True)
    A = E - xm
    return xm + (w.unsqueeze(-2) @ A) / math.sqrt(N - 1) + T @ A


def _rotate(E: Tensor, omega: Tensor) -> Tensor:
    xm = E.mean(-2, keepdim=True)
    return xm + omega.mT @ (E - xm)


def _check_inputs(
    model: Model, E0: Tensor, observations: Sequence[Observation], steps_per_cycle: int, lag: int, infl: float
) -> None:
    if not isinstance(E0, Tensor) or E0.ndim < 2 or not E0.is_floating_point():
        shape = tuple(E0.shape) if isinstance(E0, Tensor) else type(E0).__name__
        raise ValueError(f"enks: E0 must be a floating ensemble (..., N, n), got {shape}")
    if E0.shape[-2] < 2:
        raise ValueError(f"enks: E0 must have N >= 2 members, got {E0.shape[-2]}")
    n = getattr(model, "n", None)
    if n is not None and E0.shape[-1] != n:
        raise ValueError(f"enks: E0 has state size {E0.shape[-1]}, the model has n={n}")
    for label, value, low in (("steps_per_cycle", steps_per_cycle, 1), ("lag", lag, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"enks: {label} must be an integer >= {low}, got {value!r}")
    if not (math.isfinite(infl) and infl > 0):
        raise ValueError(f"enks: infl must be a finite number > 0, got {infl}")
    for k, obs in enumerate(observations):
        if not isinstance(obs, Observation):
            raise ValueError(f"enks: observations[{k}] must be an Observation, got {type(obs).__name__}")  # noqa: TRY004
        if obs.y.ndim != 1:
            raise ValueError(f"enks: observations[{k}].y must have shape (p,), got {tuple(obs.y.shape)}")


def enks(
    model: Model,
    E0: Tensor,
    observations: Sequence[Observation],
    steps_per_cycle: int,
    lag: int,
    infl: float = 1.0,
    rot: bool = False,
    generator: torch.Generator | None = None,
    t0: float = 0.0,
) -> EnKSResult:
    """Fixed-lag square-root EnKS of ``observations`` from the initial ensemble ``E0`` (..., N, n).

    ``observations[k-1]`` is valid at time t0 + k·steps_per_cycle·dt (cycle k,
    k = 1..K); NaN values are missing and masked; a cycle without valid
    observations has no analysis (no inflation, no rotation). Each analysis
    (ETKF transform, see the module docstring) also updates the smoothed
    ensembles of the previous ``lag`` cycles. ``rot=True`` draws one rotation
    per analysis from ``generator`` (the same stream use as :class:`ETKF`).
    """
    infl = float(infl)
    _check_inputs(model, E0, observations, steps_per_cycle, lag, infl)
    if not isinstance(rot, bool):
        raise ValueError(f"enks: rot must be True or False, got {rot!r}")  # noqa: TRY004
    K = len(observations)
    dt = model.dt
    filtered = torch.empty((K + 1, *E0.shape), dtype=E0.dtype, device=E0.device)
    smoothed = torch.empty_like(filtered)
    filtered[0] = smoothed[0] = E0
    n_obs = []
    E = E0
    with torch.no_grad():
        for k in range(1, K + 1):
            E = model.forecast(E, steps_per_cycle, t0 + (k - 1) * steps_per_cycle * dt)
            obs = observations[k - 1].valid()
            n_obs.append(obs.p)
            if obs.p > 0:
                S, d, _ = observed_anomalies(E, obs)
                w, T = etkf_transform(S, d)
                E = _apply_transform(E, w, T)
                j0 = max(0, k - lag)
                if j0 < k:
                    # the lagged ensembles (k-lag .. k-1) as one batch: (L, ..., N, n)
                    smoothed[j0:k] = _apply_transform(smoothed[j0:k], w, T)
                E = inflate_multiplicative(E, infl)
                if rot:
                    omega = mean_preserving_rotation(E.shape[-2], generator, E.dtype, E.device)
                    E = _rotate(E, omega)
                    if j0 < k:
                        smoothed[j0:k] = _rotate(smoothed[j0:k], omega)
            filtered[k] = smoothed[k] = E
    times = t0 + dt * steps_per_cycle * torch.arange(K + 1, dtype=E0.dtype, device=E0.device)
    return EnKSResult(filtered=filtered, smoothed=smoothed, times=times, n_obs=n_obs, lag=lag)
