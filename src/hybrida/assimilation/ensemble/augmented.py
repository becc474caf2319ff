"""Joint state and parameter estimation with an ensemble filter on the augmented state."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from hybrida import registry
from hybrida.assimilation.base import AssimilationMethod, State
from hybrida.assimilation.ensemble.inflation import inflate_multiplicative
from hybrida.models.augmented import AugmentedModel
from hybrida.models.base import Model
from hybrida.observations.base import Observation

__all__ = ["AugmentedEnsemble", "augment_observation"]

#: inner methods whose update is global (no localization of the parameter part)
GLOBAL_METHODS = ("etkf", "enkf", "denkf")


def augment_observation(obs: Observation, n_state: int, n_params: int) -> Observation:
    """The same observations of x seen as observations of z = [x, theta] (H_z = [H, 0])."""
    op = obs.operator
    matrix = None
    if obs.matrix is not None:
        pad = torch.zeros(obs.matrix.shape[0], n_params, dtype=obs.matrix.dtype, device=obs.matrix.device)
        matrix = torch.cat((obs.matrix, pad), -1)
    return Observation(
        y=obs.y,
        operator=lambda z: op(z[..., :n_state]),
        error=obs.error,
        locations=obs.locations,
        matrix=matrix,
        meta=dict(obs.meta),
    )


class AugmentedEnsemble(AssimilationMethod):
    """Ensemble filter on z = [x, theta] estimating model parameters theta with the state.

    Each member carries its own parameter values (prior N(mean, std^2) per
    parameter, ``estimate = {name: [mean, std]}``); the forecast runs the
    model with each member's parameters (:class:`~hybrida.models.augmented.AugmentedModel`)
    and the ``inner`` global ensemble filter updates x and theta together
    through their ensemble cross-covariance (Anderson 2001; Evensen 2009).
    Parameters do not evolve, so their spread only shrinks: after each
    analysis ``param_infl`` multiplies the parameter anomalies (Ruiz, Pulido
    & Miyoshi 2013) and ``param_noise`` > 0 adds centred N(0, param_noise^2)
    noise drawn with the analysis generator, to keep them adaptable.
    ``inner_params`` go to the inner method (``N``, ``infl``, ...). Scores
    compare the state part with the truth; the parameter mean and spread are
    in the diagnostics as ``param_<name>`` and ``param_<name>_spread``.

    Subclasses estimating other parameters (e.g. network weights,
    :class:`hybrida.learn.online.OnlineCorrectionEnsemble`) override
    :attr:`n_params`, :meth:`prior_parameters`, :meth:`forecast` and
    :meth:`parameter_diagnostics`.
    """

    kind = "ensemble"

    def __init__(
        self,
        estimate: dict[str, Any],
        inner: str = "etkf",
        inner_params: dict[str, Any] | None = None,
        param_infl: float = 1.0,
        param_noise: float = 0.0,
    ):
        if not isinstance(estimate, dict) or not estimate:
            raise ValueError("AugmentedEnsemble: estimate must map parameter names to [prior mean, prior std]")
        prior = {}
        for name, value in estimate.items():
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise ValueError(f"AugmentedEnsemble: estimate.{name} must be [prior mean, prior std], got {value!r}")
            mean, std = float(value[0]), float(value[1])
            if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
                raise ValueError(f"AugmentedEnsemble: estimate.{name} needs a finite mean and a std > 0, got {value!r}")
            prior[name] = (mean, std)
        self.prior = prior
        self.names = tuple(prior)
        self._set_filter(inner, inner_params, param_infl, param_noise)

    def _set_filter(
        self, inner: str, inner_params: dict[str, Any] | None, param_infl: float, param_noise: float
    ) -> None:
        """Check and store the inner filter and the parameter inflation (shared with subclasses)."""
        who = type(self).__name__
        if inner not in GLOBAL_METHODS:
            raise ValueError(f"{who}: inner must be one of {', '.join(GLOBAL_METHODS)}, got {inner!r}")
        param_infl, param_noise = float(param_infl), float(param_noise)
        if not (math.isfinite(param_infl) and param_infl > 0):
            raise ValueError(f"{who}: param_infl must be a finite number > 0, got {param_infl}")
        if not (math.isfinite(param_noise) and param_noise >= 0):
            raise ValueError(f"{who}: param_noise must be a finite number >= 0, got {param_noise}")
        self.inner_name = inner
        self.inner = registry.resolve(registry.METHODS, inner, "method")(**(inner_params or {}))
        self.N = self.inner.N
        self.param_infl = param_infl
        self.param_noise = param_noise
        self._diag: dict[str, float] = {}

    @property
    def n_params(self) -> int:
        return len(self.names)

    def prior_parameters(self, dtype: torch.dtype, generator: torch.Generator | None) -> Tensor:
        """``(N, n_params)`` draws from the parameters' prior."""
        m = torch.tensor([self.prior[k][0] for k in self.names], dtype=dtype)
        s = torch.tensor([self.prior[k][1] for k in self.names], dtype=dtype)
        return m + s * torch.randn(self.N, self.n_params, generator=generator, dtype=dtype)

    def initial_state(
        self, mean: Tensor, std: Tensor | float, generator: torch.Generator | None = None
    ) -> State:
        """State members from the inner method, parameters drawn from their priors, side by side."""
        X = self.inner.initial_state(mean, std, generator)
        theta = self.prior_parameters(mean.dtype, generator).to(mean.device)
        return torch.cat((X, theta), -1)

    def forecast(self, model: Model, state: State, n_steps: int, t0: float = 0.0) -> State:
        """Each member forecast with its own parameters."""
        return AugmentedModel(model, self.names).forecast(state, n_steps, t0)

    def analyse(
        self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> State:
        """Inner analysis of the augmented ensemble, then multiplicative and additive parameter inflation."""
        if not isinstance(prior, Tensor) or prior.ndim != 2:
            raise ValueError(f"{type(self).__name__}: prior must be an augmented ensemble (N, n + {self.n_params})")
        p = self.n_params
        n_state = prior.shape[-1] - p
        post = self.inner.analyse(prior, augment_observation(obs, n_state, p), t, generator)
        theta = post[..., n_state:]
        if self.param_infl != 1.0:
            theta = inflate_multiplicative(theta, self.param_infl)
        if self.param_noise > 0:
            noise = torch.randn(theta.shape, generator=generator, dtype=theta.dtype, device=theta.device)
            theta = theta + self.param_noise * (noise - noise.mean(0))
        self._diag = {**self.inner.diagnostics(), **self.parameter_diagnostics(theta)}
        return torch.cat((post[..., :n_state], theta), -1)

    def parameter_diagnostics(self, theta: Tensor) -> dict[str, float]:
        """Mean and spread of each parameter over the members of the analysis ``theta`` ``(N, p)``."""
        out = {}
        for i, name in enumerate(self.names):
            out[f"param_{name}"] = float(theta[..., i].mean())
            out[f"param_{name}_spread"] = float(theta[..., i].std())
        return out

    def diagnostics(self) -> dict[str, float]:
        """Inner diagnostics plus the parameter diagnostics after the last analysis."""
        return dict(self._diag)
