"""Dynamical models: the model contract, the Lorenz systems and Kuramoto–Sivashinsky."""

from __future__ import annotations

from hybrida.models.base import Model, ODEModel
from hybrida.models.ks import KuramotoSivashinsky
from hybrida.models.linearize import adjoint, jacobian, tangent_linear, tangent_linear_and_adjoint
from hybrida.models.lorenz63 import Lorenz63
from hybrida.models.lorenz96 import Lorenz96
from hybrida.models.lorenz96_two_scale import Lorenz96TwoScale
from hybrida.models.noisy import NoisyModel

__all__ = [
    "KuramotoSivashinsky",
    "Lorenz63",
    "Lorenz96",
    "Lorenz96TwoScale",
    "Model",
    "NoisyModel",
    "ODEModel",
    "adjoint",
    "jacobian",
    "tangent_linear",
    "tangent_linear_and_adjoint",
]
