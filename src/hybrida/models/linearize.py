"""Tangent-linear and adjoint of any model, from autodiff of its ``forecast``."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from hybrida.models.base import Model


class Linearization(NamedTuple):
    """Result of :func:`tangent_linear_and_adjoint`."""

    #: nonlinear forecast M(x)
    value: Tensor
    #: tangent-linear action dx -> M'(x) dx
    tl: object
    #: adjoint action dy -> M'(x)^T dy
    adj: object


def _propagator(model: Model, n_steps: int, t0: float):
    return lambda x: model.forecast(x, n_steps, t0)


def tangent_linear(model: Model, x: Tensor, dx: Tensor, n_steps: int = 1, t0: float = 0.0) -> Tensor:
    """Tangent-linear propagation M'(x) dx of ``n_steps`` model steps (forward-mode AD)."""
    return torch.func.jvp(_propagator(model, n_steps, t0), (x,), (dx,))[1]


def adjoint(model: Model, x: Tensor, dy: Tensor, n_steps: int = 1, t0: float = 0.0) -> Tensor:
    """Adjoint propagation M'(x)^T dy of ``n_steps`` model steps (reverse-mode AD)."""
    _, vjp = torch.func.vjp(_propagator(model, n_steps, t0), x)
    return vjp(dy)[0]


def tangent_linear_and_adjoint(
    model: Model, x: Tensor, n_steps: int = 1, t0: float = 0.0
) -> Linearization:
    """Linearize ``n_steps`` of ``model`` about ``x`` once; return M(x), TL and adjoint maps.

    The adjoint reuses one recorded reverse pass (``torch.func.vjp``); the TL
    uses ``torch.func.jvp``. Both work on any differentiable model, including
    learned surrogates.
    """
    f = _propagator(model, n_steps, t0)
    value, vjp = torch.func.vjp(f, x)
    return Linearization(
        value=value,
        tl=lambda dx: torch.func.jvp(f, (x,), (dx,))[1],
        adj=lambda dy: vjp(dy)[0],
    )


def jacobian(model: Model, x: Tensor, n_steps: int = 1, t0: float = 0.0) -> Tensor:
    """Full Jacobian dM/dx (n, n) of ``n_steps`` at a single state ``x`` of shape (n,)."""
    return torch.func.jacfwd(_propagator(model, n_steps, t0))(x)
