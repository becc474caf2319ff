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


def _gram_schmidt(V: Tensor) -> tuple[Tensor, Tensor]:
    """Orthonormalise the k rows of ``V`` (..., k, n) by modified Gram–Schmidt; return rows and |diag R|.

    Hand-written because batched ``torch.linalg.qr`` (via ``triu``) can be
    orders of magnitude slower than the arithmetic on multi-threaded CPUs.
    """
    rows: list[Tensor] = []
    norms: list[Tensor] = []
    for i in range(V.shape[-2]):
        v = V[..., i, :]
        for q in rows:
            v = v - (q * v).sum(-1, keepdim=True) * q
        r = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
        rows.append(v / r)
        norms.append(r)
    return torch.stack(rows, dim=-2), torch.cat(norms, dim=-1)


def lyapunov_exponents(
    model: Model,
    x: Tensor,
    n_steps: int,
    k: int = 1,
    transient: int = 0,
    renorm_every: int = 5,
    t0: float = 0.0,
) -> Tensor:
    """Leading ``k`` Lyapunov exponents (per model time unit) along the trajectory from ``x``.

    Tangent-linear propagation of k vectors with Gram–Schmidt re-orthonormalisation
    every ``renorm_every`` steps (Benettin et al. 1980; Shimada & Nagashima
    1979); the first ``transient`` steps align the vectors and are not
    averaged. ``x`` has shape (..., n); the result has shape (..., k), one
    estimate per leading index. Deterministic: starts from the first k unit
    vectors. Tangents use reverse-over-reverse AD
    (``torch.autograd.functional.jvp``), several times faster on CPU than
    ``torch.func.jvp``, whose scalar-times-tensor ops take a slow forward-AD path.
    """
    n = x.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    if n_steps < 1 or transient < 0 or renorm_every < 1:
        raise ValueError(
            f"need n_steps >= 1, transient >= 0, renorm_every >= 1; got {n_steps}, {transient}, {renorm_every}"
        )
    batch = x.shape[:-1]
    Q = torch.eye(n, dtype=x.dtype, device=x.device)[:k].expand(*batch, k, n).contiguous()
    log_growth = torch.zeros(*batch, k, dtype=x.dtype, device=x.device)
    x = x.detach()
    done, total = 0, transient + n_steps
    while done < total:
        # chunks never straddle the end of the transient
        end = transient if done < transient else total
        m = min(renorm_every, end - done)
        xs = x.unsqueeze(-2).expand(*batch, k, n).contiguous()
        t = t0 + done * model.dt
        x_next, dX = torch.autograd.functional.jvp(
            lambda z, m=m, t=t: model.forecast(z, m, t), xs, Q
        )
        x = x_next[..., 0, :].detach()
        Q, growth = _gram_schmidt(dX)
        if done >= transient:
            log_growth = log_growth + torch.log(growth)
        done += m
    return log_growth / (n_steps * model.dt)
