"""Ensemble Kalman methods: stochastic EnKF, ETKF, DEnKF, LETKF; inflation and localization."""

from __future__ import annotations

from hybrida.assimilation.ensemble.base import EnsembleMethod
from hybrida.assimilation.ensemble.denkf import DEnKF
from hybrida.assimilation.ensemble.enkf import EnKF
from hybrida.assimilation.ensemble.etkf import ETKF
from hybrida.assimilation.ensemble.letkf import LETKF

__all__ = ["ETKF", "LETKF", "DEnKF", "EnKF", "EnsembleMethod"]
