"""Classical and variational analyses: 3D-Var, optimal interpolation, EKF, climatology."""

from __future__ import annotations

from hybrida.assimilation.variational.climatology import Climatology
from hybrida.assimilation.variational.ekf import EKF
from hybrida.assimilation.variational.oi import OptimalInterpolation
from hybrida.assimilation.variational.threedvar import ThreeDVar

__all__ = ["EKF", "Climatology", "OptimalInterpolation", "ThreeDVar"]
