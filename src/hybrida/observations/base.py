"""Observations of one analysis time: values, operator H, error model R, locations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from hybrida.device import to_device
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

    A selection H x = x[..., indices] is stored as its ``indices`` and the state
    size ``n`` only: ``matrix`` is then formed on demand (and not kept), so an
    identity network of 10^6 variables costs 8 MB, not 8 TB, and only methods
    that need a dense H (variational, OI) pay for it.
    """

    y: Tensor
    operator: Operator
    error: ErrorModel
    locations: Tensor | None = None
    matrix: Tensor | None = field(default=None, repr=False, compare=False)
    meta: dict = field(default_factory=dict)
    #: H x = x[..., indices] (a selection operator), with ``n`` the state size
    indices: Tensor | None = field(default=None, repr=False)
    n: int | None = None

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
            matrix=None if self.stored_matrix is None else self.stored_matrix[idx],
            meta=dict(self.meta),
            indices=None if self.indices is None else self.indices[idx],
            n=self.n,
        )

    def to_device(self, device: torch.device | str) -> Observation:
        """These observations with ``y``, R, locations, H and indices on ``device`` (itself when already there).

        The operator follows its input's device; a run on a GPU moves each cycle's
        network there once, so the analysis sees one device.
        """
        device = torch.device(device)

        def move(t: Tensor | None) -> Tensor | None:
            return t if t is None or t.device == device else t.to(device)

        stored = self.stored_matrix
        here = [t for t in (self.y, self.locations, stored, self.indices) if t is not None]
        error = self.error.to_device(device)
        meta = to_device(self.meta, device)  # e.g. a gross-error mask, a bias
        if all(t.device == device for t in here) and error is self.error and meta is self.meta:
            return self
        return replace(
            self, y=move(self.y), error=error, locations=move(self.locations),
            matrix=move(stored), indices=move(self.indices), meta=meta,
        )

    @property
    def stored_matrix(self) -> Tensor | None:
        """The matrix given at construction (None for a selection stored as indices)."""
        return self.__dict__.get("_matrix")


#: largest dense H (elements) formed from indices on demand: 2^27 float64 = 1 GiB
DENSE_LIMIT = 2**27


def selection_matrix(indices: Tensor, n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The ``(p, n)`` 0/1 matrix of H x = x[..., indices]; a ValueError beyond :data:`DENSE_LIMIT` elements."""
    p = int(indices.numel())
    if p * n > DENSE_LIMIT:
        raise ValueError(
            f"observation operator: a dense H of {p} x {n} would take {p * n * 8 / 2**30:.0f} GiB; "
            "this method needs H as a matrix: use an ensemble method (ETKF, LETKF, EnKF), "
            "which apply H by index, or fewer variables"
        )
    matrix = torch.zeros(p, n, dtype=dtype, device=indices.device)
    matrix[torch.arange(p, device=indices.device), indices.to(torch.long)] = 1.0
    return matrix


def _get_matrix(self: Observation) -> Tensor | None:
    stored = self.__dict__.get("_matrix")
    if stored is None and self.indices is not None:
        if self.n is None:
            raise ValueError("Observation: indices given without the state size n")
        return selection_matrix(self.indices, self.n, self.y.dtype)
    return stored


def _set_matrix(self: Observation, value: Tensor | None) -> None:
    self.__dict__["_matrix"] = value


# a property behind the dataclass field: selections form their dense H only when asked
Observation.matrix = property(  # type: ignore[assignment]
    _get_matrix, _set_matrix, doc="The (p, n) matrix of a linear H (formed from ``indices`` on demand), else None."
)
