"""The assimilation-method contract shared by every family (ensemble, variational, ...).

A method owns the kind of state it cycles and how that state is forecast:

* ensemble methods cycle a tensor ``(N, n)`` of members;
* deterministic methods (3D-Var, OI, climatology) cycle a single state ``(n,)``
  with a static background covariance;
* the EKF cycles a :class:`GaussianState` (mean and covariance).

The cycle only calls :meth:`AssimilationMethod.initial_state`,
:meth:`forecast`, :meth:`analyse` and the read-outs :func:`state_mean`,
:func:`state_members`, :func:`state_spread`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hybrida.models.base import Model
from hybrida.observations.base import Observation


@dataclass
class GaussianState:
    """A Gaussian state estimate: mean ``(n,)`` and covariance ``(n, n)``."""

    mean: Tensor
    cov: Tensor


@dataclass
class ParticleState:
    """A weighted particle approximation: particles ``(N, n)`` and normalised weights ``(N,)``."""

    particles: Tensor
    weights: Tensor


@dataclass
class WindowState:
    """State of a windowed (smoother) method: 4D-Var, iEnKS, 4D-EnVar.

    ``current`` is the estimate at the latest time (a state ``(n,)`` or an
    ensemble ``(N, n)``); ``start`` the estimate at the start of the next
    assimilation window, at model time ``t_start``, ``span`` cycles before
    ``current``; ``pending`` the observations received since the last
    analysis (oldest first; the i-th of them lies
    ``span - len(pending) + 1 + i`` cycles after the window start).
    """

    current: Tensor
    start: Tensor
    t_start: float = 0.0
    span: int = 0
    pending: list[Observation] = field(default_factory=list)


State = Tensor | GaussianState | ParticleState | WindowState


class AssimilationMethod(ABC):
    """Base class: hyper-parameters live on the object, never in global state."""

    #: "ensemble", "deterministic" or "gaussian"
    kind: str = "ensemble"
    #: ensemble size (ensemble methods only)
    N: int | None = None

    def initial_state(
        self, mean: Tensor, std: Tensor | float, generator: torch.Generator | None = None
    ) -> State:
        """Initial state drawn around ``mean`` with standard deviation ``std``.

        Ensemble methods sample N members from N(mean, std^2 I); deterministic
        methods start from ``mean`` itself.
        """
        std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
        if self.kind == "ensemble":
            z = torch.randn(self.N, mean.shape[-1], generator=generator, dtype=mean.dtype)
            return mean + std * z.to(mean.device)
        if self.kind == "gaussian":
            var = (std * torch.ones_like(mean)) ** 2
            return GaussianState(mean.clone(), torch.diag(var))
        return mean.clone()

    def forecast(self, model: Model, state: State, n_steps: int, t0: float = 0.0) -> State:
        """Propagate the state through ``n_steps`` of ``model``."""
        return model.forecast(state, n_steps, t0)

    @abstractmethod
    def analyse(
        self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> State:
        """Combine ``prior`` with ``obs`` into the posterior (analysis)."""

    def diagnostics(self) -> dict[str, float]:
        """Scalars from the last analysis (e.g. adaptive inflation, cost), for the record."""
        return {}


def state_mean(state: State) -> Tensor:
    """Best estimate ``(n,)``: the ensemble mean, the Gaussian mean, or the state itself."""
    if isinstance(state, WindowState):
        return state_mean(state.current)
    if isinstance(state, ParticleState):
        return state.weights.to(state.particles) @ state.particles
    if isinstance(state, GaussianState):
        return state.mean
    return state.mean(-2) if state.ndim >= 2 else state


def state_members(state: State) -> Tensor | None:
    """Ensemble members ``(N, n)``, or None for non-ensemble states (particles: unweighted)."""
    if isinstance(state, WindowState):
        return state_members(state.current)
    if isinstance(state, ParticleState):
        return state.particles
    if isinstance(state, Tensor) and state.ndim >= 2:
        return state
    return None


def state_spread(state: State) -> Tensor:
    """Spread: sqrt of the domain-mean variance (ensemble: unbiased, N-1; particles: weighted)."""
    if isinstance(state, WindowState):
        return state_spread(state.current)
    if isinstance(state, ParticleState):
        w = state.weights.to(state.particles)
        dev = state.particles - w @ state.particles
        var = (w.unsqueeze(-1) * dev * dev).sum(-2)
        ess = 1.0 / (w * w).sum()
        correction = ess / (ess - 1.0) if float(ess) > 1.0 else torch.ones_like(ess)
        return (correction * var.mean(-1)).clamp_min(0).sqrt()
    if isinstance(state, GaussianState):
        return torch.diagonal(state.cov).clamp_min(0).mean().sqrt()
    if state.ndim >= 2:
        return state.var(-2, unbiased=True).mean(-1).sqrt()
    return torch.zeros((), dtype=state.dtype, device=state.device)
