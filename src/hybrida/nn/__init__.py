"""Network architectures: plain ``torch.nn.Module``s that import nothing else of hybrida.

Every network maps a normalised state ``(B, n)`` to ``(B, n)``; the wrappers that give it a
meaning (a model step, a correction, an analysis) live in the slot they fill
(:mod:`hybrida.models.surrogate`, :mod:`hybrida.models.corrected`, ...). ``NETWORKS`` maps
class names to classes so that saved models can be rebuilt from their ``config``.
"""

from __future__ import annotations

from hybrida.nn.cnn import BrajardCNN, ResidualCNN
from hybrida.nn.common import apply_cast, periodic_conv, seeded
from hybrida.nn.grid_cnn import GridCNN
from hybrida.nn.l2s import L2SNet
from hybrida.nn.latent_autoencoder import PeriodicAutoencoder
from hybrida.nn.mlp import ResidualMLP
from hybrida.nn.polyconv import PolyConv
from hybrida.nn.registry import NETWORKS, register_network
from hybrida.nn.score import ScoreNet
from hybrida.nn.subgrid_cnn import PeriodicFCNN

__all__ = [
    "NETWORKS",
    "BrajardCNN",
    "GridCNN",
    "L2SNet",
    "PeriodicAutoencoder",
    "PeriodicFCNN",
    "PolyConv",
    "ResidualCNN",
    "ResidualMLP",
    "ScoreNet",
    "apply_cast",
    "periodic_conv",
    "register_network",
    "seeded",
]
