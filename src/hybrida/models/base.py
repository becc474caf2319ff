"""The model contract: ``step(x, t) -> x_next`` over any leading dimensions."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from hybrida.models.integrators import rk4_step


class Model(ABC):
    """A discrete-time dynamical model acting on the last dimension of ``x``.

    Leading dimensions are batch/ensemble dimensions; the output keeps the
    input's dtype and device. Implementations use differentiable torch ops
    only, so tangent-linear and adjoint come from autodiff
    (see :mod:`hybrida.models.linearize`). Learned surrogates implement the
    same contract and drop in anywhere a physical model does.
    """

    #: time step of one call to :meth:`step` (model time units)
    dt: float
    #: state dimension, the size of the last axis of ``x``
    n: int

    @abstractmethod
    def step(self, x: Tensor, t: float = 0.0) -> Tensor:
        """Advance ``x`` by one step ``dt`` starting at time ``t``."""

    def forecast(
        self, x: Tensor, n_steps: int, t0: float = 0.0, trajectory: bool = False
    ) -> Tensor:
        """Apply :meth:`step` ``n_steps`` times.

        Returns the final state, or with ``trajectory=True`` the stacked
        states ``(n_steps + 1, *x.shape)`` including the initial one.
        """
        states = [x] if trajectory else None
        for k in range(n_steps):
            x = self.step(x, t0 + k * self.dt)
            if states is not None:
                states.append(x)
        return torch.stack(states) if states is not None else x

    def check_state(self, x: Tensor) -> None:
        """Raise a clear error when ``x`` does not have the model's state size."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__}: state must be a torch.Tensor, got {type(x)}")
        if x.shape[-1] != self.n:
            raise ValueError(
                f"{type(self).__name__}: state has last dimension {x.shape[-1]}, "
                f"expected n={self.n}"
            )


class ODEModel(Model):
    """A model given by a tendency dx/dt = f(x, t), integrated with RK4."""

    @abstractmethod
    def tendency(self, x: Tensor, t: float = 0.0) -> Tensor:
        """Time derivative dx/dt at ``x``."""

    def step(self, x: Tensor, t: float = 0.0) -> Tensor:
        return rk4_step(self.tendency, x, t, self.dt)
