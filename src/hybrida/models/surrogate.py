"""Learned surrogate models: small networks and a wrapper that satisfies the Model contract.

A network maps a normalised state z = (x - mu_x) / sigma_x of shape (B, n) to a
normalised output g of shape (B, n); :class:`SurrogateModel` de-normalises it,
f(x) = mu_f + sigma_f g(z), and turns it into one model step of length ``dt``:

- ``scheme="rk4"``: f is the tendency dx/dt, integrated with one classical RK4
  step over ``dt``. This is Brajard et al. (2020), who embed their CNN in an
  explicit fourth-order Runge–Kutta scheme and learn the tendency.
- ``scheme="euler"``: x_{k+1} = x_k + dt f(x_k).
- ``scheme="increment"``: x_{k+1} = x_k + f(x_k), a residual network learning
  the resolvent increment (He et al. 2016 style skip connection).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from hybrida.models.base import Model
from hybrida.models.integrators import euler_step, rk4_step
from hybrida.nn.common import apply_cast, positive_int

SCHEMES = ("rk4", "euler", "increment")


def _stat(v: Tensor | float, n: int, name: str) -> Tensor:
    t = torch.as_tensor(v, dtype=torch.float64).detach().clone()
    if t.ndim == 0:
        t = t.expand(n).clone()
    if t.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite")
    return t


class SurrogateModel(nn.Module, Model):
    """A learned model x_{k+1} = Phi(x_k) that satisfies the :class:`~hybrida.models.base.Model` contract.

    Phi is one RK4 / Euler step of the learned tendency or a learned increment
    (``scheme``, see the module docstring), with f(x) = out_mean + out_std *
    net((x - in_mean) / in_std). Normalisation statistics and a reference
    state (for :meth:`initial_state`) are float64 buffers.

    dtype: the network runs in the dtype of the input. Weights are trained and
    stored in their own dtype (float32 by default); a float64 state casts them
    (and the buffers) to float64 on the fly, so float64 DA, tangent-linear and
    adjoint are exact to float64 round-off for the stored weights. The cast
    is differentiable, so training through a float64 rollout also works.
    Device follows the input likewise. Autonomous: ``t`` is ignored.

    Modes: a new SurrogateModel is in eval mode, where the weights act as
    constants (a cached copy in the input's dtype, refreshed whenever the
    weights change): no autograd graph through the weights builds up over a
    long DA run, while gradients with respect to the state (TL, adjoint,
    4D-Var) still flow. :func:`hybrida.learn.train.fit` switches to train mode
    while training (gradients reach the weights) and back to eval at the end;
    call ``.train()`` for hand-written training loops.
    """

    def __init__(
        self,
        net: nn.Module,
        n: int,
        dt: float,
        scheme: str = "rk4",
        in_mean: Tensor | float = 0.0,
        in_std: Tensor | float = 1.0,
        out_mean: Tensor | float = 0.0,
        out_std: Tensor | float = 1.0,
        reference_state: Tensor | None = None,
    ) -> None:
        nn.Module.__init__(self)
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        self.n = positive_int("n", n)
        dt = float(dt)
        if not math.isfinite(dt) or dt <= 0.0:
            raise ValueError(f"dt must be a finite number > 0, got {dt}")
        self.dt = dt
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        self.scheme = scheme
        self.net = net
        self.register_buffer("in_mean", _stat(in_mean, self.n, "in_mean"))
        self.register_buffer("in_std", _stat(in_std, self.n, "in_std"))
        self.register_buffer("out_mean", _stat(out_mean, self.n, "out_mean"))
        self.register_buffer("out_std", _stat(out_std, self.n, "out_std"))
        if bool((self.in_std <= 0).any()) or bool((self.out_std <= 0).any()):
            raise ValueError("in_std and out_std must be > 0")
        ref = torch.full((self.n,), float("nan"), dtype=torch.float64)
        if reference_state is not None:
            ref = _stat(reference_state, self.n, "reference_state")
        self.register_buffer("reference_state", ref)
        self._frozen: dict = {}
        self.eval()

    @classmethod
    def from_trajectory(
        cls,
        net: nn.Module,
        trajectory: Tensor,
        dt: float,
        scheme: str = "rk4",
        per_variable: bool = False,
        steps_between: int = 1,
    ) -> SurrogateModel:
        """Wrap ``net`` with normalisation statistics estimated from a trajectory (T, n).

        Input statistics: mean/std of the states; output statistics: of the
        finite-difference tendency (x_{t+1} - x_t) / (steps_between dt) for
        ``rk4``/``euler`` or the increment per model step for ``increment``
        (increments over several steps divided by ``steps_between``). NaN
        entries (unobserved) are ignored. ``per_variable=False`` pools the
        statistics over the grid, which keeps convolutions translation-
        equivariant on homogeneous rings (L96). The last finite state becomes
        the reference state.
        """
        traj = torch.as_tensor(trajectory).detach().to(torch.float64)
        if traj.ndim != 2 or traj.shape[0] < 2:
            raise ValueError(f"trajectory must have shape (T >= 2, n), got {tuple(traj.shape)}")
        steps_between = positive_int("steps_between", steps_between)
        n = traj.shape[-1]
        diff = (traj[1:] - traj[:-1]) / steps_between
        if scheme in ("rk4", "euler"):
            diff = diff / float(dt)
        dims = 0 if per_variable else (0, 1)
        in_mean, in_std = _nan_mean_std(traj, dims)
        out_mean, out_std = _nan_mean_std(diff, dims)
        finite_rows = torch.isfinite(traj).all(-1).nonzero()
        ref = traj[finite_rows[-1, 0]] if finite_rows.numel() else None
        return cls(net, n, dt, scheme, in_mean, in_std, out_mean, out_std, reference_state=ref)

    def _frozen_net(self, like: Tensor) -> nn.Module:
        """A constant copy of the network in ``like``'s dtype/device, rebuilt when the weights change.

        Keyed on the parameters' version counters, which every in-place update
        (optimiser step, ``load_state_dict``) bumps.
        """
        tensors = list(self.net.parameters()) + list(self.net.buffers())
        key = (
            like.dtype,
            like.device,
            tuple(id(t) for t in tensors),
            tuple(t._version for t in tensors),
        )
        hit = self._frozen.get((like.dtype, like.device))
        if hit is not None and hit[0] == key:
            return hit[1]
        # swap the entries of _parameters/_buffers instead of Module.to(), which sets
        # .data and is refused inside torch.func transforms (jvp/vjp of the TL/adjoint)
        net = copy.deepcopy(self.net)
        for mod in net.modules():
            for table in (mod._parameters, mod._buffers):
                for name, t in table.items():
                    if t is not None:
                        c = t.detach().to(dtype=like.dtype, device=like.device)
                        table[name] = (
                            nn.Parameter(c, requires_grad=False) if table is mod._parameters else c
                        )
        self._frozen[(like.dtype, like.device)] = (key, net)
        return net

    def _apply_net(self, z: Tensor) -> Tensor:
        shape = z.shape
        z = z.reshape(-1, self.n)
        p = next(self.net.parameters(), None)
        g = self._frozen_net(z)(z) if not self.training and p is not None else apply_cast(self.net, z)
        return g.reshape(shape)

    def rhs(self, x: Tensor, t: float = 0.0) -> Tensor:
        """De-normalised network output f(x): the tendency (rk4/euler) or the increment."""
        z = (x - self.in_mean.to(x)) / self.in_std.to(x)
        return self.out_mean.to(x) + self.out_std.to(x) * self._apply_net(z)

    def step(self, x: Tensor, t: float = 0.0) -> Tensor:
        """One learned step of length ``dt`` over any leading dimensions; dtype/device follow ``x``."""
        self.check_state(x)
        if not x.is_floating_point():
            raise ValueError(
                f"SurrogateModel: state must be a floating-point tensor, got {x.dtype}"
            )
        if self.scheme == "rk4":
            return rk4_step(self.rhs, x, t, self.dt)
        if self.scheme == "euler":
            return euler_step(self.rhs, x, t, self.dt)
        return x + self.rhs(x, t)

    def forward(self, x: Tensor) -> Tensor:
        return self.step(x)

    def initial_state(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The stored reference state (e.g. the last training state), a point near the attractor."""
        if not bool(torch.isfinite(self.reference_state).all()):
            raise ValueError(
                "SurrogateModel has no reference_state; pass reference_state= or use from_trajectory"
            )
        return self.reference_state.to(dtype).clone()

    def __repr__(self) -> str:
        return (
            f"SurrogateModel(net={type(self.net).__name__}, n={self.n}, dt={self.dt}, "
            f"scheme={self.scheme!r})"
        )


def _nan_mean_std(v: Tensor, dims: int | tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Mean and std over ``dims`` ignoring NaN; a non-finite or zero std becomes 1."""
    mean = v.nanmean(dim=dims, keepdim=True)
    std = ((v - mean) ** 2).nanmean(dim=dims, keepdim=True).sqrt()
    std = torch.where(torch.isfinite(std) & (std > 0), std, torch.ones_like(std))
    mean = torch.nan_to_num(mean, nan=0.0)
    if mean.numel() == 1:
        return mean.reshape(()), std.reshape(())
    return mean.reshape(-1), std.reshape(-1)
