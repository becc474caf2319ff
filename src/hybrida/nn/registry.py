"""Networks by class name, so that saved models can be rebuilt from their ``config``."""

from __future__ import annotations

from torch import nn

from hybrida.nn.cnn import BrajardCNN, ResidualCNN
from hybrida.nn.l2s import L2SNet
from hybrida.nn.mlp import ResidualMLP
from hybrida.nn.polyconv import PolyConv

#: networks that :func:`hybrida.learn.persist.load_surrogate` can rebuild from their config
NETWORKS: dict[str, type[nn.Module]] = {
    "BrajardCNN": BrajardCNN,
    "ResidualCNN": ResidualCNN,
    "ResidualMLP": ResidualMLP,
    "PolyConv": PolyConv,
    "L2SNet": L2SNet,
}


def register_network(cls: type[nn.Module]) -> type[nn.Module]:
    """Make a network class loadable by name (usable as a decorator).

    The class must accept its ``config`` dict as keyword arguments.
    """
    NETWORKS[cls.__name__] = cls
    return cls
