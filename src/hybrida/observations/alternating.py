"""Alternating half-grid observation network (Bocquet–Brajard model-error setup)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hybrida.observations.base import Observation
from hybrida.observations.networks import _Network

__all__ = ["AlternatingHalvesObs"]

PATTERNS = ("interleaved", "contiguous")


class AlternatingHalvesObs(_Network):
    """Observe one half of the grid per analysis cycle, alternating between the two halves.

    ``pattern="interleaved"`` (default): the even indices 0, 2, 4, ... at odd
    cycles (1, 3, ...) and the odd indices 1, 3, ... at even cycles.
    ``pattern="contiguous"``: indices 0 .. n/2 - 1 at odd cycles, n/2 .. n - 1
    at even cycles. Over two consecutive cycles every variable is observed
    once (the half-grid network of the Bocquet–Brajard course setup, after
    Farchi et al. 2021). ``n`` must be even; ``std`` a scalar or one value per
    state variable.
    """

    def __init__(
        self, n: int, std: float | Sequence[float] | Tensor = 1.0, pattern: str = "interleaved", **kwargs
    ):
        super().__init__(n, std, **kwargs)
        if self.n % 2:
            raise ValueError(f"AlternatingHalvesObs: n must be even, got {n}")
        if pattern not in PATTERNS:
            raise ValueError(f"AlternatingHalvesObs: pattern must be one of {', '.join(PATTERNS)}, got {pattern!r}")
        if self.std.ndim == 1 and self.std.shape[0] not in (self.n // 2, self.n):
            raise ValueError(
                f"AlternatingHalvesObs: std has {self.std.shape[0]} values; give a scalar or n={self.n} values"
            )
        self.pattern = pattern
        self.p = self.n // 2

    def indices(self, cycle: int) -> Tensor:
        """State indices observed at analysis ``cycle`` (1, 2, ...)."""
        first = int(cycle) % 2 == 1
        if self.pattern == "interleaved":
            return torch.arange(0 if first else 1, self.n, 2)
        h = self.n // 2
        return torch.arange(0, h) if first else torch.arange(h, self.n)

    def network(self, cycle: int, generator: torch.Generator | None = None) -> Observation:
        """The half observed at ``cycle`` (``y`` NaN); ``generator`` is unused."""
        idx = self.indices(cycle)
        return self._index_observation(idx, cycle, self._std_for(self.p, idx))
