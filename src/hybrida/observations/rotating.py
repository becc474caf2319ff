"""Every k-th variable observed with an offset that rotates each cycle (McCabe & Brown 2021 setup)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hybrida.observations.base import Observation
from hybrida.observations.networks import _check_int, _Network

__all__ = ["RotatingEveryKthObs"]


class RotatingEveryKthObs(_Network):
    """Observe every ``k``-th variable, the offset moving by ``shift`` each analysis cycle.

    At cycle c (1, 2, ...) the observed indices are o, o + k, o + 2k, ... with
    o = (offset + (c - 1) shift) mod k, so with ``shift=1`` every variable is
    observed once over k consecutive cycles (n=40, k=4: 10 observations per
    cycle; the sparse rotating network of McCabe & Brown 2021). ``n`` must be
    a multiple of ``k`` (the same number of observations every cycle);
    ``std`` is a scalar or one value per state variable.
    """

    def __init__(
        self,
        n: int,
        k: int = 4,
        offset: int = 0,
        shift: int = 1,
        std: float | Sequence[float] | Tensor = 1.0,
        **kwargs,
    ):
        super().__init__(n, std, **kwargs)
        self.k = _check_int("RotatingEveryKthObs: k", k, 1)
        if self.n % self.k:
            raise ValueError(f"RotatingEveryKthObs: n={self.n} must be a multiple of k={self.k}")
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < self.k:
            raise ValueError(f"RotatingEveryKthObs: offset must be an integer in [0, {self.k - 1}], got {offset!r}")
        if isinstance(shift, bool) or not isinstance(shift, int):
            raise ValueError(f"RotatingEveryKthObs: shift must be an integer, got {shift!r}")  # noqa: TRY004
        if self.std.ndim == 1 and self.std.shape[0] != self.n:
            raise ValueError(
                f"RotatingEveryKthObs: std has {self.std.shape[0]} values; give a scalar or n={self.n} values"
            )
        self.offset = offset
        self.shift = shift
        self.p = self.n // self.k

    def indices(self, cycle: int) -> Tensor:
        """State indices observed at analysis ``cycle`` (1, 2, ...)."""
        o = (self.offset + (int(cycle) - 1) * self.shift) % self.k
        return torch.arange(o, self.n, self.k)

    def network(self, cycle: int, generator: torch.Generator | None = None) -> Observation:
        """The subset observed at ``cycle`` (``y`` NaN); ``generator`` is unused."""
        idx = self.indices(cycle)
        return self._index_observation(idx, cycle, self._std_for(self.p, idx))
