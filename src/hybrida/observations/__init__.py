"""Observations: values with their operator H, error model R and locations; networks;
bias correction (:mod:`~hybrida.observations.bias`), quality control (:mod:`~hybrida.observations.qc`)
and learned operators (:mod:`~hybrida.observations.learned`)."""

from __future__ import annotations

from hybrida.observations.alternating import AlternatingHalvesObs
from hybrida.observations.base import Observation
from hybrida.observations.bias import (
    BiasedObs,
    BiasModel,
    BiasPredictors,
    ChannelBias,
    LinearBias,
    NeuralBias,
    scan_covariate,
)
from hybrida.observations.errors import CorrelatedError, DiagonalError, ErrorModel
from hybrida.observations.grid2d import RandomGridObs
from hybrida.observations.learned import (
    LearnedObs,
    LearnedOperator,
    LocalChannelNet,
    load_learned_operator,
    save_learned_operator,
    with_learned_operator,
)
from hybrida.observations.networks import (
    EveryKthObs,
    IdentityObs,
    RadianceObs,
    RandomSubsetObs,
    SubsetObs,
)
from hybrida.observations.qc import (
    QC_BACKGROUND,
    QC_GOOD,
    QC_LEARNED,
    QC_MISSING,
    QC_VARQC,
    BackgroundCheck,
    Chain,
    GrossErrorObs,
    LearnedGrossErrorDetector,
    QualityControl,
    detection_rates,
)
from hybrida.observations.rotating import RotatingEveryKthObs
from hybrida.observations.system import ObservationSystem

__all__ = [
    "QC_BACKGROUND",
    "QC_GOOD",
    "QC_LEARNED",
    "QC_MISSING",
    "QC_VARQC",
    "AlternatingHalvesObs",
    "BackgroundCheck",
    "BiasModel",
    "BiasPredictors",
    "BiasedObs",
    "Chain",
    "ChannelBias",
    "CorrelatedError",
    "DiagonalError",
    "ErrorModel",
    "EveryKthObs",
    "GrossErrorObs",
    "IdentityObs",
    "LearnedGrossErrorDetector",
    "LearnedObs",
    "LearnedOperator",
    "LinearBias",
    "LocalChannelNet",
    "NeuralBias",
    "Observation",
    "ObservationSystem",
    "QualityControl",
    "RadianceObs",
    "RandomGridObs",
    "RandomSubsetObs",
    "RotatingEveryKthObs",
    "SubsetObs",
    "detection_rates",
    "load_learned_operator",
    "save_learned_operator",
    "scan_covariate",
    "with_learned_operator",
]
