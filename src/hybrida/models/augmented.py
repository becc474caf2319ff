"""State augmentation: a model acting on z = [x, theta] with persistent parameters theta."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor

from hybrida.models.base import Model

__all__ = ["AugmentedModel"]


class AugmentedModel(Model):
    """Model on the augmented state z = [x, theta]: x' = M_theta(x), theta' = theta.

    The parameters ``names`` of ``model`` are read from the last
    ``len(names)`` entries of z, one value per leading index (ensemble member),
    and passed to a shallow copy of ``model`` as ``(..., 1)`` tensors that
    broadcast against the ``(..., n)`` state (e.g. the forcing ``F`` of
    Lorenz-96). The parameters are persistent in time, so an ensemble filter
    on z estimates them from observations of x alone through their sampled
    cross-covariance with x (Jazwinski 1970; Anderson 2001, sec. 5).
    """

    def __init__(self, model: Model, names: Sequence[str]):
        names = tuple(names)
        if not names:
            raise ValueError("AugmentedModel: give at least one parameter name")
        missing = [name for name in names if not hasattr(model, name)]
        if missing:
            raise ValueError(f"AugmentedModel: {type(model).__name__} has no parameter {', '.join(missing)}")
        self.model = model
        self.names = names
        self.n_state = model.n
        self.n = model.n + len(names)
        self.dt = model.dt

    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, theta)`` views of an augmented state ``(..., n + p)``."""
        return z[..., : self.n_state], z[..., self.n_state :]

    def with_parameters(self, theta: Tensor) -> Model:
        """A shallow copy of the model whose parameters are the ``(..., p)`` values ``theta``."""
        m = copy.copy(self.model)
        for i, name in enumerate(self.names):
            setattr(m, name, theta[..., i : i + 1])
        return m

    def step(self, z: Tensor, t: float = 0.0) -> Tensor:
        """One model step of x with each member's own parameters; parameters unchanged."""
        self.check_state(z)
        x, theta = self.split(z)
        return torch.cat((self.with_parameters(theta).step(x, t), theta), -1)

    def forecast(self, z: Tensor, n_steps: int, t0: float = 0.0, trajectory: bool = False) -> Tensor:
        """``n_steps`` steps with the parameters held fixed (one model copy for the whole run)."""
        self.check_state(z)
        x, theta = self.split(z)
        xs = self.with_parameters(theta).forecast(x, n_steps, t0, trajectory)
        theta = theta.expand(*xs.shape[:-1], theta.shape[-1]) if trajectory else theta
        return torch.cat((xs, theta), -1)

    def __repr__(self) -> str:
        return f"AugmentedModel({self.model!r}, names={self.names})"
