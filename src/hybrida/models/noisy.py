"""A model with additive Gaussian noise after every step: the stochastic view of an imperfect model."""

from __future__ import annotations

import torch
from torch import Tensor

from hybrida.models.base import Model

__all__ = ["NoisyModel"]


class NoisyModel(Model):
    """x_{k+1} = M(x_k) + sigma eta_k, eta_k ~ N(0, I), drawn from an explicit generator.

    Used in ensemble forecasts with an imperfect (e.g. learned) model, each
    member drawing its own noise (Brajard et al. 2020, 2021 add such noise to
    their surrogate / truncated-model forecasts). ``std``: scalar or per-variable
    ``(n,)`` standard deviation per step. ``shared=True`` draws one value per
    leading index (member) and adds it to every variable, which is what a
    scalar model-noise covariance amounts to in DAPPER 0.9 (the Brajard et al.
    2021 code). The same generator seed gives the same forecasts.
    """

    def __init__(self, model: Model, std: float | Tensor, generator: torch.Generator, shared: bool = False) -> None:
        std_t = torch.as_tensor(std, dtype=torch.float64).detach().clone()
        if std_t.ndim > 1 or (std_t.ndim == 1 and std_t.shape != (model.n,)):
            raise ValueError(f"NoisyModel: std must be a scalar or have shape ({model.n},), got {tuple(std_t.shape)}")
        if not bool(torch.isfinite(std_t).all()) or bool((std_t < 0).any()):
            raise ValueError(f"NoisyModel: std must be finite and >= 0, got {std}")
        if not isinstance(generator, torch.Generator):
            raise TypeError("NoisyModel: generator must be a torch.Generator")
        if shared and std_t.ndim == 1:
            raise ValueError("NoisyModel: shared noise needs a scalar std")
        self.model, self.std, self.generator, self.shared = model, std_t, generator, bool(shared)
        self.n, self.dt = model.n, model.dt

    def step(self, x: Tensor, t: float = 0.0) -> Tensor:
        """One step of the wrapped model plus fresh noise for every leading index of ``x``."""
        out = self.model.step(x, t)
        shape = (*out.shape[:-1], 1) if self.shared else out.shape
        eta = torch.randn(shape, generator=self.generator, dtype=torch.float64)
        return out + (self.std * eta).to(out)

    def __repr__(self) -> str:
        std = float(self.std) if self.std.ndim == 0 else "per-variable"
        return f"NoisyModel({self.model!r}, std={std}, shared={self.shared})"
