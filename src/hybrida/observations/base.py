"""Observations of one analysis time: values, operator H, error model R, locations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hybrida.observations.errors import ErrorModel

Operator = Callable[[Tensor], Tensor]


@dataclass
class Observation:
    """Observations y = H(x) + e valid at one analysis time.

    ``operator`` maps states ``(..., n)`` to ``(..., p)``; ``matrix`` is its
    ``(p, n)`` matrix when H is linear (None otherwise); ``locations`` are the
    observation positions in grid-index units ``(p,)`` used by localization
    (None where not defined). Missing values in ``y`` are NaN: call
    :meth:`valid` to drop them before an analysis.
    """

    y: Tensor
    operator: Operator
    error: ErrorModel
    locations: Tensor | None = None
    matrix: Tensor | None = None
    meta: dict = field(default_factory=dict)

    @property
    def p(self) -> int:
        """Number of observations."""
        return self.y.shape[-1]

    def H(self, x: Tensor) -> Tensor:
        """Apply the observation operator."""
        return self.operator(x)

    def valid(self) -> Observation:
        """The same observations with the missing (NaN) values masked out."""
        mask = torch.isfinite(self.y)
        if bool(mask.all()):
            return self
        idx = torch.nonzero(mask).squeeze(-1)
        op = self.operator
        return Observation(
            y=self.y[idx],
            operator=lambda x: op(x).index_select(-1, idx.to(x.device)),
            error=self.error.subset(idx),
            locations=None if self.locations is None else self.locations[idx],
            matrix=None if self.matrix is None else self.matrix[idx],
            meta=dict(self.meta),
        )
