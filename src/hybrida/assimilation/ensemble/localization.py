"""Distance-based localization: Gaspari–Cohn taper, periodic distance, local-observation tables (1-D and 2-D torus)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

#: taper names accepted by :func:`taper_weights`
TAPERS = ("gaspari_cohn", "none")

#: a taper: a name of :data:`TAPERS`, or a function of the normalised distance r = d / c
#: (support r < 2) returning weights — the slot a learned localisation fills
Taper = str | Callable[[Tensor], Tensor]


def check_taper(taper: Taper | None, owner: str) -> Taper:
    """The taper itself (``None`` means ``"none"``), or a one-line error naming the choices."""
    taper = "none" if taper is None else taper
    if not callable(taper) and taper not in TAPERS:
        raise ValueError(
            f"{owner}: unknown taper '{taper}'; choose one of: {', '.join(TAPERS)}, "
            "or pass a function of the normalised distance d / c"
        )
    return taper


def gaspari_cohn(r: Tensor) -> Tensor:
    """Gaspari–Cohn 5th-order piecewise-rational correlation at r = d / c.

    Compactly supported: 1 at r=0, 0 for |r| >= 2 (Gaspari & Cohn 1999, eq. 4.10).
    """
    r = torch.as_tensor(r).abs()
    if not r.is_floating_point():
        r = r.to(torch.get_default_dtype())
    r1 = r.clamp(max=1.0)
    inner = (((-0.25 * r1 + 0.5) * r1 + 0.625) * r1 - 5.0 / 3.0) * r1 * r1 + 1.0
    r2 = r.clamp(min=1.0, max=2.0)
    outer = (
        ((((r2 / 12.0 - 0.5) * r2 + 0.625) * r2 + 5.0 / 3.0) * r2 - 5.0) * r2
        + 4.0
        - 2.0 / (3.0 * r2)
    )
    return torch.where(r <= 1.0, inner, torch.where(r < 2.0, outer, torch.zeros_like(r)))


def periodic_distance(a: Tensor, b: Tensor, L: float) -> Tensor:
    """Shortest distance |a - b| on a periodic domain of length ``L`` (broadcasting)."""
    d = torch.remainder(a - b, L)
    return torch.minimum(d, L - d)


def taper_weights(dist: Tensor, half_width: float, taper: Taper) -> Tensor:
    """Localization weights of distances ``dist`` for a taper of half-width c (support 2c).

    ``"gaspari_cohn"``: GC(d/c); ``"none"``: 1 inside the support d < 2c, 0 outside; a
    callable ``f``: f(d/c) inside the support, 0 outside (a learned taper, Wang et al. 2023).
    """
    if callable(taper):
        inside = (dist < 2.0 * half_width).to(dist.dtype)
        return taper(dist / half_width).to(dist.dtype) * inside
    if taper == "gaspari_cohn":
        return gaspari_cohn(dist / half_width)
    if taper == "none":
        return (dist < 2.0 * half_width).to(dist.dtype)
    raise ValueError(f"unknown taper '{taper}'; choose one of: {', '.join(TAPERS)}")


@dataclass
class LocalTable:
    """Padded local-observation table for grid points ``start:stop``.

    ``index`` ``(c, m)`` are observation indices, ``weight`` ``(c, m)`` their
    taper weights (0 on padding entries, whose index is a valid dummy).
    """

    index: Tensor
    weight: Tensor


class Neighbours:
    """Observations within the taper support 2c of each grid point of a periodic 1-D grid.

    Grid point i sits at coordinate i (domain length n). Observation locations
    are sorted once; for each point the observations within distance 2c form a
    contiguous run of the periodically extended sorted list, found with
    ``searchsorted`` for all points at once. :meth:`table` then builds the
    padded ``(points, m_max)`` index/weight table for any block of points.
    """

    def __init__(self, locations: Tensor, n: int, half_width: float, taper: Taper = "gaspari_cohn"):
        if locations.ndim != 1:
            raise ValueError(
                f"observation locations must be 1-D (p,), got shape {tuple(locations.shape)}"
            )
        if not bool(torch.isfinite(locations).all()):
            raise ValueError("observation locations contain NaN or inf")
        if half_width <= 0:
            raise ValueError(f"localization half-width must be > 0, got {half_width}")
        self.n, self.half_width = int(n), float(half_width)
        self.taper = check_taper(taper, "Neighbours")
        loc = torch.remainder(locations.detach().to(torch.float64), float(n))
        self.locations = locations.detach().clone()
        self.p = int(loc.shape[0])
        support = 2.0 * self.half_width
        device = loc.device
        points = torch.arange(self.n, dtype=torch.float64, device=device)
        if self.p == 0:
            self._global = False
            self.start = torch.zeros(self.n, dtype=torch.long, device=device)
            self.count = torch.zeros(self.n, dtype=torch.long, device=device)
            self.m_max = 0
            return
        # a support window at least as long as the domain sees every observation once
        self._global = 2.0 * support >= self.n
        if self._global:
            self.order = torch.arange(self.p, device=device)
            self.start = torch.zeros(self.n, dtype=torch.long, device=device)
            self.count = torch.full((self.n,), self.p, dtype=torch.long, device=device)
            self.m_max = self.p
            self._loc = loc
            return
        sloc, self.order = torch.sort(loc)
        ext = torch.cat([sloc - n, sloc, sloc + n])
        lo = torch.searchsorted(ext, points - support, right=True)
        hi = torch.searchsorted(ext, points + support, right=False)
        self.start, self.count = lo, hi - lo
        self.m_max = int(self.count.max())
        self._loc = loc

    def matches(self, locations: Tensor, n: int, half_width: float, taper: Taper) -> bool:
        """Whether this table was built for the same locations, grid and taper."""
        return (
            n == self.n
            and half_width == self.half_width
            and (taper is self.taper or (isinstance(taper, str) and taper == self.taper))
            and locations.shape == self.locations.shape
            and locations.device == self.locations.device
            and bool(torch.equal(locations, self.locations))
        )

    def table(self, start: int = 0, stop: int | None = None) -> LocalTable:
        """The padded local table of grid points ``start:stop``."""
        stop = self.n if stop is None else stop
        return self.table_at(torch.arange(start, stop, device=self.start.device))

    def table_at(self, points: Tensor) -> LocalTable:
        """The padded local table of the grid points ``points`` (integer, taken modulo n)."""
        device = self.start.device
        points = torch.remainder(points.to(device=device, dtype=torch.long), self.n)
        c = int(points.shape[0])
        if self.m_max == 0:
            empty = torch.zeros(c, 0, device=device)
            return LocalTable(empty.long(), empty.double())
        slot = torch.arange(self.m_max, device=device)
        count, first = self.count[points, None], self.start[points, None]
        valid = slot < count
        index = self.order[torch.remainder(first + slot, self.p)]
        dist = periodic_distance(points[:, None].double(), self._loc[index], float(self.n))
        weight = taper_weights(dist, self.half_width, self.taper) * valid
        return LocalTable(index, weight)


def check_grid(grid: object, n: int, owner: str) -> tuple[int, int]:
    """``grid`` as ``(ny, nx)`` positive ints dividing ``n`` (layers of ny·nx points), or a ValueError."""
    try:
        ny, nx = (int(g) for g in grid)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: grid must be a pair (ny, nx) of integers, got {grid!r}") from None
    if ny < 1 or nx < 1 or n % (ny * nx):
        raise ValueError(
            f"{owner}: grid (ny, nx) = ({ny}, {nx}) must be positive and ny*nx must divide the state size n={n}"
        )
    return ny, nx


class Neighbours2D:
    """Observations within the taper support 2c of each point of layered doubly periodic 2-D grids.

    The state holds n / (ny·nx) layers of an ``(ny, nx)`` grid, layer-major
    then row-major: state index i sits at row (i mod ny·nx) // nx, column
    i mod nx; all layers of a column share its location (no vertical
    localization). Observation ``locations`` ``(p, 2)`` are (row, column) in
    grid units; distances are Euclidean on the torus ny × nx. The padded
    ``(ny·nx, m_max)`` table of one layer is built once (in chunks of rows,
    bounded memory) and gathered by :meth:`table_at`, the interface of
    :class:`Neighbours`.
    """

    #: distance-matrix elements per chunk while building the table
    CHUNK_ELEMENTS = 2**22

    def __init__(
        self,
        locations: Tensor,
        n: int,
        half_width: float,
        taper: Taper = "gaspari_cohn",
        grid: tuple[int, int] = (1, 1),
    ):
        self.grid = check_grid(grid, n, "Neighbours2D")
        if locations.ndim != 2 or locations.shape[-1] != 2:
            raise ValueError(
                f"2-D observation locations must have shape (p, 2) (row, column), got {tuple(locations.shape)}"
            )
        if not bool(torch.isfinite(locations).all()):
            raise ValueError("observation locations contain NaN or inf")
        if half_width <= 0:
            raise ValueError(f"localization half-width must be > 0, got {half_width}")
        self.n, self.half_width = int(n), float(half_width)
        self.taper = check_taper(taper, "Neighbours2D")
        self.locations = locations.detach().clone()
        self.p = int(locations.shape[0])
        ny, nx = self.grid
        device = locations.device
        loc = locations.detach().to(torch.float64)

        def axis(size: int, coord: Tensor) -> Tensor:
            grid_line = torch.arange(size, device=device, dtype=torch.float64)[:, None]
            return periodic_distance(grid_line, coord, float(size)) ** 2

        # squared torus distance = dy²(row, obs) + dx²(column, obs): two small tables, one add
        dy2, dx2 = axis(ny, loc[:, 0]), axis(nx, loc[:, 1])
        support2 = (2.0 * self.half_width) ** 2
        rows_per_chunk = max(1, self.CHUNK_ELEMENTS // max(self.p * nx, 1))
        parts: list[tuple[Tensor, Tensor]] = []
        for s in range(0, ny, rows_per_chunk):
            d2 = (dy2[s : s + rows_per_chunk, None, :] + dx2[None, :, :]).reshape(-1, self.p)
            inside = d2 < support2
            count = inside.sum(-1)
            m = int(count.max()) if self.p else 0
            # pack each point's observations inside the support left, in index order (no sort):
            # nonzero lists them row by row, so slot = rank within the row
            r, j = inside.nonzero(as_tuple=True)
            first = torch.cumsum(count, 0) - count
            slot = torch.arange(r.shape[0], device=device) - first[r]
            order = torch.zeros(inside.shape[0], m, dtype=torch.long, device=device)
            weight = torch.zeros(inside.shape[0], m, dtype=torch.float64, device=device)
            order[r, slot] = j
            weight[r, slot] = taper_weights(d2[r, j].sqrt(), self.half_width, self.taper)
            parts.append((order, weight))
        self.m_max = max(o.shape[1] for o, _ in parts)
        pad = [(torch.nn.functional.pad(o, (0, self.m_max - o.shape[1])),
                torch.nn.functional.pad(w, (0, self.m_max - w.shape[1]))) for o, w in parts]
        self._index = torch.cat([o for o, _ in pad])
        self._weight = torch.cat([w for _, w in pad])

    def matches(self, locations: Tensor, n: int, half_width: float, taper: Taper) -> bool:
        """Whether this table was built for the same locations, state size and taper."""
        return (
            n == self.n
            and half_width == self.half_width
            and (taper is self.taper or (isinstance(taper, str) and taper == self.taper))
            and locations.shape == self.locations.shape
            and locations.device == self.locations.device
            and bool(torch.equal(locations, self.locations))
        )

    def table_at(self, points: Tensor) -> LocalTable:
        """The padded local table of the state indices ``points`` (any layer)."""
        ny, nx = self.grid
        h = torch.remainder(points.to(device=self._index.device, dtype=torch.long), ny * nx)
        return LocalTable(self._index[h], self._weight[h])
