"""Classical and variational analyses: 3D-Var, 4D-Var, hybrid 3D/4D-EnVar, optimal interpolation, EKF, climatology."""

from __future__ import annotations

from hybrida.assimilation.variational.climatology import Climatology
from hybrida.assimilation.variational.ekf import EKF
from hybrida.assimilation.variational.envar import HybridEnVar
from hybrida.assimilation.variational.envar4d import HybridEnVar4D
from hybrida.assimilation.variational.fourdvar import FourDVar
from hybrida.assimilation.variational.oi import OptimalInterpolation
from hybrida.assimilation.variational.robust import GaussianFlat, Huber, RobustNorm
from hybrida.assimilation.variational.threedvar import ThreeDVar
from hybrida.assimilation.variational.varbc import VarBC3D

__all__ = [
    "EKF",
    "Climatology",
    "FourDVar",
    "GaussianFlat",
    "Huber",
    "HybridEnVar",
    "HybridEnVar4D",
    "OptimalInterpolation",
    "RobustNorm",
    "ThreeDVar",
    "VarBC3D",
]
