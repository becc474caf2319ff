"""The Lorenz (1963) three-variable convection model."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.models.base import ODEModel
from hybrida.models.integrators import plain_tensor_path

#: Reference initial truth of the Sakov et al. (2012) setup (DAPPER ``Lorenz63/sakov2012``).
X_STAR: tuple[float, float, float] = (1.509, -1.531, 25.46)


def l63_factors(sigma: float, rho: float, beta: float, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(W (3, 9), c (9,))`` with x W + c = [b | a | e] for the tendency f = a * b - e.

    b = (x2 - x1, rho - x3, x2), a = (sigma, x1, x1), e = (0, x2, beta x3): each entry of
    x W + c has at most two non-zero terms of 0/±1 weight (or one product beta x3), so the
    affine map is exact and f has the bits of sigma (x2 - x1), x1 (rho - x3) - x2, x1 x2 - beta x3.
    """
    W = torch.zeros(3, 9, dtype=dtype, device=device)
    c = torch.zeros(9, dtype=dtype, device=device)
    W[1, 0], W[0, 0], W[2, 1], W[1, 2] = 1.0, -1.0, -1.0, 1.0  # b
    c[1], c[3] = rho, sigma
    W[0, 4], W[0, 5] = 1.0, 1.0  # a
    W[1, 7], W[2, 8] = 1.0, beta  # e
    return W, c


def l63_tendency(x: Tensor, W: Tensor, c: Tensor) -> Tensor:
    """Lorenz-63 tendency a * b - e from one affine map [b | a | e] = x W + c (see :func:`l63_factors`)."""
    z = torch.addmm(c, x.reshape(-1, 3), W).view(x.shape[:-1] + (3, 3))
    b, a, e = z.unbind(-2)
    return a * b - e


def l63_rk4_steps(x: Tensor, W: Tensor, c: Tensor, dt: float, n_steps: int) -> Tensor:
    """``n_steps`` classical RK4 steps of Lorenz-63 in one TorchScript loop (no Python per operation).

    The arithmetic of :func:`l63_tendency` and :func:`~hybrida.models.integrators.rk4_step`,
    operation for operation, so the result is bit-identical to stepping in Python.
    """
    h = 0.5 * dt
    w = dt / 6.0
    shape = x.shape
    x = x.reshape(-1, 3)  # rows stay rows: the loop works on one (M, 3) matrix
    M = x.shape[0]
    for _ in range(n_steps):
        b, a, e = torch.addmm(c, x, W).view(M, 3, 3).unbind(1)
        k1 = a * b - e
        b, a, e = torch.addmm(c, x + k1 * h, W).view(M, 3, 3).unbind(1)
        k2 = a * b - e
        b, a, e = torch.addmm(c, x + k2 * h, W).view(M, 3, 3).unbind(1)
        k3 = a * b - e
        b, a, e = torch.addmm(c, x + k3 * dt, W).view(M, 3, 3).unbind(1)
        k4 = a * b - e
        x = x + torch.add(torch.add(k1, k2, alpha=2.0), k3, alpha=2.0).add_(k4) * w
    return x.reshape(shape)


def _scripted(fn):
    """``fn`` compiled by TorchScript, or None where this torch cannot (deprecated API): Python steps then."""
    try:
        return torch.jit.script(fn)
    except Exception:  # noqa: BLE001 - any failure to compile means: no fast path
        return None


#: the TorchScript loop of :func:`l63_rk4_steps` (None: not available, forecasts step in Python)
L63_RK4_SCRIPTED = _scripted(l63_rk4_steps)


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


class Lorenz63(ODEModel):
    """Lorenz-63 tendency integrated with RK4.

    dx/dt = sigma (y - x),  dy/dt = x (rho - z) - y,  dz/dt = x y - beta z
    (Lorenz 1963). Defaults are the classical chaotic parameters with the
    RK4 step dt = 0.01 of Sakov et al. (2012).
    """

    n = 3
    #: each leading-index row steps with the same bits whatever the batch around it
    #: (vectorised runs integrate their truths as one more ensemble member)
    rows_independent = True

    def __init__(
        self,
        sigma: float = 10.0,
        rho: float = 28.0,
        beta: float = 8.0 / 3.0,
        dt: float = 0.01,
    ) -> None:
        self.sigma = _positive("sigma", sigma)
        self.beta = _positive("beta", beta)
        rho = float(rho)
        if not math.isfinite(rho):
            raise ValueError(f"rho must be a finite number, got {rho}")
        self.rho = rho
        self.dt = _positive("dt", dt)
        self._factors: dict[tuple, tuple[Tensor, Tensor]] = {}

    def factors(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The affine map of :func:`l63_factors` for ``x``'s dtype and device (cached per parameters)."""
        key = (self.sigma, self.rho, self.beta, x.dtype, x.device)
        if key not in self._factors:
            self._factors[key] = l63_factors(self.sigma, self.rho, self.beta, x.dtype, x.device)
        return self._factors[key]

    def tendency(self, x: Tensor, t: float = 0.0) -> Tensor:
        """Lorenz-63 time derivative at ``x`` of shape (..., 3).

        sigma (x2 - x1), x1 (rho - x3) - x2, x1 x2 - beta x3 (same bits), computed as
        a * b - e from one small matrix product (:func:`l63_tendency`).
        """
        W, c = self.factors(x)
        return l63_tendency(x, W, c)

    def step(self, x: Tensor, t: float = 0.0) -> Tensor:
        """One RK4 step of length ``dt``."""
        self._check(x)
        return super().step(x, t)

    def forecast(self, x: Tensor, n_steps: int, t0: float = 0.0, trajectory: bool = False) -> Tensor:
        """``n_steps`` RK4 steps; without gradients to record, in one TorchScript loop (same bits).

        With autograd recording (grad mode on and ``x`` requiring grad) or under a
        ``torch.func`` transform, the steps run one by one in Python, as
        :meth:`~hybrida.models.base.Model.forecast` does.
        """
        if trajectory or n_steps < 1 or L63_RK4_SCRIPTED is None or not plain_tensor_path(x):
            return super().forecast(x, n_steps, t0, trajectory)
        self._check(x)
        W, c = self.factors(x)
        return L63_RK4_SCRIPTED(x, W, c, self.dt, int(n_steps))

    def _check(self, x: Tensor) -> None:
        self.check_state(x)
        if not x.is_floating_point():
            raise ValueError(f"Lorenz63: state must be a floating-point tensor, got {x.dtype}")

    def initial_state(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """Reference truth x* = (1.509, -1.531, 25.46) of Sakov et al. (2012)."""
        return torch.tensor(X_STAR, dtype=dtype)

    def __repr__(self) -> str:
        return f"Lorenz63(sigma={self.sigma}, rho={self.rho}, beta={self.beta:.6g}, dt={self.dt})"
