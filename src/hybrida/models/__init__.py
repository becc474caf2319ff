"""Dynamical models: the model contract, the Lorenz systems, Kuramoto–Sivashinsky, and learned models.

Learned models sit beside the physics they replace or correct: :class:`SurrogateModel` (a
network as a model step) and :class:`CorrectedModel` (physics plus a learned correction) satisfy
the same :class:`Model` contract, so they drop in wherever a physical model does.
"""

from __future__ import annotations

from hybrida.models.augmented import AugmentedModel
from hybrida.models.base import Model, ODEModel
from hybrida.models.corrected import CorrectedModel
from hybrida.models.ks import KuramotoSivashinsky
from hybrida.models.linearize import (
    adjoint,
    jacobian,
    lyapunov_exponents,
    tangent_linear,
    tangent_linear_and_adjoint,
)
from hybrida.models.lorenz63 import Lorenz63
from hybrida.models.lorenz96 import Lorenz96
from hybrida.models.lorenz96_two_scale import Lorenz96TwoScale
from hybrida.models.lorenz96_variants import Lorenz96Cubic
from hybrida.models.noisy import NoisyModel
from hybrida.models.qg import QGModel
from hybrida.models.qg_subgrid import ParametrizedQG
from hybrida.models.surrogate import SurrogateModel

__all__ = [
    "AugmentedModel",
    "CorrectedModel",
    "KuramotoSivashinsky",
    "Lorenz63",
    "Lorenz96",
    "Lorenz96Cubic",
    "Lorenz96TwoScale",
    "Model",
    "NoisyModel",
    "ODEModel",
    "ParametrizedQG",
    "QGModel",
    "SurrogateModel",
    "adjoint",
    "jacobian",
    "lyapunov_exponents",
    "tangent_linear",
    "tangent_linear_and_adjoint",
]
