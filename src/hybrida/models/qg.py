"""Two-layer quasi-geostrophic model on a doubly periodic domain (pyqg's ``QGModel`` in torch)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.models.base import Model

#: time-stepping schemes of :class:`QGModel` (one step each, filter applied after the step)
SCHEMES = ("rk4", "euler")


class QGModel(Model):
    """Two-layer QG potential vorticity q = (q1, q2) in a doubly periodic channel.

    The PV anomalies are advected by the eddy flow plus the mean shear flow
    (U1, U2), and by the eddies across the mean PV gradient Q_y (Flierl 1978;
    pyqg's ``QGModel``, Abernathey et al. 2022):

        ∂q_i/∂t + (U_i + u_i) ∂q_i/∂x + v_i ∂q_i/∂y + Q_{y,i} ∂ψ_i/∂x = -δ_{i2} r_ek ∇²ψ_2,
        q1 = ∇²ψ1 + F1 (ψ2 - ψ1),   q2 = ∇²ψ2 + F2 (ψ1 - ψ2),

    with F1 = rd⁻² / (1 + δ), F2 = δ F1, δ = H1/H2, Q_y1 = β + F1 (U1 - U2),
    Q_y2 = β - F2 (U1 - U2), (u, v) = (-∂ψ/∂y, ∂ψ/∂x). Pseudo-spectral in space
    (``torch.fft.rfft2``; the mean mode ψ̂(0, 0) = 0); after every step the
    spectral PV is multiplied by pyqg's exponential filter
    exp(-filterfac (κ* - 0.65π)⁴) for κ* = |(k dx, l dy)| > 0.65π (Arbic &
    Flierl 2003), which removes the enstrophy cascading to the grid scale
    (the dealiasing of pyqg). The tendency is pyqg's to round-off.

    pyqg steps with Adams–Bashforth 3, which needs past tendencies; a hybrida
    model step is a function of the state alone, so ``scheme="rk4"`` (default)
    takes one classical RK4 step on the spectral PV, and ``"euler"`` one
    forward-Euler step (pyqg-jax's ``EulerStepper``, for step-level checks).

    State layout: ``x[..., n]`` with n = 2·ny·nx holds q in physical space,
    layer-major then row-major: x[..., l·ny·nx + j·nx + i] = q_l(y_j, x_i),
    i.e. ``x.reshape(..., 2, ny, nx)`` with x along the last axis (pyqg's
    ``(nz, ny, nx)`` array order). Units are pyqg's (s⁻¹ for q, s for ``dt``).
    Defaults are pyqg's (nx=64, L=10⁶ m, β=1.5·10⁻¹¹, rd=15 km, δ=0.25,
    U1=0.025 m/s, U2=0, r_ek=5.787·10⁻⁷ s⁻¹, dt=7200 s). ``spinup_time`` and
    ``seed`` set :meth:`initial_state`.
    """

    nz = 2

    def __init__(
        self,
        nx: int = 64,
        ny: int | None = None,
        L: float = 1e6,
        W: float | None = None,
        beta: float = 1.5e-11,
        rd: float = 15000.0,
        delta: float = 0.25,
        U1: float = 0.025,
        U2: float = 0.0,
        rek: float = 5.787e-7,
        filterfac: float = 23.6,
        dt: float = 7200.0,
        scheme: str = "rk4",
        spinup_time: float = 3 * 360 * 86400.0,
        seed: int = 0,
    ) -> None:
        ny = nx if ny is None else ny
        for name, v in (("nx", nx), ("ny", ny)):
            if isinstance(v, bool) or int(v) != v or v < 4 or v % 2:
                raise ValueError(f"QGModel: {name} must be an even integer >= 4, got {v}")
        W = L if W is None else W
        for name, v in (("L", L), ("W", W), ("rd", rd), ("delta", delta), ("dt", dt)):
            if not math.isfinite(float(v)) or float(v) <= 0:
                raise ValueError(f"QGModel: {name} must be a finite number > 0, got {v}")
        for name, v in (("beta", beta), ("U1", U1), ("U2", U2), ("rek", rek), ("filterfac", filterfac)):
            if not math.isfinite(float(v)):
                raise ValueError(f"QGModel: {name} must be finite, got {v}")
        if rek < 0 or filterfac < 0:
            raise ValueError(f"QGModel: rek and filterfac must be >= 0, got {rek}, {filterfac}")
        if not math.isfinite(float(spinup_time)) or spinup_time < 0:
            raise ValueError(f"QGModel: spinup_time must be finite and >= 0, got {spinup_time}")
        self.spinup_time, self.seed = float(spinup_time), int(seed)
        if scheme not in SCHEMES:
            raise ValueError(f"QGModel: unknown scheme {scheme!r}; choose one of: {', '.join(SCHEMES)}")
        self.nx, self.ny = int(nx), int(ny)
        self.L, self.W = float(L), float(W)
        self.beta, self.rd, self.delta = float(beta), float(rd), float(delta)
        self.U1, self.U2, self.rek = float(U1), float(U2), float(rek)
        self.filterfac, self.dt, self.scheme = float(filterfac), float(dt), scheme
        self.n = self.nz * self.ny * self.nx
        self.F1 = self.rd**-2 / (1.0 + self.delta)
        self.F2 = self.delta * self.F1
        self.Qy = (self.beta + self.F1 * (self.U1 - self.U2), self.beta - self.F2 * (self.U1 - self.U2))
        self.dx, self.dy = self.L / self.nx, self.W / self.ny
        # wavenumbers as pyqg: k along x (rfft axis, last), l along y
        k = torch.fft.rfftfreq(self.nx, d=self.L / (2 * math.pi * self.nx), dtype=torch.float64)
        l_ = torch.fft.fftfreq(self.ny, d=self.W / (2 * math.pi * self.ny), dtype=torch.float64)
        self.k, self.l = torch.meshgrid(k, l_, indexing="xy")  # (ny, nx//2+1)
        self.wv2 = self.k**2 + self.l**2
        wvx = torch.sqrt((self.k * self.dx) ** 2 + (self.l * self.dy) ** 2)
        cphi = 0.65 * math.pi
        self.filtr = torch.where(
            wvx <= cphi, torch.ones_like(wvx), torch.exp(-self.filterfac * (wvx - cphi) ** 4)
        )
        self._cache: dict[tuple[torch.dtype, torch.device], dict[str, Tensor]] = {}
        self._x0: tuple[tuple, Tensor] | None = None

    # -- spectral operators -------------------------------------------------------------

    def _ops(self, dtype: torch.dtype, device: torch.device) -> dict[str, Tensor]:
        """Spectral multipliers in ``dtype`` on ``device`` (cached)."""
        key = (dtype, device)
        if key not in self._cache:
            wv2 = self.wv2
            det = wv2 * (wv2 + self.F1 + self.F2)  # det of [[-(κ²+F1), F1], [F2, -(κ²+F2)]]
            inv_det = torch.where(det > 0, 1.0 / torch.where(det > 0, det, 1.0), 0.0)
            # ψ̂ = A⁻¹ q̂ with A⁻¹ = [[-(κ²+F2), -F1], [-F2, -(κ²+F1)]] / det; ψ̂(0,0) = 0
            inv = torch.stack(
                [
                    torch.stack([-(wv2 + self.F2), torch.full_like(wv2, -self.F1)]),
                    torch.stack([torch.full_like(wv2, -self.F2), -(wv2 + self.F1)]),
                ]
            ) * inv_det
            ik, il = 1j * self.k, 1j * self.l
            Qy = torch.tensor(self.Qy, dtype=torch.float64).reshape(2, 1, 1)
            Ubg = torch.tensor((self.U1, self.U2), dtype=torch.float64).reshape(2, 1, 1)
            rdt = {torch.float32: torch.float32}.get(dtype, torch.float64)
            cdt = torch.complex64 if rdt == torch.float32 else torch.complex128
            ops = {
                "inv": inv.to(dtype=rdt, device=device),
                "ik": ik.to(dtype=cdt, device=device),
                "il": il.to(dtype=cdt, device=device),
                "ikQy": (Qy * ik).to(dtype=cdt, device=device),
                "Ubg": Ubg.to(dtype=rdt, device=device),
                # bottom drag acts on the lower layer only
                "drag": torch.stack((torch.zeros_like(wv2), self.rek * wv2)).to(dtype=rdt, device=device),
                "filtr": self.filtr.to(dtype=rdt, device=device),
                "wv2": self.wv2.to(dtype=rdt, device=device),
            }
            self._cache[key] = ops
        return self._cache[key]

    def _check(self, x: Tensor) -> None:
        self.check_state(x)
        if x.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"QGModel: state must be float32 or float64, got {x.dtype}")

    def to_grid(self, x: Tensor) -> Tensor:
        """View the state ``(..., n)`` as layers ``(..., 2, ny, nx)``."""
        return x.reshape(*x.shape[:-1], self.nz, self.ny, self.nx)

    def spectral(self, x: Tensor) -> Tensor:
        """Spectral PV q̂ ``(..., 2, ny, nx//2+1)`` of the state ``x`` (unnormalised rfft2, as pyqg)."""
        self._check(x)
        return torch.fft.rfft2(self.to_grid(x))

    def physical(self, qh: Tensor) -> Tensor:
        """The state ``(..., n)`` of the spectral PV ``qh``."""
        q = torch.fft.irfft2(qh, s=(self.ny, self.nx))
        return q.reshape(*q.shape[:-3], self.n)

    def invert(self, qh: Tensor) -> Tensor:
        """Spectral streamfunction ψ̂ from q̂: the 2×2 solve per wavenumber (ψ̂(0,0) = 0)."""
        inv = self._ops(qh.real.dtype, qh.device)["inv"]
        q1, q2 = qh[..., 0, :, :], qh[..., 1, :, :]
        return torch.stack((inv[0, 0] * q1 + inv[0, 1] * q2, inv[1, 0] * q1 + inv[1, 1] * q2), -3)

    def streamfunction(self, x: Tensor) -> Tensor:
        """Streamfunction ψ ``(..., n)`` (same layout as q) of the state ``x``."""
        return self.physical(self.invert(self.spectral(x)))

    def spectral_tendency(self, qh: Tensor) -> Tensor:
        """dq̂/dt = -(ik (U+u)q)^ - (il vq)^ - ik Q_y ψ̂ (+ r_ek κ² ψ̂₂ in layer 2), pyqg's kernel."""
        o = self._ops(qh.real.dtype, qh.device)
        ph = self.invert(qh)
        # one inverse FFT for u, v and q of both layers
        uvq = torch.fft.irfft2(torch.stack((-o["il"] * ph, o["ik"] * ph, qh)), s=(self.ny, self.nx))
        u, v, q = uvq[0] + o["Ubg"], uvq[1], uvq[2]
        fl = torch.fft.rfft2(torch.stack((u * q, v * q)))
        return o["drag"] * ph - (o["ik"] * fl[0] + o["il"] * fl[1] + o["ikQy"] * ph)

    def tendency(self, x: Tensor, t: float = 0.0) -> Tensor:
        """Physical-space dq/dt ``(..., n)`` of the unfiltered equations at ``x``."""
        return self.physical(self.spectral_tendency(self.spectral(x)))

    def step_spectral(self, qh: Tensor) -> Tensor:
        """One filtered step on q̂: RK4 (or Euler) of :meth:`spectral_tendency`, then × filter."""
        f, dt = self.spectral_tendency, self.dt
        if self.scheme == "euler":
            new = qh + dt * f(qh)
        else:
            k1 = f(qh)
            k2 = f(qh + (0.5 * dt) * k1)
            k3 = f(qh + (0.5 * dt) * k2)
            k4 = f(qh + dt * k3)
            new = qh + (dt / 6.0) * (k1 + 2.0 * (k2 + k3) + k4)
        return self._ops(qh.real.dtype, qh.device)["filtr"] * new

    def step(self, x: Tensor, t: float = 0.0) -> Tensor:
        """Advance the PV state ``x`` ``(..., n)`` by one filtered step ``dt``."""
        return self.physical(self.step_spectral(self.spectral(x)))

    def forecast(
        self, x: Tensor, n_steps: int, t0: float = 0.0, trajectory: bool = False
    ) -> Tensor:
        """:meth:`step` ``n_steps`` times, staying in spectral space between steps."""
        if trajectory:
            return super().forecast(x, n_steps, t0, trajectory=True)
        qh = self.spectral(x)
        for _ in range(n_steps):
            qh = self.step_spectral(qh)
        return self.physical(qh)

    # -- states and diagnostics --------------------------------------------------------

    def random_state(
        self, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
    ) -> Tensor:
        """pyqg's initial PV: q1 = 10⁻⁷ U(0,1) noise + 10⁻⁶ U(0,1) in x only, q2 = 0."""
        a = torch.rand(self.ny, self.nx, generator=generator, dtype=torch.float64)
        b = torch.rand(1, self.nx, generator=generator, dtype=torch.float64)
        q1 = 1e-7 * a + 1e-6 * b.expand(self.ny, self.nx)
        return torch.cat([q1.reshape(-1), torch.zeros(self.ny * self.nx, dtype=torch.float64)]).to(dtype)

    def initial_state(
        self, dtype: torch.dtype = torch.float64, spinup_time: float | None = None, seed: int | None = None
    ) -> Tensor:
        """A spun-up state: :meth:`random_state` (``seed``) integrated ``spinup_time`` seconds.

        Defaults: the model's ``seed`` and ``spinup_time`` (3 years of 360 days;
        from pyqg's start the eddy energy saturates after ~2 years at the
        defaults). Deterministic, computed once in float64 and cached; a
        different ``seed`` gives an independent state on the attractor (a twin's truth).
        """
        spinup_time = self.spinup_time if spinup_time is None else spinup_time
        seed = self.seed if seed is None else seed
        n_steps = round(spinup_time / self.dt)
        key = (n_steps, seed)
        if self._x0 is None or self._x0[0] != key:
            g = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                x = self.forecast(self.random_state(g), n_steps)
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"QGModel: spin-up blew up (dt={self.dt} too large for this grid?)")
            self._x0 = (key, x)
        return self._x0[1].to(dtype).clone()

    def kinetic_energy(self, x: Tensor) -> Tensor:
        """Eddy kinetic energy ``(...)``: grid mean of Σ_i (H_i/H)(u_i² + v_i²)/2 (pyqg's ``total_ke``)."""
        o = self._ops(x.dtype, x.device)
        ph = self.invert(self.spectral(x))
        uv = torch.fft.irfft2(torch.stack((-o["il"] * ph, o["ik"] * ph)), s=(self.ny, self.nx))
        ke = 0.5 * (uv[0] ** 2 + uv[1] ** 2).mean((-1, -2))  # (..., 2)
        w = torch.tensor([self.delta, 1.0], dtype=x.dtype, device=x.device) / (1.0 + self.delta)
        return (ke * w).sum(-1)

    def ke_spectrum(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Isotropic KE spectrum per layer: wavenumbers ``(K,)`` and E(κ) ``(..., 2, K)``.

        E(κ_j) sums κ² |ψ̂|² / M² over the shell κ_j - dκ/2 ≤ |κ| < κ_j + dκ/2
        (rfft half-plane counted twice except the k=0 and Nyquist columns),
        divided by dκ, with dκ = max(2π/L, 2π/W), up to the smaller Nyquist wavenumber.
        """
        ph = self.invert(self.spectral(x))
        M = self.nx * self.ny
        wv2 = self._ops(x.dtype, x.device)["wv2"]
        dens = wv2 * ph.abs() ** 2 / M**2
        mult = torch.full_like(wv2, 2.0)
        mult[:, 0] = 1.0
        mult[:, -1] = 1.0
        dens = dens * mult
        dk = max(2 * math.pi / self.L, 2 * math.pi / self.W)
        kmax = min(math.pi / self.dx, math.pi / self.dy)
        K = int(kmax / dk)
        centres = dk * torch.arange(1, K + 1, dtype=x.dtype, device=x.device)
        idx = torch.round(wv2.sqrt() / dk).long()
        onehot = (idx.unsqueeze(-1) == torch.arange(1, K + 1, device=x.device)).to(x.dtype)
        spec = torch.einsum("...yk,ykj->...j", dens, onehot) / dk
        return centres, spec

    def __repr__(self) -> str:
        return (
            f"QGModel(nx={self.nx}, ny={self.ny}, L={self.L:g}, W={self.W:g}, beta={self.beta:g}, "
            f"rd={self.rd:g}, delta={self.delta:g}, U1={self.U1:g}, U2={self.U2:g}, "
            f"rek={self.rek:g}, filterfac={self.filterfac:g}, dt={self.dt:g}, scheme={self.scheme!r}, "
            f"spinup_time={self.spinup_time:g}, seed={self.seed})"
        )
