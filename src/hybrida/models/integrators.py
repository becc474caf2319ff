"""Explicit time integrators for tendencies f(x, t)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Tendency = Callable[[Tensor, float], Tensor]


def rk4_step(f: Tendency, x: Tensor, t: float, dt: float) -> Tensor:
    """One classical fourth-order Runge–Kutta step of dx/dt = f(x, t).

    x + dt/6 (k1 + 2 k2 + 2 k3 + k4), summed left to right. ``torch.add(.., alpha=2)``
    (one fused op; exact, as 2 k is) replaces a product and a sum; the other scaled
    sums stay a product then a sum (an ``alpha`` there would round once, not twice,
    and change the bits).
    """
    h = 0.5 * dt
    k1 = f(x, t)
    k2 = f(x + k1 * h, t + h)
    k3 = f(x + k2 * h, t + h)
    k4 = f(x + k3 * dt, t + dt)
    return x + torch.add(torch.add(torch.add(k1, k2, alpha=2.0), k3, alpha=2.0), k4) * (dt / 6.0)


def euler_step(f: Tendency, x: Tensor, t: float, dt: float) -> Tensor:
    """One forward-Euler step of dx/dt = f(x, t)."""
    return x + dt * f(x, t)


def plain_tensor_path(x: Tensor) -> bool:
    """True when stepping ``x`` records no reverse-mode graph and runs under no ``torch.func`` transform.

    Models with a TorchScript multi-step loop (same forward numbers as their Python steps)
    take it only then: reverse-mode AD through TorchScript may use its own gradient
    formulas, so with autograd recording (grad mode on and ``x`` requiring grad) or
    inside ``torch.func`` (jvp, vjp, vmap) the Python steps stay the reference.
    """
    if (torch.is_grad_enabled() and x.requires_grad) or _is_wrapped is None:
        return False
    return type(x) is Tensor and not _is_wrapped(x)


#: torch.func's test for its wrapper tensors (None if this torch lacks it: then no fast paths)
_is_wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
