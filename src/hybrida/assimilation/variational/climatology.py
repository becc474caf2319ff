"""The climatology baseline and the checks/square roots of a climatological covariance."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from hybrida.assimilation.base import AssimilationMethod, GaussianState, State
from hybrida.models.base import Model
from hybrida.observations.base import Observation

__all__ = ["Climatology", "ClimatologySample", "check_climatology", "check_positive", "psd_sqrt"]


class ClimatologySample(NamedTuple):
    """A climatology kept as its states' anomalies ``(T, n)`` and mean ``(n,)``, not as an (n, n) matrix.

    For methods that need only products with the sample covariance, or its translation
    average (:meth:`~hybrida.assimilation.variational.homogeneous_b.HomogeneousB.from_anomalies`):
    memory O(T n) where the dense covariance is O(n²).
    """

    mean: Tensor
    anomalies: Tensor

    def variance(self) -> Tensor:
        """The diagonal of the sample covariance, ``(n,)``."""
        return self.anomalies.square().sum(0) / (self.anomalies.shape[0] - 1)


def check_positive(name: str, value: float) -> float:
    """``value`` as a float, or a ValueError when it is not finite and > 0."""
    v = float(value)
    if not (v > 0 and v < float("inf")):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return v


def check_climatology(climatology: object, owner: str) -> tuple[Tensor, Tensor]:
    """Validate ``(mean (n,), cov (n, n))``: finite, cov symmetric positive semi-definite."""
    if not isinstance(climatology, (tuple, list)) or len(climatology) != 2:
        raise ValueError(f"{owner}: climatology must be a pair (mean (n,), cov (n, n))")
    mean, cov = (torch.as_tensor(c) for c in climatology)
    if not mean.is_floating_point():
        mean = mean.double()
    cov = cov.to(mean.dtype)
    if mean.ndim != 1:
        raise ValueError(f"{owner}: climatological mean must be 1-D (n,), got shape {tuple(mean.shape)}")
    n = mean.shape[0]
    if cov.shape != (n, n):
        raise ValueError(f"{owner}: climatological cov must have shape ({n}, {n}), got {tuple(cov.shape)}")
    if not bool(torch.isfinite(mean).all()) or not bool(torch.isfinite(cov).all()):
        raise ValueError(f"{owner}: climatology contains NaN or inf")
    scale = float(cov.abs().max()) if n else 1.0
    if not torch.allclose(cov, cov.mT, rtol=0.0, atol=1e-8 * max(scale, 1e-300)):
        raise ValueError(f"{owner}: climatological cov must be symmetric")
    cov = 0.5 * (cov + cov.mT)
    if n and float(torch.linalg.eigvalsh(cov).min()) < -1e-8 * max(scale, 1e-300):
        raise ValueError(f"{owner}: climatological cov must be positive semi-definite")
    return mean, cov


def psd_sqrt(cov: Tensor) -> Tensor:
    """Symmetric square root S = U diag(sqrt(max(λ, 0))) U^T of a PSD matrix (S S = cov)."""
    lam, U = torch.linalg.eigh(cov)
    return (U * lam.clamp_min(0).sqrt()) @ U.mT


class Climatology(AssimilationMethod):
    """Estimate = the climatological mean at every time, whatever the observations.

    The baseline of DAPPER's ``Climatology`` (Raanes et al.): its RMSE is the
    climatological spread, an upper bound any useful method must beat.
    """

    kind = "deterministic"
    needs_climatology = True

    def __init__(self, climatology: tuple[Tensor, Tensor]):
        self.mean, self.cov = check_climatology(climatology, "Climatology")

    def initial_state(
        self, mean: Tensor, std: Tensor | float, generator: torch.Generator | None = None
    ) -> State:
        """The climatological mean (the given ``mean``/``std`` are ignored)."""
        return self.mean.to(mean).clone()

    def forecast(self, model: Model, state: State, n_steps: int, t0: float = 0.0) -> State:
        """The state unchanged: the climatological estimate does not evolve."""
        return state

    def analyse(
        self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> State:
        """The climatological mean."""
        ref = prior.mean if isinstance(prior, GaussianState) else prior
        return self.mean.to(ref).clone()
