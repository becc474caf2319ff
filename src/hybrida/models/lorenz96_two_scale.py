"""The two-scale Lorenz (1996) model: K slow variables X, each coupled to J fast Y."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.models.base import ODEModel
from hybrida.models.lorenz96 import l96_advection


def _finite(name: str, value: float, positive: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0.0):
        kind = "a finite number > 0" if positive else "finite"
        raise ValueError(f"{name} must be {kind}, got {value}")
    return value


def _int_at_least(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return int(value)


class Lorenz96TwoScale(ODEModel):
    """Two-scale Lorenz-96 tendency integrated with RK4 (Lorenz 1996; Wilks 2005).

    dX_k/dt = -X_{k-1}(X_{k-2} - X_{k+1}) - X_k + F - (h c / b) sum_j Y_{j,k}
    dY_{j,k}/dt = -c b Y_{j+1,k}(Y_{j+2,k} - Y_{j-1,k}) - c Y_{j,k} + (h c / b) X_k

    The fast variables form one ring of length K·J (Y_{J+1,k} = Y_{1,k+1}).
    State layout: ``concat(X, Y)`` with Y ordered sector by sector, so
    ``Y.reshape(..., K, J)[..., k, :]`` are the fast variables of X_k.
    Defaults K=8, J=32, F=20, h=1, b=10, c=10 are Wilks (2005); dt=0.005 with
    RK4 is DAPPER's ``LorenzUV/wilks05`` full-model step.
    """

    def __init__(
        self,
        K: int = 8,
        J: int = 32,
        F: float = 20.0,
        h: float = 1.0,
        b: float = 10.0,
        c: float = 10.0,
        dt: float = 0.005,
    ) -> None:
        self.K = _int_at_least("K", K, 4)
        self.J = _int_at_least("J", J, 1)
        self.F = _finite("F", F)
        self.h = _finite("h", h)
        self.b = _finite("b", b, positive=True)
        self.c = _finite("c", c, positive=True)
        self.dt = _finite("dt", dt, positive=True)
        self.n_slow = self.K
        self.n_fast = self.K * self.J
        self.n = self.n_slow + self.n_fast
        self._x0: tuple[int, Tensor] | None = None

    def slow(self, x: Tensor) -> Tensor:
        """Slow variables X, shape (..., K)."""
        return x[..., : self.n_slow]

    def fast(self, x: Tensor) -> Tensor:
        """Fast variables Y, shape (..., K*J)."""
        return x[..., self.n_slow :]

    def tendency(self, x: Tensor, t: float = 0.0) -> Tensor:
        """Coupled time derivative of (X, Y) at ``x`` of shape (..., K + K*J)."""
        X, Y = self.slow(x), self.fast(x)
        coupling = self.h * self.c / self.b
        batch = Y.shape[:-1]
        sector_sum = Y.reshape(*batch, self.K, self.J).sum(-1)
        dX = l96_advection(X) + self.F - coupling * sector_sum
        # the fast ring runs "backwards" relative to the slow one: Y_{j+1}(Y_{j+2} - Y_{j-1})
        Yp1 = torch.roll(Y, -1, -1)
        adv = Yp1 * (torch.roll(Y, 1, -1) - torch.roll(Y, -2, -1))
        X_rep = X.unsqueeze(-1).expand(*batch, self.K, self.J).reshape(*batch, self.n_fast)
        dY = self.c * self.b * adv - self.c * Y + coupling * X_rep
        return torch.cat((dX, dY), dim=-1)

    def step(self, x: Tensor, t: float = 0.0) -> Tensor:
        """One RK4 step of length ``dt``."""
        self.check_state(x)
        if not x.is_floating_point():
            raise ValueError(
                f"Lorenz96TwoScale: state must be a floating-point tensor, got {x.dtype}"
            )
        return super().step(x, t)

    def initial_state(
        self, dtype: torch.dtype = torch.float64, spinup_time: float = 10.0
    ) -> Tensor:
        """A point on the attractor, spun up ``spinup_time`` from a perturbed rest state.

        Start: X = F with X_0 += 0.01, Y = 0 with Y_0 = 0.01 (deterministic, no
        RNG); computed once in float64 and cached.
        """
        n_steps = max(1, round(spinup_time / self.dt))
        if self._x0 is None or self._x0[0] != n_steps:
            with torch.no_grad():
                x = torch.zeros(self.n, dtype=torch.float64)
                x[: self.n_slow] = self.F
                x[0] += 0.01
                x[self.n_slow] = 0.01
                x = self.forecast(x, n_steps)
            self._x0 = (n_steps, x)
        return self._x0[1].to(dtype).clone()

    def __repr__(self) -> str:
        return (
            f"Lorenz96TwoScale(K={self.K}, J={self.J}, F={self.F}, h={self.h}, "
            f"b={self.b}, c={self.c}, dt={self.dt})"
        )
