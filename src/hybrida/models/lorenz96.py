"""The Lorenz (1996) one-scale model on a periodic ring."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.models.base import ODEModel


def _shifted(x: Tensor) -> tuple[Tensor, Tensor]:
    """x_{i+1} - x_{i-2} and (a view) x_{i-1} from one periodic padding of ``x``.

    One ``cat`` replaces three ``torch.roll`` copies: with xp = [x_{n-2}, x_{n-1}, x, x_0],
    xp[i + 3] = x_{i+1}, xp[i] = x_{i-2}, xp[i + 1] = x_{i-1}.
    """
    xp = torch.cat((x[..., -2:], x, x[..., :1]), -1)
    return xp[..., 3:] - xp[..., :-3], xp[..., 1:-2]


def l96_advection(x: Tensor) -> Tensor:
    """Advection-plus-damping part (x_{i+1} - x_{i-2}) x_{i-1} - x_i on a periodic ring.

    Lorenz (1996); acts on the last dimension, no forcing.
    """
    d, xm1 = _shifted(x)
    return torch.addcmul(-x, d, xm1)


def l96_tendency(x: Tensor, F: float | Tensor) -> Tensor:
    """Full Lorenz-96 tendency (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F in four tensor passes.

    Out-of-place (differentiable, jvp/vjp-safe): pad, subtract, F - x, fused multiply-add.
    """
    d, xm1 = _shifted(x)
    return torch.addcmul(F - x, d, xm1)


#: grid points per chunk of an RK4 step times leading size (keeps the temporaries cache-sized)
CHUNK_ELEMENTS = 2**18
#: smallest chunk (grid points) worth a separate pass
MIN_CHUNK_POINTS = 1024
#: halo of an RK4 step: each of the 4 stages needs x_{i-2} .. x_{i+1}
_HALO_LEFT, _HALO_RIGHT = 8, 4


def _segment_tendency(z: Tensor, F: float | Tensor) -> Tensor:
    """Tendency at positions 2 .. len-2 of a non-periodic segment ``z`` (drops 2 left, 1 right)."""
    return torch.addcmul(F - z[..., 2:-1], z[..., 3:] - z[..., :-3], z[..., 1:-2])


def _segment_rk4(z: Tensor, F: float | Tensor, Fp: Tensor | None, dt: float) -> Tensor:
    """Classical RK4 step of L96 on a segment with halo (8 left, 4 right); returns the interior.

    x + dt/6 (k1 + 2 k2 + 2 k3 + k4) as in :func:`hybrida.models.integrators.rk4_step`,
    with the stages on shrinking windows and scaled adds fused (``alpha=``).
    ``Fp``: forcing per position aligned with ``z`` (or None to use ``F``).
    """

    def f(x: Tensor, off: int) -> Tensor:
        if Fp is None:
            return _segment_tendency(x, F)
        return _segment_tendency(x, Fp[..., off + 2 : off + x.shape[-1] - 1])

    h = 0.5 * dt
    k1 = f(z, 0)  # positions 2 .. -1
    k2 = f(torch.add(z[..., 2:-1], k1, alpha=h), 2)  # 4 .. -2
    k3 = f(torch.add(z[..., 4:-2], k2, alpha=h), 4)  # 6 .. -3
    k4 = f(torch.add(z[..., 6:-3], k3, alpha=dt), 6)  # 8 .. -4
    acc = torch.add(k1[..., 6:-3], k2[..., 4:-2], alpha=2.0)
    acc = torch.add(acc, k3[..., 2:-1], alpha=2.0)
    return torch.add(z[..., 8:-4], torch.add(acc, k4), alpha=dt / 6.0)


def _periodic_pad(v: Tensor, n: int) -> Tensor:
    """``v`` with 8 periodic halo entries on the left and 4 on the right (any n >= 1)."""
    t = v if n >= _HALO_LEFT else v.tile((1 + (_HALO_LEFT - 1) // n,))
    return torch.cat((t[..., -_HALO_LEFT:], v, t[..., :_HALO_RIGHT]), -1)


def l96_rk4_step(x: Tensor, F: float | Tensor, dt: float) -> Tensor:
    """One RK4 step of the periodic Lorenz-96 model, in cache-sized chunks of grid points.

    The state is padded periodically once (halo 8 left, 4 right) and stepped in
    chunks of about ``CHUNK_ELEMENTS`` elements: same arithmetic as the
    unchunked step (bit-identical), out-of-place ops only (autograd, jvp, vjp),
    but the temporaries stay in cache and avoid large allocations (measured
    ≈10x faster than the roll-based step for a 20 × 10^6 float64 state on CPU).
    """
    n = x.shape[-1]
    Fp = (
        _periodic_pad(F, n)
        if isinstance(F, Tensor) and F.ndim > 0 and F.shape[-1] == n and n > 1
        else None
    )
    xp = _periodic_pad(x, n)
    rows = max(1, x.numel() // max(n, 1))
    L = max(MIN_CHUNK_POINTS, CHUNK_ELEMENTS // rows)
    if L >= n:
        return _segment_rk4(xp, F, Fp, dt)
    parts = []
    for a in range(0, n, L):
        b = min(a + L, n)
        seg = xp[..., a : b + _HALO_LEFT + _HALO_RIGHT]
        Fs = None if Fp is None else Fp[..., a : b + _HALO_LEFT + _HALO_RIGHT]
        parts.append(_segment_rk4(seg, F, Fs, dt))
    return torch.cat(parts, -1)


def _check_forcing(F: float | Tensor, n: int) -> float | Tensor:
    if isinstance(F, Tensor):
        if not F.is_floating_point():
            raise ValueError(f"F must be a floating-point tensor, got dtype {F.dtype}")
        if F.ndim > 0 and F.shape[-1] not in (1, n):
            raise ValueError(
                f"tensor F must have last dimension 1 or n={n}, got shape {tuple(F.shape)}"
            )
        return F
    F = float(F)
    if not math.isfinite(F):
        raise ValueError(f"F must be finite, got {F}")
    return F


#: spun-up initial states by (n, F, dt, spin-up steps), for rings up to SEED_ALL_ABOVE variables
_SPUN_UP: dict[tuple, Tensor] = {}

#: above this size :meth:`Lorenz96.initial_state` kicks every variable, not x_0 alone
SEED_ALL_ABOVE = 1000


class Lorenz96(ODEModel):
    """Lorenz-96 tendency dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F, integrated with RK4.

    Periodic indices (Lorenz 1996). Defaults n=40, F=8, dt=0.05 follow
    Sakov & Oke (2008). ``F`` may be a float or a tensor broadcastable to the
    state, e.g. shape () or (n,) or (N, 1) per member; gradients flow into a
    tensor ``F`` (parameter estimation).
    """

    def __init__(self, n: int = 40, F: float | Tensor = 8.0, dt: float = 0.05) -> None:
        if isinstance(n, bool) or int(n) != n or n < 4:
            raise ValueError(f"n must be an integer >= 4, got {n}")
        dt = float(dt)
        if not math.isfinite(dt) or dt <= 0.0:
            raise ValueError(f"dt must be a finite number > 0, got {dt}")
        self.n = int(n)
        self.F = _check_forcing(F, self.n)
        self.dt = dt
        self._x0: tuple[int, Tensor] | None = None

    @property
    def rows_independent(self) -> bool:
        """Each leading-index row steps with the same bits whatever the batch (not with a per-member ``F``)."""
        return not isinstance(self.F, Tensor) or self.F.ndim <= 1

    def _forcing(self, x: Tensor) -> float | Tensor:
        F = self.F
        if isinstance(F, Tensor):
            return F.to(dtype=x.dtype, device=x.device)
        return F

    def tendency(self, x: Tensor, t: float = 0.0) -> Tensor:
        """Lorenz-96 time derivative at ``x`` of shape (..., n)."""
        return l96_tendency(x, self._forcing(x))

    def step(self, x: Tensor, t: float = 0.0) -> Tensor:
        """One RK4 step of length ``dt``."""
        self.check_state(x)
        if not x.is_floating_point():
            raise ValueError(f"Lorenz96: state must be a floating-point tensor, got {x.dtype}")
        return l96_rk4_step(x, self._forcing(x), self.dt)

    def initial_state(self, dtype: torch.dtype = torch.float64, spinup_steps: int = 1000) -> Tensor:
        """A point on the attractor: F·1 with x_0 += 0.01, spun up ``spinup_steps`` steps.

        Deterministic; computed once in float64 and cached. With a tensor
        ``F`` the forcing value at first call is used. F·1 is a fixed point
        and the chaos started at x_0 spreads along the ring at only ~40
        variables per time unit, so for n > :data:`SEED_ALL_ABOVE` every
        variable gets its own 0.01-sized kick (a fixed-seed draw): a lone kick
        would leave most of a 10^6-variable ring at rest after the spin-up.
        """
        key = None if isinstance(self.F, Tensor) else (self.n, float(self.F), float(self.dt), spinup_steps)
        if key in _SPUN_UP:  # shared by instances: sweeps build one model per run
            self._x0 = (spinup_steps, _SPUN_UP[key])
        if self._x0 is None or self._x0[0] != spinup_steps:
            with torch.no_grad():
                F = self.F.detach().double().cpu() if isinstance(self.F, Tensor) else self.F
                x = F * torch.ones(self.n, dtype=torch.float64)
                if self.n > SEED_ALL_ABOVE:
                    x += 0.01 * torch.randn(self.n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
                else:
                    x[..., 0] += 0.01
                x = self.forecast(x, spinup_steps)
            self._x0 = (spinup_steps, x)
            if key is not None and self.n <= SEED_ALL_ABOVE:
                _SPUN_UP[key] = x
        return self._x0[1].to(dtype).clone()

    def __repr__(self) -> str:
        F = f"tensor{tuple(self.F.shape)}" if isinstance(self.F, Tensor) else self.F
        return f"Lorenz96(n={self.n}, F={F}, dt={self.dt})"
