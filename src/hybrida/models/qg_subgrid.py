"""Coarse-graining of the two-layer QG model, its subgrid PV forcing, and a parametrised coarse model.

Ross et al. (2023, JAMES, "Benchmarking of machine learning ocean subgrid
parameterizations in an idealized model") learn the subgrid forcing of pyqg's
two-layer model: with a coarse-graining operator ̄· from a high-resolution
grid to a low-resolution one,

    S_q = ̄(dq/dt)_hi (q) − (dq/dt)_lo (̄q),

the part of the coarse PV tendency that the low-resolution model misses
(their "total" forcing: advection, and everything else that does not
commute with ̄·). Here ̄· is spectral truncation to the low-resolution
wavenumbers (the lowest |k|, |l| < n_lo / 2, Nyquist modes zeroed); a
network S_θ(̄q) ≈ S_q is then added to the low-resolution tendency.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hybrida.models.qg import QGModel


def _check_pair(hi: QGModel, lo: QGModel) -> None:
    if (hi.L, hi.W) != (lo.L, lo.W):
        raise ValueError(f"coarse-graining: domains differ ({hi.L:g}x{hi.W:g} vs {lo.L:g}x{lo.W:g})")
    if lo.nx > hi.nx or lo.ny > hi.ny:
        raise ValueError(f"coarse-graining: low resolution {lo.ny}x{lo.nx} exceeds high {hi.ny}x{hi.nx}")


def truncate_spectrum(qh: Tensor, ny: int, nx: int) -> Tensor:
    """The rfft2 coefficients ``(..., NY, NX//2+1)`` of a field kept on an ``ny × nx`` grid.

    Keeps |l| < ny/2 and k < nx/2, zeroes the new Nyquist row and column, and
    rescales the unnormalised transform by (ny·nx)/(NY·NX) so that the field's
    grid values (not its sums) are preserved.
    """
    NY, NX = qh.shape[-2], 2 * (qh.shape[-1] - 1)
    out = qh.new_zeros(*qh.shape[:-2], ny, nx // 2 + 1)
    h = ny // 2
    out[..., :h, : nx // 2] = qh[..., :h, : nx // 2]
    out[..., h + 1 :, : nx // 2] = qh[..., NY - h + 1 :, : nx // 2]
    return out * (ny * nx / (NY * NX))


def pad_spectrum(qh: Tensor, NY: int, NX: int) -> Tensor:
    """Spectral interpolation of rfft2 coefficients ``(..., ny, nx//2+1)`` onto an ``NY × NX`` grid."""
    ny, nx = qh.shape[-2], 2 * (qh.shape[-1] - 1)
    out = qh.new_zeros(*qh.shape[:-2], NY, NX // 2 + 1)
    h = ny // 2
    out[..., :h, : nx // 2] = qh[..., :h, : nx // 2]
    out[..., NY - h + 1 :, : nx // 2] = qh[..., h + 1 :, : nx // 2]
    return out * (NY * NX / (ny * nx))


def coarsen(hi: QGModel, lo: QGModel, x: Tensor) -> Tensor:
    """The low-resolution state ``(..., lo.n)`` of a high-resolution PV state ``(..., hi.n)``."""
    _check_pair(hi, lo)
    return lo.physical(truncate_spectrum(hi.spectral(x), lo.ny, lo.nx))


def refine(lo: QGModel, hi: QGModel, x: Tensor) -> Tensor:
    """A high-resolution state ``(..., hi.n)`` with the spectrum of ``x`` ``(..., lo.n)`` (no small scales)."""
    _check_pair(hi, lo)
    return hi.physical(pad_spectrum(lo.spectral(x), hi.ny, hi.nx))


def subgrid_forcing(hi: QGModel, lo: QGModel, x: Tensor) -> Tensor:
    """S_q = ̄(dq/dt)_hi(q) − (dq/dt)_lo(̄q) ``(..., lo.n)`` at high-resolution states ``x`` (Ross et al. 2023)."""
    _check_pair(hi, lo)
    return coarsen(hi, lo, hi.tendency(x)) - lo.tendency(coarsen(hi, lo, x))


class ParametrizedQG(QGModel):
    """The low-resolution QG model plus a learned subgrid forcing S_θ(q).

    One step: q̂ ← filter · (RK4 step of the resolved tendency + dt · Ŝ_θ(q)),
    the forcing evaluated once per step at the step's start (as pyqg adds a
    parametrisation to its one-evaluation-per-step tendency). ``net`` maps
    normalised PV ``(B, 2, ny, nx)`` to normalised forcing; ``q_scale`` /
    ``s_scale`` ``(2,)`` are the per-layer standard deviations of PV and forcing
    used for the normalisation. ``net=None`` gives the plain model exactly.
    Other keyword arguments are :class:`QGModel`'s.
    """

    def __init__(
        self, net: nn.Module | None = None, q_scale: Tensor | None = None, s_scale: Tensor | None = None, **params
    ) -> None:
        super().__init__(**params)
        self.net = net
        ones = torch.ones(2, dtype=torch.float64)
        self.q_scale = (ones if q_scale is None else torch.as_tensor(q_scale, dtype=torch.float64)).reshape(2, 1, 1)
        self.s_scale = (ones if s_scale is None else torch.as_tensor(s_scale, dtype=torch.float64)).reshape(2, 1, 1)
        for name, s in (("q_scale", self.q_scale), ("s_scale", self.s_scale)):
            if not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
                raise ValueError(f"ParametrizedQG: {name} must be 2 finite values > 0")

    def forcing(self, x: Tensor) -> Tensor:
        """S_θ at the states ``x`` ``(..., n)`` in PV-tendency units (zero without a network)."""
        if self.net is None:
            return torch.zeros_like(x)
        grid = self.to_grid(x)
        lead = grid.shape[:-3]
        z = (grid / self.q_scale.to(x)).reshape(-1, 2, self.ny, self.nx)
        w = next(self.net.parameters(), None)
        s = self.net(z if w is None else z.to(w.dtype)).to(x.dtype)
        return (s.reshape(*lead, 2, self.ny, self.nx) * self.s_scale.to(x)).reshape(x.shape)

    def step_spectral(self, qh: Tensor) -> Tensor:
        new = super().step_spectral(qh)
        if self.net is None:
            return new
        s = self.forcing(self.physical(qh))
        return new + self._ops(qh.real.dtype, qh.device)["filtr"] * (self.dt * self.spectral(s))

    def __repr__(self) -> str:
        return "Parametrized" + super().__repr__() + ("" if self.net is None else " + S_θ")
