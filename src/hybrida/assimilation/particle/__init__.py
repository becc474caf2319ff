"""Particle filters: bootstrap (SIR) PF with regularisation, local PF; resampling schemes."""

from __future__ import annotations

from hybrida.assimilation.particle.base import ParticleMethod
from hybrida.assimilation.particle.bootstrap import BootstrapPF
from hybrida.assimilation.particle.local import LocalPF

__all__ = ["BootstrapPF", "LocalPF", "ParticleMethod"]
