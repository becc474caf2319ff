"""Sparse random point observations of layered doubly periodic 2-D fields (the QG testbed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError
from hybrida.observations.system import ObservationSystem

#: observable fields of :class:`RandomGridObs`
FIELDS = ("pv", "psi")


class RandomGridObs(ObservationSystem):
    """Observe ``p`` random grid points of some layers of a layered 2-D state, y = x[idx] + e.

    The state ``(..., n)`` holds ``nz`` layers of an ``(ny, nx)`` doubly
    periodic grid, layer-major then row-major (the layout of
    :class:`hybrida.models.qg.QGModel`): index l·ny·nx + j·nx + i is layer l,
    row j, column i. The points are drawn without replacement among the
    columns × ``layers``; ``p`` is a count or a fraction of them. With
    ``seed`` the network is drawn once (fixed network); without, anew each
    cycle with the generator passed to :meth:`network` (as
    :class:`~hybrida.observations.networks.RandomSubsetObs`).

    ``field="pv"`` observes the state itself (potential vorticity, a selection
    stored as indices); ``field="psi"`` the streamfunction ψ = inversion of q,
    which needs the QG parameters ``qg`` (a dict of
    :class:`~hybrida.models.qg.QGModel` keywords; linear in q, differentiable).
    Locations are ``(p, 2)`` (row, column) in grid units with
    ``meta["grid"] = (ny, nx)``: the LETKF then localizes with distances on
    the torus. Errors are uncorrelated with standard deviation ``std``, or
    ``layer_std`` (one per layer: the QG layers' PV differ ~8× in amplitude).
    """

    def __init__(
        self,
        n: int,
        p: float,
        std: float = 1.0,
        nx: int | None = None,
        ny: int | None = None,
        nz: int = 2,
        layers: Sequence[int] | None = None,
        field: str = "pv",
        qg: dict[str, Any] | None = None,
        seed: int | None = None,
        layer_std: Sequence[float] | None = None,
        every: int = 1,
        dtype: torch.dtype = torch.float64,
    ):
        name = type(self).__name__
        for key, v, low in (("n", n, 1), ("nz", nz, 1), ("every", every, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name}: {key} must be an integer >= {low}, got {v!r}")
        if n % nz:
            raise ValueError(f"{name}: n={n} is not a multiple of nz={nz}")
        cols = n // nz
        if nx is None:
            nx = ny if ny is not None else math.isqrt(cols)
        ny = cols // nx if ny is None else ny
        if nx < 1 or ny < 1 or nz * ny * nx != n:
            raise ValueError(f"{name}: nz*ny*nx = {nz}*{ny}*{nx} must equal n={n}; give nx (and ny)")
        self.n, self.nz, self.ny, self.nx, self.every, self.dtype = n, nz, ny, nx, every, dtype
        layers = list(range(nz)) if layers is None else [int(v) for v in layers]
        if not layers or any(not 0 <= v < nz for v in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"{name}: layers must be distinct integers in [0, {nz - 1}], got {layers}")
        self.layers = layers
        total = len(layers) * ny * nx
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise ValueError(f"{name}: p must be an int count or a float fraction, got {p!r}")  # noqa: TRY004
        if isinstance(p, float):
            if not 0.0 < p < 1.0:
                raise ValueError(f"{name}: a fractional p must lie in (0, 1), got {p}")
            p = max(1, round(p * total))
        if not 1 <= p <= total:
            raise ValueError(f"{name}: p must lie in [1, {total}] (observable points), got {p}")
        self.p = int(p)
        stds = [float(std)] * nz if layer_std is None else [float(v) for v in layer_std]
        if len(stds) != nz or not all(math.isfinite(v) and v > 0 for v in stds):
            raise ValueError(
                f"{name}: std must be finite and > 0 (layer_std: one per layer, {nz}), got {std}, {layer_std}"
            )
        self.std = stds
        if field not in FIELDS:
            raise ValueError(f"{name}: unknown field {field!r}; choose one of: {', '.join(FIELDS)}")
        self.field = field
        self._model = None
        if field == "psi":
            from hybrida.models.qg import QGModel

            if qg is None:
                raise ValueError(f"{name}: field='psi' needs the QG parameters qg={{nx: ..., rd: ..., ...}}")
            self._model = QGModel(**qg)
            if self._model.n != n:
                raise ValueError(f"{name}: the QG model of qg has n={self._model.n}, the state n={n}")
        self.seed = seed
        #: the fixed network's state indices (None when drawn anew each cycle)
        self.indices = None if seed is None else self._draw(torch.Generator().manual_seed(int(seed)))

    def _draw(self, generator: torch.Generator | None) -> Tensor:
        """Sorted state indices of ``p`` points drawn without replacement."""
        device = generator.device if generator is not None else None  # None: torch's default device
        cols = self.ny * self.nx
        k = torch.randperm(len(self.layers) * cols, generator=generator, device=device)[: self.p].cpu()
        layer = torch.tensor(self.layers)[k // cols]
        return (layer * cols + k % cols).sort().values

    def locations_of(self, idx: Tensor) -> Tensor:
        """(row, column) grid locations ``(p, 2)`` of state indices ``idx``."""
        h = idx % (self.ny * self.nx)
        return torch.stack((h // self.nx, h % self.nx), -1).to(self.dtype)

    def network(self, cycle: int, generator: torch.Generator | None = None) -> Observation:
        """The network at ``cycle`` (``y`` NaN): the fixed draw, or a fresh one from ``generator``."""
        idx = self.indices if self.indices is not None else self._draw(generator)
        meta = {"cycle": cycle, "network": type(self).__name__, "grid": (self.ny, self.nx),
                "field": self.field}
        common = {
            "y": torch.full((self.p,), float("nan"), dtype=self.dtype),
            "error": DiagonalError(torch.tensor(self.std, dtype=self.dtype)[idx // (self.ny * self.nx)] ** 2),
            "locations": self.locations_of(idx),
            "meta": meta,
        }
        if self._model is None:
            return Observation(
                operator=lambda x: x.index_select(-1, idx.to(x.device)), indices=idx, n=self.n, **common
            )
        model = self._model
        return Observation(
            operator=lambda x: model.streamfunction(x).index_select(-1, idx.to(x.device)), **common
        )

    def __repr__(self) -> str:
        return (
            f"RandomGridObs(n={self.n}, p={self.p}, grid=({self.nz}, {self.ny}, {self.nx}), "
            f"layers={self.layers}, field={self.field!r}, std={self.std}, every={self.every}, seed={self.seed})"
        )
