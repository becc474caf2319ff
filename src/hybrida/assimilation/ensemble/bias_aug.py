"""Ensemble bias correction by state augmentation: members z = [x, beta] with persistent coefficients.

The ensemble equivalent of VarBC (Fertig et al. 2009; Miyoshi, Sato &
Kadowaki 2010): each member carries bias coefficients beta, which persist in
the forecast, and sees the observations through the augmented operator

    H_z(z) = H(x) + P(H(x)) beta,

so a global ensemble filter updates beta through its sampled cross-covariance
with the simulated observations. Predictors P
(:class:`~hybrida.observations.bias.BiasPredictors`) use each member's own
simulated values.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hybrida.assimilation.base import State
from hybrida.assimilation.ensemble.augmented import AugmentedEnsemble
from hybrida.assimilation.ensemble.inflation import inflate_multiplicative
from hybrida.models.base import Model
from hybrida.observations.base import Observation
from hybrida.observations.bias import BiasPredictors

__all__ = ["BiasAugmentedEnsemble", "bias_augmented_observation"]


def bias_augmented_observation(obs: Observation, predictors: BiasPredictors, n_state: int) -> Observation:
    """Observations of z = [x, beta] with H_z(z) = H(x) + P(H(x)) beta (valid observations only)."""
    obs = obs.valid()
    op = obs.operator

    def operator(z: Tensor) -> Tensor:
        x, beta = z[..., :n_state], z[..., n_state:]
        hx = op(x)
        return hx + (predictors.design(obs, hx) @ beta.unsqueeze(-1)).squeeze(-1)

    return Observation(obs.y, operator, obs.error, obs.locations, None, dict(obs.meta))


class BiasAugmentedEnsemble(AugmentedEnsemble):
    """Global ensemble filter (``inner``: etkf, enkf, denkf) on [x, beta] estimating observation bias.

    Coefficients start from N(beta0, beta_std^2) per member; after each
    analysis ``param_infl`` multiplies their anomalies and ``param_noise``
    adds centred noise (drawn with the analysis generator) so that they keep
    tracking a drifting bias. Diagnostics ``param_beta_i`` give the ensemble
    mean of each coefficient.
    """

    def __init__(
        self,
        predictors: BiasPredictors,
        beta_std: float = 0.5,
        beta0: Tensor | None = None,
        inner: str = "etkf",
        inner_params: dict[str, Any] | None = None,
        param_infl: float = 1.0,
        param_noise: float = 0.0,
    ):
        self.predictors = predictors
        m = predictors.n_coefficients
        self.beta0 = torch.zeros(m, dtype=torch.float64) if beta0 is None else torch.as_tensor(beta0).double()
        if self.beta0.shape != (m,):
            raise ValueError(f"BiasAugmentedEnsemble: beta0 must have shape ({m},)")
        if not float(beta_std) > 0:
            raise ValueError(f"BiasAugmentedEnsemble: beta_std must be > 0, got {beta_std}")
        self.beta_std = float(beta_std)
        self.names = tuple(f"beta_{i}" for i in range(m))
        self._set_filter(inner, inner_params, param_infl, param_noise)

    @property
    def n_params(self) -> int:
        return self.predictors.n_coefficients

    def prior_parameters(self, dtype: torch.dtype, generator: torch.Generator | None) -> Tensor:
        """``(N, m)`` draws of N(beta0, beta_std^2 I)."""
        z = torch.randn(self.N, self.n_params, generator=generator, dtype=dtype)
        return self.beta0.to(dtype) + self.beta_std * z.to(self.beta0.device)

    def forecast(self, model: Model, state: State, n_steps: int, t0: float = 0.0) -> State:
        """Forecast x of every member; the coefficients persist."""
        n = state.shape[-1] - self.n_params
        return torch.cat((model.forecast(state[..., :n], n_steps, t0), state[..., n:]), -1)

    def analyse(
        self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> State:
        """Inner analysis with H_z, then inflation/noise of the coefficient anomalies."""
        if not isinstance(prior, Tensor) or prior.ndim != 2:
            raise ValueError(f"BiasAugmentedEnsemble: prior must be an ensemble (N, n + {self.n_params})")
        m = self.n_params
        n = prior.shape[-1] - m
        post = self.inner.analyse(prior, bias_augmented_observation(obs, self.predictors, n), t, generator)
        beta = post[..., n:]
        if self.param_infl != 1.0:
            beta = inflate_multiplicative(beta, self.param_infl)
        if self.param_noise > 0:
            noise = torch.randn(beta.shape, generator=generator, dtype=beta.dtype, device=beta.device)
            beta = beta + self.param_noise * (noise - noise.mean(0))
        self._diag = {**self.inner.diagnostics(), **self.parameter_diagnostics(beta)}
        return torch.cat((post[..., :n], beta), -1)
