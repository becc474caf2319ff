"""Jin's (1997) recharge oscillator of ENSO: eastern-Pacific SST anomaly T and thermocline depth h."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.models.base import ODEModel

__all__ = ["RechargeOscillator", "h_lead_months", "linear_frequency"]

Param = float | Tensor


def linear_frequency(R: float, gamma: float, r: float, alpha: float) -> tuple[float, float]:
    """Growth rate and angular frequency (1/month) of the linear oscillator with constant coefficients.

    The matrix [[R, γ], [−α, −r]] has eigenvalues
    λ = (R − r)/2 ± i sqrt(αγ − (R + r)²/4) (Jin 1997, sec. 3; Burgers et al.
    2005, eq. 4); the period is 2π/ω. Raises ValueError when the roots are
    real (no oscillation).
    """
    disc = alpha * gamma - 0.25 * (R + r) ** 2
    if disc <= 0:
        raise ValueError(f"no oscillation: alpha*gamma - (R + r)^2 / 4 = {disc:g} <= 0")
    return 0.5 * (R - r), math.sqrt(disc)


def h_lead_months(R: float, gamma: float, r: float, alpha: float) -> float:
    """How many months h leads T in the linear oscillator's free mode (a phase, not a fit).

    For T ∝ e^{λt}, λ = σ + iω, the h equation gives h = −α T / (λ + r), so h leads
    T by the phase π − arg(λ + r) = π − atan2(ω, (R + r)/2), i.e. by
    (π − atan2(ω, (R + r)/2)) / ω months: a quarter period when R + r = 0 and more
    as the damping r of h grows (h then follows −T more closely).
    """
    sigma_plus_r, omega = 0.5 * (R + r), linear_frequency(R, gamma, r, alpha)[1]
    return (math.pi - math.atan2(omega, sigma_plus_r)) / omega


class RechargeOscillator(ODEModel):
    """The recharge oscillator (Jin 1997, J. Atmos. Sci. 54, 811-829), monthly time units.

    State x = [T, h] (°C, and h in °C-equivalent units: its scale is fixed by γ)::

        dT/dt = R(t) T + γ h − ε T³
        dh/dt = −r h − α T
        R(t) = R + R_s cos(2π (t − φ) / 12)

    T is the eastern-Pacific (Niño-3) SST anomaly, h the western-Pacific /
    equatorial-mean thermocline depth anomaly (the heat content "recharged"
    by the Sverdrup transport −αT). R is the Bjerknes growth rate minus
    damping, γ the thermocline feedback, r the damping of h, α the coupling of
    the wind-stress-driven discharge; ε (≥ 0) is Jin's cubic nonlinear damping
    (0: the linear oscillator of Burgers, Jin & van Oldenborgh 2005). The
    seasonal modulation of the growth rate (R_s, phase φ in months from
    t = 0 = December) follows Stein et al. 2014 (J. Climate 27, 5285) and is 0
    by default. The model time t = 1 is January 1950 (see
    :mod:`hybrida.datasets.enso`). Stochastic forcing is added outside the
    model (:class:`hybrida.models.noisy.NoisyModel`, or the ensemble method).

    With ``forcing_memory`` τ > 0 (months) the state is [T, h, ξ] with a red-noise
    wind forcing of T that the filter estimates (Burgers et al. 2005 force T
    with noise; its month-to-month memory is that of westerly wind events)::

        dT/dt = R(t) T + γ h − ε T³ + ξ,    dξ/dt = −ξ / τ

    (white noise on ξ added by the ensemble forecast makes it an AR(1) process).

    The parameters are plain attributes (floats, or tensors ``(..., 1)`` that
    broadcast against the state ``(..., 2)``), so
    :class:`~hybrida.models.augmented.AugmentedModel` can give every member
    its own values. Differentiable torch ops over any leading dimensions.
    """

    n = 2

    def __init__(
        self,
        R: Param = -0.02,
        gamma: Param = 0.12,
        r: Param = 0.03,
        alpha: Param = 0.12,
        epsilon: Param = 0.0,
        seasonal_amp: Param = 0.0,
        seasonal_phase: Param = 0.0,
        forcing_memory: float = 0.0,
        dt: float = 1.0,
    ) -> None:
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"RechargeOscillator: dt must be a finite number > 0, got {dt}")
        self.R, self.gamma, self.r, self.alpha = R, gamma, r, alpha
        self.epsilon, self.seasonal_amp, self.seasonal_phase = epsilon, seasonal_amp, seasonal_phase
        self.dt = float(dt)
        if not (math.isfinite(forcing_memory) and forcing_memory >= 0):
            raise ValueError(f"RechargeOscillator: forcing_memory must be >= 0 months, got {forcing_memory}")
        self.forcing_memory = float(forcing_memory)
        self.n = 3 if self.forcing_memory > 0 else 2

    def growth_rate(self, t: float | Tensor) -> Param:
        """R(t) = R + R_s cos(2π (t − φ) / 12)."""
        if isinstance(self.seasonal_amp, (int, float)) and self.seasonal_amp == 0:
            return self.R
        angle = 2.0 * math.pi * (torch.as_tensor(t, dtype=torch.float64) - self.seasonal_phase) / 12.0
        return self.R + self.seasonal_amp * torch.cos(angle)

    def tendency(self, x: Tensor, t: float = 0.0) -> Tensor:
        """[dT/dt, dh/dt(, dξ/dt)] at ``x`` ``(..., n)`` and time ``t`` (months)."""
        self.check_state(x)
        T, h = x[..., 0:1], x[..., 1:2]
        R = self.growth_rate(t)
        if isinstance(R, Tensor):
            R = R.to(x)
        dT = R * T + self.gamma * h - self.epsilon * T**3
        dh = -self.r * h - self.alpha * T
        if self.n == 2:
            return torch.cat((dT, dh), -1)
        xi = x[..., 2:3]
        return torch.cat((dT + xi, dh, -xi / self.forcing_memory), -1)

    def __repr__(self) -> str:
        def f(v: Param) -> str:
            return f"{v:g}" if isinstance(v, (int, float)) else "per-member"

        return (
            f"RechargeOscillator(R={f(self.R)}, gamma={f(self.gamma)}, r={f(self.r)}, alpha={f(self.alpha)}, "
            f"epsilon={f(self.epsilon)}, seasonal_amp={f(self.seasonal_amp)}, dt={self.dt:g})"
        )
