"""The Lorenz (1963) three-variable convection model."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.models.base import ODEModel

#: Reference initial truth of the Sakov et al. (2012) setup (DAPPER ``Lorenz63/sakov2012``).
X_STAR: tuple[float, float, float] = (1.509, -1.531, 25.46)


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


class Lorenz63(ODEModel):
    """Lorenz-63 tendency integrated with RK4.

    dx/dt = sigma (y - x),  dy/dt = x (rho - z) - y,  dz/dt = x y - beta z
    (Lorenz 1963). Defaults are the classical chaotic parameters with the
    RK4 step dt = 0.01 of Sakov et al. (2012).
    """

    n = 3

    def __init__(
        self,
        sigma: float = 10.0,
        rho: float = 28.0,
        beta: float = 8.0 / 3.0,
        dt: float = 0.01,
    ) -> None:
        self.sigma = _positive("sigma", sigma)
        self.beta = _positive("beta", beta)
        rho = float(rho)
        if not math.isfinite(rho):
            raise ValueError(f"rho must be a finite number, got {rho}")
        self.rho = rho
        self.dt = _positive("dt", dt)

    def tendency(self, x: Tensor, t: float = 0.0) -> Tensor:
        """Lorenz-63 time derivative at ``x`` of shape (..., 3)."""
        x1, x2, x3 = x.unbind(-1)
        return torch.stack(
            (
                self.sigma * (x2 - x1),
                x1 * (self.rho - x3) - x2,
                x1 * x2 - self.beta * x3,
            ),
            dim=-1,
        )

    def step(self, x: Tensor, t: float = 0.0) -> Tensor:
        """One RK4 step of length ``dt``."""
        self.check_state(x)
        if not x.is_floating_point():
            raise ValueError(f"Lorenz63: state must be a floating-point tensor, got {x.dtype}")
        return super().step(x, t)

    def initial_state(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """Reference truth x* = (1.509, -1.531, 25.46) of Sakov et al. (2012)."""
        return torch.tensor(X_STAR, dtype=dtype)

    def __repr__(self) -> str:
        return f"Lorenz63(sigma={self.sigma}, rho={self.rho}, beta={self.beta:.6g}, dt={self.dt})"
