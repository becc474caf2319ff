"""The Lorenz (1996) one-scale model on a periodic ring."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.models.base import ODEModel


def l96_advection(x: Tensor) -> Tensor:
    """Advection-plus-damping part (x_{i+1} - x_{i-2}) x_{i-1} - x_i on a periodic ring.

    Lorenz (1996); acts on the last dimension, no forcing. ``torch.roll(x, s)``
    moves entry i to i+s, so ``roll(x, -1)[i] = x_{i+1}``.
    """
    return (torch.roll(x, -1, -1) - torch.roll(x, 2, -1)) * torch.roll(x, 1, -1) - x


def _check_forcing(F: float | Tensor, n: int) -> float | Tensor:
    if isinstance(F, Tensor):
        if not F.is_floating_point():
            raise ValueError(f"F must be a floating-point tensor, got dtype {F.dtype}")
        if F.ndim > 0 and F.shape[-1] not in (1, n):
            raise ValueError(
                f"tensor F must have last dimension 1 or n={n}, got shape {tuple(F.shape)}"
            )
        return F
    F = float(F)
    if not math.isfinite(F):
        raise ValueError(f"F must be finite, got {F}")
    return F


class Lorenz96(ODEModel):
    """Lorenz-96 tendency dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F, integrated with RK4.

    Periodic indices (Lorenz 1996). Defaults n=40, F=8, dt=0.05 follow
    Sakov & Oke (2008). ``F`` may be a float or a tensor broadcastable to the
    state, e.g. shape () or (n,) or (N, 1) per member; gradients flow into a
    tensor ``F`` (parameter estimation).
    """

    def __init__(self, n: int = 40, F: float | Tensor = 8.0, dt: float = 0.05) -> None:
        if isinstance(n, bool) or int(n) != n or n < 4:
            raise ValueError(f"n must be an integer >= 4, got {n}")
        dt = float(dt)
        if not math.isfinite(dt) or dt <= 0.0:
            raise ValueError(f"dt must be a finite number > 0, got {dt}")
        self.n = int(n)
        self.F = _check_forcing(F, self.n)
        self.dt = dt
        self._x0: tuple[int, Tensor] | None = None

    def _forcing(self, x: Tensor) -> float | Tensor:
        F = self.F
        if isinstance(F, Tensor):
            return F.to(dtype=x.dtype, device=x.device)
        return F

    def tendency(self, x: Tensor, t: float = 0.0) -> Tensor:
        """Lorenz-96 time derivative at ``x`` of shape (..., n)."""
        return l96_advection(x) + self._forcing(x)

    def step(self, x: Tensor, t: float = 0.0) -> Tensor:
        """One RK4 step of length ``dt``."""
        self.check_state(x)
        if not x.is_floating_point():
            raise ValueError(f"Lorenz96: state must be a floating-point tensor, got {x.dtype}")
        return super().step(x, t)

    def initial_state(self, dtype: torch.dtype = torch.float64, spinup_steps: int = 1000) -> Tensor:
        """A point on the attractor: F·1 with x_0 += 0.01, spun up ``spinup_steps`` steps.

        Deterministic (no RNG); computed once in float64 and cached. With a
        tensor ``F`` the forcing value at first call is used.
        """
        if self._x0 is None or self._x0[0] != spinup_steps:
            with torch.no_grad():
                F = self.F.detach().double().cpu() if isinstance(self.F, Tensor) else self.F
                x = F * torch.ones(self.n, dtype=torch.float64)
                x[..., 0] += 0.01
                x = self.forecast(x, spinup_steps)
            self._x0 = (spinup_steps, x)
        return self._x0[1].to(dtype).clone()

    def __repr__(self) -> str:
        F = f"tensor{tuple(self.F.shape)}" if isinstance(self.F, Tensor) else self.F
        return f"Lorenz96(n={self.n}, F={F}, dt={self.dt})"
