"""Observations: values with their operator H, error model R and locations; networks."""

from __future__ import annotations

from hybrida.observations.alternating import AlternatingHalvesObs
from hybrida.observations.base import Observation
from hybrida.observations.errors import CorrelatedError, DiagonalError, ErrorModel
from hybrida.observations.networks import (
    EveryKthObs,
    IdentityObs,
    RadianceObs,
    RandomSubsetObs,
    SubsetObs,
)
from hybrida.observations.system import ObservationSystem

__all__ = [
    "AlternatingHalvesObs",
    "CorrelatedError",
    "DiagonalError",
    "ErrorModel",
    "EveryKthObs",
    "IdentityObs",
    "Observation",
    "ObservationSystem",
    "RadianceObs",
    "RandomSubsetObs",
    "SubsetObs",
]
