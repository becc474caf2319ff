"""Explicit time integrators for tendencies f(x, t)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

Tendency = Callable[[Tensor, float], Tensor]


def rk4_step(f: Tendency, x: Tensor, t: float, dt: float) -> Tensor:
    """One classical fourth-order Runge–Kutta step of dx/dt = f(x, t)."""
    k1 = f(x, t)
    k2 = f(x + 0.5 * dt * k1, t + 0.5 * dt)
    k3 = f(x + 0.5 * dt * k2, t + 0.5 * dt)
    k4 = f(x + dt * k3, t + dt)
    return x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def euler_step(f: Tendency, x: Tensor, t: float, dt: float) -> Tensor:
    """One forward-Euler step of dx/dt = f(x, t)."""
    return x + dt * f(x, t)
