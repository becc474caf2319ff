"""Ensemble Kalman methods: stochastic EnKF, ETKF, finite-size EnKF-N, DEnKF, LETKF; inflation and localization.

Differentiable: :class:`TrainableLETKF` (trainable inflation/radius, learned fields from
:class:`EnsembleFieldNet`) with :func:`inv_sqrt_and_inv`, stable at repeated eigenvalues.
"""

from __future__ import annotations

from hybrida.assimilation.ensemble.augmented import AugmentedEnsemble
from hybrida.assimilation.ensemble.base import EnsembleMethod
from hybrida.assimilation.ensemble.bias_aug import BiasAugmentedEnsemble, bias_augmented_observation
from hybrida.assimilation.ensemble.denkf import DEnKF
from hybrida.assimilation.ensemble.differentiable import TrainableLETKF
from hybrida.assimilation.ensemble.enkf import EnKF
from hybrida.assimilation.ensemble.enkf_n import EnKFN
from hybrida.assimilation.ensemble.enks import enks
from hybrida.assimilation.ensemble.etkf import ETKF
from hybrida.assimilation.ensemble.ienks import IEnKS
from hybrida.assimilation.ensemble.learned_filter import LearnedFilterNet, LearnedLETKF
from hybrida.assimilation.ensemble.learned_parameters import EnsembleFieldNet
from hybrida.assimilation.ensemble.letkf import LETKF
from hybrida.assimilation.ensemble.spectral import inv_sqrt_and_inv

__all__ = [
    "ETKF",
    "LETKF",
    "AugmentedEnsemble",
    "BiasAugmentedEnsemble",
    "DEnKF",
    "EnKF",
    "EnKFN",
    "EnsembleFieldNet",
    "EnsembleMethod",
    "IEnKS",
    "LearnedFilterNet",
    "LearnedLETKF",
    "TrainableLETKF",
    "bias_augmented_observation",
    "enks",
    "inv_sqrt_and_inv",
]
