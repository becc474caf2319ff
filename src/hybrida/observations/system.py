"""Observation systems: which observations exist at each analysis cycle, and sampling them."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from hybrida.observations.base import Observation


class ObservationSystem(ABC):
    """A network observed every ``every`` model steps.

    Subclasses say, for analysis cycle ``k`` (1, 2, ...), which operator,
    error model and locations apply (:meth:`network`); :meth:`observe` then
    draws y = H(x_true) + e with an explicit generator.
    """

    #: model steps between two analyses (observation times)
    every: int = 1

    @abstractmethod
    def network(self, cycle: int, generator: torch.Generator | None = None) -> Observation:
        """The observation structure at ``cycle`` with ``y`` left as NaN."""

    def observe(
        self, x_true: Tensor, cycle: int, generator: torch.Generator | None = None
    ) -> Observation:
        """Sample observations of the true state ``x_true`` (n,) at ``cycle``, on ``x_true``'s device.

        The errors are drawn where the network is built (with a CPU generator: on the CPU), so a
        run on a GPU observes the same numbers; the network then moves to the truth's device.
        """
        net = self.network(cycle, generator)
        y = net.operator(x_true) + net.error.sample((), generator).to(x_true)
        net.y = y
        return net.to_device(x_true.device)
