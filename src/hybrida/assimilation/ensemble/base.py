"""Shared skeleton of ensemble Kalman methods: validation, missing data, inflation, relaxation."""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
from torch import Tensor

from hybrida.assimilation.base import AssimilationMethod
from hybrida.assimilation.ensemble.inflation import (
    AdaptiveInflation,
    inflate_multiplicative,
    rtpp,
    rtps,
)
from hybrida.assimilation.ensemble.rotation import rotate_anomalies
from hybrida.observations.base import Observation


def observed_anomalies(E: Tensor, obs: Observation) -> tuple[Tensor, Tensor, Tensor]:
    """Whitened observation-space quantities of an ensemble ``(..., N, n)``.

    Returns ``S = R^{-1/2} (H(E) - mean H(E)) / sqrt(N-1)`` ``(..., N, p)``,
    ``d = R^{-1/2} (y - mean H(E))`` ``(..., p)`` and ``H(E)`` itself. The
    members are mapped through the (possibly nonlinear) operator one by one,
    so ``S Sᵀ`` is the ensemble estimate of R^{-1/2} H P Hᵀ R^{-T/2}.
    """
    N = E.shape[-2]
    HE = obs.H(E)
    if HE.shape[:-1] != E.shape[:-1] or HE.shape[-1] != obs.p:
        raise ValueError(
            f"observation operator returned shape {tuple(HE.shape)}, expected {(*E.shape[:-1], obs.p)}"
        )
    ym = HE.mean(-2)
    S = obs.error.whiten(HE - ym.unsqueeze(-2)) / math.sqrt(N - 1)
    d = obs.error.whiten(obs.y.to(E) - ym)
    return S, d, HE


def _check_positive_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return value


class EnsembleMethod(AssimilationMethod):
    """Base of ensemble filters: subclasses write only :meth:`_update`.

    :meth:`analyse` drops missing observations, optionally inflates the prior
    adaptively (:class:`AdaptiveInflation`), calls the core update, then
    relaxes (RTPP, RTPS), inflates the posterior anomalies by ``infl`` and,
    with ``rot=True``, mixes them by a random mean-preserving rotation.
    With no valid observation the prior is returned unchanged (no analysis,
    hence no inflation).
    """

    kind = "ensemble"

    def __init__(
        self,
        N: int,
        infl: float = 1.0,
        rtps: float = 0.0,
        rtpp: float = 0.0,
        adaptive: bool = False,
        rot: bool = False,
    ):
        name = type(self).__name__
        self.N = _check_positive_int(f"{name}: N", N, 2)
        infl = float(infl)
        if not (math.isfinite(infl) and infl > 0):
            raise ValueError(f"{name}: infl must be a finite number > 0, got {infl}")
        self.infl = infl
        self.rtps = _check_fraction(f"{name}: rtps", rtps)
        self.rtpp = _check_fraction(f"{name}: rtpp", rtpp)
        if not isinstance(adaptive, bool):
            raise ValueError(f"{name}: adaptive must be True or False, got {adaptive!r}")  # noqa: TRY004
        self.adaptive = adaptive
        self.adaptive_inflation = AdaptiveInflation() if adaptive else None
        if not isinstance(rot, bool):
            raise ValueError(f"{name}: rot must be True or False, got {rot!r}")  # noqa: TRY004
        self.rot = rot
        self._diag: dict[str, float] = {}

    def check_prior(self, prior: Tensor) -> Tensor:
        """Raise a clear error unless ``prior`` is a floating ensemble ``(..., N, n)``."""
        name = type(self).__name__
        if not isinstance(prior, Tensor):
            raise ValueError(  # noqa: TRY004
                f"{name}: prior must be an ensemble tensor (N, n), got {type(prior).__name__}"
            )
        if prior.ndim < 2:
            raise ValueError(f"{name}: prior must have shape (..., N, n), got {tuple(prior.shape)}")
        if prior.shape[-2] != self.N:
            raise ValueError(
                f"{name}: prior has {prior.shape[-2]} members, method was built with N={self.N}"
            )
        if not prior.is_floating_point():
            raise ValueError(f"{name}: prior must be a floating-point tensor, got {prior.dtype}")
        return prior

    def analyse(
        self,
        prior: Tensor,
        obs: Observation,
        t: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Posterior ensemble ``(..., N, n)`` from the prior ensemble and ``obs``."""
        E = self.check_prior(prior)
        obs = obs.valid()
        self._diag = {"n_obs": float(obs.p)}
        if self.adaptive_inflation is not None:
            self._diag["inflation"] = self.adaptive_inflation.std_factor
        if obs.p == 0:
            return prior
        if self.adaptive_inflation is not None:
            S, d, _ = observed_anomalies(E, obs)
            self.adaptive_inflation.update(d, S)
            self._diag["inflation"] = self.adaptive_inflation.std_factor
            E = inflate_multiplicative(E, self.adaptive_inflation.std_factor)
        Ea = self._update(E, obs, generator)
        Ea = rtpp(Ea, E, self.rtpp)
        Ea = rtps(Ea, E, self.rtps)
        Ea = inflate_multiplicative(Ea, self.infl)
        return rotate_anomalies(Ea, generator) if self.rot else Ea

    @abstractmethod
    def _update(self, E: Tensor, obs: Observation, generator: torch.Generator | None) -> Tensor:
        """The method's analysis of ensemble ``E`` with valid observations ``obs``."""

    def diagnostics(self) -> dict[str, float]:
        """Number of valid observations and, if adaptive, the prior inflation (std-dev factor)."""
        return dict(self._diag)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(N={self.N}, infl={self.infl}, rtps={self.rtps}, "
            f"rtpp={self.rtpp}, adaptive={self.adaptive}, rot={self.rot})"
        )
