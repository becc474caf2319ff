"""The local-level model: a random walk observed with noise (Harvey 1989; Durbin & Koopman 2012, ch. 2)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.models.base import Model


class LocalLevel(Model):
    """Random-walk level(s): the deterministic step is the identity.

    The local-level model (Durbin & Koopman 2012, eqs. 2.3):

        y_t = α_t + ε_t,        ε_t ~ N(0, σ²_ε),
        α_{t+1} = α_t + η_t,    η_t ~ N(0, σ²_η).

    Only the deterministic part α_{t+1} = α_t is the model; the random-walk
    variance σ²_η enters the filter as its model-error covariance
    (``EKF(Q=σ²_η / dt)``: the EKF adds ``dt * Q`` per step) and σ²_ε as the
    observation-error variance R. ``n`` independent levels may be carried at
    once; ``level`` is the reference initial state (the prior mean of a
    diffuse start).
    """

    def __init__(self, n: int = 1, dt: float = 1.0, level: float = 0.0) -> None:
        if isinstance(n, bool) or int(n) != n or int(n) < 1:
            raise ValueError(f"LocalLevel: n must be an integer >= 1, got {n!r}")
        dt, level = float(dt), float(level)
        if not math.isfinite(dt) or dt <= 0.0:
            raise ValueError(f"LocalLevel: dt must be a finite number > 0, got {dt}")
        if not math.isfinite(level):
            raise ValueError(f"LocalLevel: level must be finite, got {level}")
        self.n, self.dt, self.level = int(n), dt, level

    def step(self, x: Tensor, t: float = 0.0) -> Tensor:
        """α_{t+1} = α_t (a copy of ``x``; differentiable, so the tangent linear is I)."""
        self.check_state(x)
        if not x.is_floating_point():
            raise ValueError(f"LocalLevel: state must be a floating-point tensor, got {x.dtype}")
        return x.clone()

    def initial_state(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The reference level ``level`` in every component, shape ``(n,)``."""
        return torch.full((self.n,), self.level, dtype=dtype)

    def __repr__(self) -> str:
        return f"LocalLevel(n={self.n}, dt={self.dt}, level={self.level})"
