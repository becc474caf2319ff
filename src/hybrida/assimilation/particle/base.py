"""Shared skeleton of particle filters: validation, initial particles, forecast, log-likelihoods."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.assimilation.base import AssimilationMethod, ParticleState
from hybrida.models.base import Model
from hybrida.observations.base import Observation


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, or a one-line ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_float(name: str, value: object, low: float, high: float = math.inf) -> float:
    """``value`` as a float in [low, high], or a one-line ValueError naming ``name``."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(v) or not low <= v <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value!r}")
    return v


def log_likelihood(particles: Tensor, obs: Observation) -> Tensor:
    """log p(y | x_i) = log N(y - H(x_i); 0, R) for particles ``(..., N, n)`` → ``(..., N)``.

    The operator and the error model's ``logpdf`` run once over all particles;
    non-finite values (a particle whose forecast blew up) become -inf.
    """
    HX = obs.H(particles)
    if HX.shape[:-1] != particles.shape[:-1] or HX.shape[-1] != obs.p:
        raise ValueError(
            f"observation operator returned shape {tuple(HX.shape)}, "
            f"expected {(*particles.shape[:-1], obs.p)}"
        )
    logL = obs.error.logpdf(obs.y.to(HX) - HX)
    return torch.nan_to_num(logL, nan=-math.inf, posinf=-math.inf, neginf=-math.inf)


class ParticleMethod(AssimilationMethod):
    """Base of particle filters: cycles a :class:`ParticleState` ``(N, n)`` with weights ``(N,)``."""

    kind = "particle"

    def __init__(self, N: int):
        self.N = check_int(f"{type(self).__name__}: N", N, 2)
        self._diag: dict[str, float] = {}

    def initial_state(
        self, mean: Tensor, std: Tensor | float, generator: torch.Generator | None = None
    ) -> ParticleState:
        """N particles drawn from N(mean, std² I) with uniform weights 1/N."""
        std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
        z = torch.randn(
            self.N,
            mean.shape[-1],
            generator=generator,
            dtype=mean.dtype,
            device=generator.device if generator is not None else mean.device,
        ).to(mean.device)
        weights = torch.full((self.N,), 1.0 / self.N, dtype=mean.dtype, device=mean.device)
        return ParticleState(mean + std * z, weights)

    def forecast(
        self, model: Model, state: ParticleState, n_steps: int, t0: float = 0.0
    ) -> ParticleState:
        """Propagate every particle through ``n_steps`` of ``model``; weights unchanged."""
        state = self.check_prior(state)
        return ParticleState(model.forecast(state.particles, n_steps, t0), state.weights)

    def check_prior(self, prior: object) -> ParticleState:
        """Raise a clear error unless ``prior`` is a floating ParticleState with N particles."""
        name = type(self).__name__
        if not isinstance(prior, ParticleState):
            raise ValueError(  # noqa: TRY004
                f"{name}: prior must be a ParticleState (particles, weights), got {type(prior).__name__}"
            )
        X, w = prior.particles, prior.weights
        if X.ndim < 2 or X.shape[-2] != self.N:
            raise ValueError(
                f"{name}: particles must have shape (..., {self.N}, n), got {tuple(X.shape)}"
            )
        if not X.is_floating_point():
            raise ValueError(f"{name}: particles must be floating point, got {X.dtype}")
        if w.shape != X.shape[:-1]:
            raise ValueError(
                f"{name}: weights must have shape {tuple(X.shape[:-1])}, got {tuple(w.shape)}"
            )
        return prior

    def diagnostics(self) -> dict[str, float]:
        """Scalars of the last analysis (see the subclass)."""
        return dict(self._diag)
