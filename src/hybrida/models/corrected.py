"""Hybrid models: a physical model plus a learned correction of its resolvent or its tendency.

Two forms (Farchi et al. 2021, J. Comput. Sci.; Bocquet, Farchi & Malartic 2021):

- ``kind="resolvent"``: x_{k+1} = M(x_k) + s g((x_k - mu) / sigma), the correction
  is added after each step of the physical model M;
- ``kind="tendency"``: dx/dt = f(x) + s g((x - mu) / sigma), integrated with one RK4
  step of the physical model's ``dt`` (Brajard et al. 2021 learn the unresolved-scale
  forcing this way).

g is any ``nn.Module`` mapping (B, n) to (B, n). Networks that also expose
``apply_weights(theta, z)`` with a flat weight vector ``theta`` (:class:`~hybrida.nn.PolyConv`) can be
run with per-member weights (online learning, :mod:`hybrida.learn.online`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hybrida.models.base import Model
from hybrida.models.integrators import rk4_step
from hybrida.nn.common import apply_cast

KINDS = ("resolvent", "tendency")


def _stat(v: Tensor | float, name: str) -> Tensor:
    t = torch.as_tensor(v, dtype=torch.float64).detach().clone()
    if t.ndim > 1 or not bool(torch.isfinite(t).all()):
        raise ValueError(f"CorrectedModel: {name} must be a finite scalar or 1-D tensor")
    return t


class CorrectedModel(nn.Module, Model):
    """Physics plus learned correction, x_{k+1} = M(x_k) + s g(z_k) or RK4 of f(x) + s g(z), z = (x - mu)/sigma.

    ``physics``: any :class:`~hybrida.models.base.Model` (with a ``tendency``
    for ``kind="tendency"``); ``net``: (B, n) -> (B, n). ``in_mean`` (mu),
    ``in_std`` (sigma) and ``out_std`` (s) are float64 buffers (scalars or
    (n,)). dtype and device follow the state: weights in another dtype are
    cast differentiably on the fly. ``t`` is passed to the physics.
    With g = 0 the model equals the physics exactly.
    """

    def __init__(
        self,
        physics: Model,
        net: nn.Module,
        kind: str = "resolvent",
        in_mean: Tensor | float = 0.0,
        in_std: Tensor | float = 1.0,
        out_std: Tensor | float = 1.0,
    ) -> None:
        nn.Module.__init__(self)
        if not isinstance(physics, Model):
            raise TypeError(f"CorrectedModel: physics must be a Model, got {type(physics).__name__}")
        if not isinstance(net, nn.Module):
            raise TypeError(f"CorrectedModel: net must be a torch.nn.Module, got {type(net).__name__}")
        if kind not in KINDS:
            raise ValueError(f"CorrectedModel: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if kind == "tendency" and not callable(getattr(physics, "tendency", None)):
            raise ValueError("CorrectedModel: kind='tendency' needs a physics model with a tendency(x, t)")
        self.physics = physics
        self.net = net
        self.kind = kind
        self.n = physics.n
        self.dt = physics.dt
        self.register_buffer("in_mean", _stat(in_mean, "in_mean"))
        self.register_buffer("in_std", _stat(in_std, "in_std"))
        self.register_buffer("out_std", _stat(out_std, "out_std"))
        if bool((self.in_std <= 0).any()) or bool((self.out_std <= 0).any()):
            raise ValueError("CorrectedModel: in_std and out_std must be > 0")

    # -- the correction -------------------------------------------------------------
    def _net(self, z: Tensor, theta: Tensor | None) -> Tensor:
        if theta is not None:
            if not callable(getattr(self.net, "apply_weights", None)):
                raise ValueError("CorrectedModel: per-member weights need a net with apply_weights(theta, z), e.g. PolyConv")
            return self.net.apply_weights(theta, z)
        shape = z.shape
        return apply_cast(self.net, z.reshape(-1, shape[-1])).reshape(shape)

    def correction(self, x: Tensor, theta: Tensor | None = None) -> Tensor:
        """s g((x - mu) / sigma): the resolvent increment or the tendency correction at ``x``."""
        z = (x - self.in_mean.to(x)) / self.in_std.to(x)
        return self.out_std.to(x) * self._net(z, theta)

    def step_with(self, x: Tensor, theta: Tensor | None = None, t: float = 0.0) -> Tensor:
        """One hybrid step; ``theta`` ``(..., P)`` gives each leading index its own correction weights."""
        self.check_state(x)
        if not x.is_floating_point():
            raise ValueError(f"CorrectedModel: state must be a floating-point tensor, got {x.dtype}")
        if self.kind == "resolvent":
            return self.physics.step(x, t) + self.correction(x, theta)
        phys = self.physics.tendency  # type: ignore[attr-defined]
        return rk4_step(lambda v, s: phys(v, s) + self.correction(v, theta), x, t, self.dt)

    def step(self, x: Tensor, t: float = 0.0) -> Tensor:
        """One hybrid step of length ``dt`` over any leading dimensions."""
        return self.step_with(x, None, t)

    def forward(self, x: Tensor) -> Tensor:
        return self.step(x)

    def initial_state(self, *args, **kwargs) -> Tensor:
        """The physics model's initial state."""
        return self.physics.initial_state(*args, **kwargs)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"CorrectedModel({self.physics!r}, net={type(self.net).__name__}, kind={self.kind!r})"
