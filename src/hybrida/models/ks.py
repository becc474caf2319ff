"""The Kuramoto–Sivashinsky equation, pseudo-spectral in space and ETDRK4 in time."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.models.base import Model

#: treatments of the Nyquist mode's linear term (see :class:`KuramotoSivashinsky`)
NYQUIST = ("damped", "neutral")


def etdrk4_coefficients(hL: Tensor, n_contour: int = 32) -> dict[str, Tensor]:
    """ETDRK4 coefficients for the diagonal linear operator ``h·L`` (real, any shape).

    E = e^{hL}, E2 = e^{hL/2}, and Q, f1, f2, f3 (each divided by h) of
    Cox & Matthews (2002), with the phi-functions evaluated as means over a
    circle of radius 1 around each hL to avoid cancellation (Kassam &
    Trefethen 2005). Points lie on the upper half circle; the real part of
    their mean equals the full-circle mean since hL is real.
    """
    if n_contour < 4:
        raise ValueError(f"n_contour must be >= 4, got {n_contour}")
    hL = hL.to(torch.float64)
    j = torch.arange(1, n_contour + 1, dtype=torch.float64)
    roots = torch.exp(1j * math.pi * (j - 0.5) / n_contour)
    z = hL.unsqueeze(-1) + roots
    ez = torch.exp(z)

    def mean(expr: Tensor) -> Tensor:
        return expr.mean(-1).real

    return {
        "E": torch.exp(hL),
        "E2": torch.exp(hL / 2),
        "Q": mean((torch.exp(z / 2) - 1) / z),
        "f1": mean((-4 - z + ez * (4 - 3 * z + z**2)) / z**3),
        "f2": mean((2 + z + ez * (z - 2)) / z**3),
        "f3": mean((-4 - 3 * z - z**2 + ez * (4 - z)) / z**3),
    }


class KuramotoSivashinsky(Model):
    """Kuramoto–Sivashinsky u_t = -u u_x - u_xx - u_xxxx on a periodic domain.

    Fourier pseudo-spectral in space (``torch.fft.rfft``), exponential time
    differencing RK4 in time (Cox & Matthews 2002; Kassam & Trefethen 2005).
    Defaults follow Bocquet et al. (2019) / DAPPER ``KS/bocquet2019``:
    n=128 grid points on a domain of length 32π, dt=0.5. The Nyquist mode
    always has zero first derivative; ``nyquist`` sets its linear symbol:
    ``"neutral"`` (default) sets it to 0 as Kassam & Trefethen's (2005)
    kursiv.m and DAPPER's ``mods/KS`` do, so the Nyquist component of a state
    never changes (same trajectories as DAPPER to round-off); ``"damped"``
    keeps k^2 - k^4 (the even derivatives of that mode are exact on the grid). ``dealias`` applies the 2/3 rule to the
    nonlinear term (off by default, as in the references: at n=128 the
    aliased modes are damped at rate ~k^4). The spatial mean (k=0 mode) is
    conserved exactly.
    """

    def __init__(
        self,
        n: int = 128,
        length: float = 32.0 * math.pi,
        dt: float = 0.5,
        n_contour: int = 32,
        dealias: bool = False,
        nyquist: str = "neutral",
    ) -> None:
        if isinstance(n, bool) or int(n) != n or n < 4 or n % 2:
            raise ValueError(f"n must be an even integer >= 4, got {n}")
        length, dt = float(length), float(dt)
        if not math.isfinite(length) or length <= 0.0:
            raise ValueError(f"length must be a finite number > 0, got {length}")
        if not math.isfinite(dt) or dt <= 0.0:
            raise ValueError(f"dt must be a finite number > 0, got {dt}")
        if nyquist not in NYQUIST:
            raise ValueError(f"nyquist must be one of {', '.join(NYQUIST)}, got {nyquist!r}")
        self.nyquist = nyquist
        self.n, self.length, self.dt, self.dealias = int(n), length, dt, bool(dealias)
        #: grid points x_j = length·j/n, j = 1..n (Kassam & Trefethen 2005)
        self.grid = length * torch.arange(1, self.n + 1, dtype=torch.float64) / self.n
        m = torch.arange(self.n // 2 + 1, dtype=torch.float64)
        k = 2 * math.pi / length * m
        #: linear operator symbol of -d_xx - d_xxxx: k^2 - k^4
        self.L = k**2 - k**4
        if nyquist == "neutral":
            self.L[-1] = 0.0
        k_odd = k.clone()
        k_odd[-1] = 0.0  # odd derivative of the Nyquist mode is not representable
        if self.dealias:
            k_odd = torch.where(m <= self.n / 3, k_odd, torch.zeros_like(k_odd))
        self._g = -0.5j * k_odd  # N(v) = g · FFT(u^2) = FFT(-u u_x)
        coef = etdrk4_coefficients(dt * self.L, n_contour)
        for name in ("Q", "f1", "f2", "f3"):
            coef[name] = dt * coef[name]
        self._coef64 = coef
        self._cache: dict[tuple[torch.dtype, torch.device], dict[str, Tensor]] = {}
        self._x0: tuple[int, Tensor] | None = None

    def _coefficients(self, x: Tensor) -> dict[str, Tensor]:
        key = (x.dtype, x.device)
        if key not in self._cache:
            c = {name: v.to(dtype=x.dtype, device=x.device) for name, v in self._coef64.items()}
            cdtype = (
                torch.complex64
                if x.dtype in (torch.float32, torch.float16, torch.bfloat16)
                else torch.complex128
            )
            c["g"] = self._g.to(dtype=cdtype, device=x.device)
            c["L"] = self.L.to(dtype=x.dtype, device=x.device)
            self._cache[key] = c
        return self._cache[key]

    def _check(self, x: Tensor) -> None:
        self.check_state(x)
        if x.dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f"KuramotoSivashinsky: state must be float32 or float64, got {x.dtype}"
            )

    def _nonlinear(self, v: Tensor, g: Tensor) -> Tensor:
        u = torch.fft.irfft(v, n=self.n, dim=-1)
        return g * torch.fft.rfft(u * u, dim=-1)

    def tendency(self, x: Tensor, t: float = 0.0) -> Tensor:
        """Right-hand side -u u_x - u_xx - u_xxxx on the grid (spectral derivatives)."""
        self._check(x)
        c = self._coefficients(x)
        v = torch.fft.rfft(x, dim=-1)
        return torch.fft.irfft(c["L"] * v + self._nonlinear(v, c["g"]), n=self.n, dim=-1)

    def step(self, x: Tensor, t: float = 0.0) -> Tensor:
        """One ETDRK4 step of length ``dt`` (Cox & Matthews 2002, Kassam & Trefethen 2005)."""
        self._check(x)
        c = self._coefficients(x)
        g, E, E2, Q = c["g"], c["E"], c["E2"], c["Q"]
        v = torch.fft.rfft(x, dim=-1)
        Nv = self._nonlinear(v, g)
        a = E2 * v + Q * Nv
        Na = self._nonlinear(a, g)
        b = E2 * v + Q * Na
        Nb = self._nonlinear(b, g)
        cc = E2 * a + Q * (2 * Nb - Nv)
        Nc = self._nonlinear(cc, g)
        v_next = E * v + c["f1"] * Nv + 2 * c["f2"] * (Na + Nb) + c["f3"] * Nc
        return torch.fft.irfft(v_next, n=self.n, dim=-1)

    def initial_state(
        self, dtype: torch.dtype = torch.float64, spinup_time: float = 150.0
    ) -> Tensor:
        """A point on the attractor: cos(2πx/L)(1 + sin(2πx/L)) spun up ``spinup_time``.

        The start is Kassam & Trefethen's (2005) initial condition (for L=32π);
        the spin-up length follows DAPPER. Deterministic, computed once in
        float64 and cached.
        """
        n_steps = max(1, round(spinup_time / self.dt))
        if self._x0 is None or self._x0[0] != n_steps:
            theta = 2 * math.pi * self.grid / self.length
            with torch.no_grad():
                x = self.forecast(torch.cos(theta) * (1 + torch.sin(theta)), n_steps)
            self._x0 = (n_steps, x)
        return self._x0[1].to(dtype).clone()

    def __repr__(self) -> str:
        return (
            f"KuramotoSivashinsky(n={self.n}, length={self.length:.6g}, dt={self.dt}, "
            f"dealias={self.dealias}, nyquist={self.nyquist!r})"
        )
