"""Diagnostics of learned dynamics: forecast skill, valid time, Lyapunov exponents, spectra, TL checks.

Pure functions that accept any :class:`~hybrida.models.base.Model`, learned or
physical, so a surrogate is always compared with the truth by the same code
(Hatfield et al. 2021; Tian, Holdaway & Kleist 2026). Tangent-linear and
adjoint come from :mod:`hybrida.models.linearize` (autodiff).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from hybrida.metrics import valid_time as _first_exceedance
from hybrida.models.base import Model
from hybrida.models.linearize import adjoint, jacobian, lyapunov_exponents, tangent_linear

#: leading Lyapunov exponent of Lorenz-96, n=40, F=8 (per model time unit), used for Lyapunov times
L96_LEADING_LYAPUNOV = 1.68


class SkillCurve(NamedTuple):
    """Normalised forecast error against lead time."""

    #: lead times (L + 1,) in model time units, starting at 0
    times: Tensor
    #: RMSE / climatological std, mean over starts (L + 1,)
    nrmse: Tensor
    #: the same per start (S, L + 1)
    nrmse_starts: Tensor
    #: climatological standard deviation used for the normalisation
    clim_std: float


class ValidTime(NamedTuple):
    """Lead time at which the normalised error first exceeds the threshold."""

    #: from the start-mean error curve, model time units
    time: float
    #: ``time`` times the leading Lyapunov exponent (None when not given)
    lyapunov_times: float | None
    #: per start (S,), model time units
    time_starts: Tensor


@torch.no_grad()
def free_run(model: Model, x0: Tensor, n_steps: int, spinup: int = 0) -> Tensor:
    """Trajectory (n_steps + 1, *x0.shape) of ``model`` from ``x0`` after ``spinup`` discarded steps."""
    x = model.forecast(x0, spinup) if spinup > 0 else x0
    return model.forecast(x, n_steps, trajectory=True)


def climatological_std(trajectory: Tensor) -> float:
    """Climatological standard deviation sqrt(mean_i var_t x_i) of a trajectory (T, ..., n)."""
    return float(trajectory.reshape(-1, trajectory.shape[-1]).var(0).mean().sqrt())


@torch.no_grad()
def forecast_skill(
    model: Model,
    truth: Model | Tensor,
    starts: Tensor,
    lead_steps: int,
    clim_std: float | None = None,
) -> SkillCurve:
    """Normalised RMSE ||M^k(x_s) - x*_{s+k}|| / (sqrt(n) sigma_clim) of forecasts from several starts.

    ``truth`` is either a trajectory (T, n) at the model's ``dt`` and then
    ``starts`` are integer row indices (S,), or a reference Model and then
    ``starts`` are initial states (S, n) that both models forecast. The
    climatological std sigma_clim (default: of the truth trajectory, or of
    the pooled reference forecasts) normalises the RMSE, so 1 ~ no skill
    (2^{1/2} for two independent climate states).
    """
    if isinstance(lead_steps, bool) or int(lead_steps) != lead_steps or lead_steps < 1:
        raise ValueError(f"lead_steps must be an integer >= 1, got {lead_steps}")
    L = int(lead_steps)
    if isinstance(truth, Tensor):
        idx = torch.as_tensor(starts, dtype=torch.long).reshape(-1)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) + L >= truth.shape[0]:
            raise ValueError(
                f"starts must be row indices with start + lead_steps < T={truth.shape[0]}"
            )
        ref = truth[idx.unsqueeze(0) + torch.arange(L + 1).unsqueeze(-1)]  # (L+1, S, n)
        x0 = truth[idx]
        sigma = climatological_std(truth) if clim_std is None else float(clim_std)
    else:
        x0 = torch.as_tensor(starts)
        if x0.ndim != 2:
            raise ValueError(
                f"with a truth model, starts must be states (S, n), got {tuple(x0.shape)}"
            )
        ref = truth.forecast(x0, L, trajectory=True)
        sigma = climatological_std(ref) if clim_std is None else float(clim_std)
    if not sigma > 0:
        raise ValueError(f"clim_std must be > 0, got {sigma}")
    fc = model.forecast(x0, L, trajectory=True)
    nrmse = ((fc - ref) ** 2).mean(-1).sqrt().T / sigma  # (S, L+1)
    times = torch.arange(L + 1, dtype=torch.float64) * model.dt
    return SkillCurve(times, nrmse.mean(0), nrmse, sigma)


def valid_time(
    curve: SkillCurve, threshold: float = 0.5, lyapunov_exponent: float | None = None
) -> ValidTime:
    """Valid time: first lead at which the normalised RMSE exceeds ``threshold``.

    Default threshold 0.5 of the climatological std (the "valid prediction
    time" of Pathak et al. 2018 and Vlachas et al. 2020 use the same kind of
    normalised-error threshold). Reported also in Lyapunov times t lambda_1
    when ``lyapunov_exponent`` is given (L96 n=40, F=8: lambda_1 ~ 1.68,
    :data:`L96_LEADING_LYAPUNOV`). If the error never exceeds the threshold
    the last lead time is returned (a lower bound).
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    t = float(_first_exceedance(curve.nrmse, curve.times, threshold))
    per = _first_exceedance(curve.nrmse_starts, curve.times, threshold)
    lt = None if lyapunov_exponent is None else t * float(lyapunov_exponent)
    return ValidTime(t, lt, per)


def leading_lyapunov(
    model: Model,
    x0: Tensor,
    n_steps: int = 2000,
    transient: int = 200,
    renorm_every: int = 5,
) -> float:
    """Leading Lyapunov exponent (per time unit) by Benettin's method, averaged over the starts in ``x0``.

    ``x0``: one state (n,) or several (S, n) for an average over independent
    trajectories; reuses :func:`hybrida.models.linearize.lyapunov_exponents`.
    L96 n=40, F=8 gives ~1.68 (e.g. Karimi & Paul 2010).
    """
    lam = lyapunov_exponents(
        model, x0.detach(), n_steps, k=1, transient=transient, renorm_every=renorm_every
    )
    return float(lam.mean())


def power_spectrum(trajectory: Tensor, grid: tuple[int, int, int] | None = None) -> Tensor:
    """Time-mean spatial power spectrum, averaged over every leading index (times, members).

    1-D (``grid`` None): |rfft(x)|^2 / n over the last axis, shape (n // 2 + 1,).
    Layered 2-D (``grid`` = (layers, ny, nx), the state flattened layer by layer):
    the isotropic spectrum, |fft2|^2 / (ny nx) summed over rings of integer total
    wavenumber round(sqrt(k_x^2 + k_y^2)) = 0 .. min(ny, nx) // 2 and averaged
    over layers, so that a 2-D model's spectra compare ring by ring. Wavenumber 0
    holds the squared spatial mean.
    """
    if grid is None:
        n = trajectory.shape[-1]
        spec = torch.fft.rfft(trajectory, dim=-1).abs() ** 2 / n
        return spec.reshape(-1, spec.shape[-1]).mean(0)
    layers, ny, nx = (int(v) for v in grid)
    if layers * ny * nx != trajectory.shape[-1]:
        raise ValueError(f"power_spectrum: grid {tuple(grid)} does not hold a state of size {trajectory.shape[-1]}")
    fields = trajectory.reshape(-1, layers, ny, nx)
    power = (torch.fft.fft2(fields).abs() ** 2 / (ny * nx)).mean((0, 1))  # (ny, nx)
    ky = torch.fft.fftfreq(ny, d=1.0 / ny, dtype=torch.float64, device=power.device)
    kx = torch.fft.fftfreq(nx, d=1.0 / nx, dtype=torch.float64, device=power.device)
    ring = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2).round().long().reshape(-1)
    kmax = min(ny, nx) // 2
    keep = ring <= kmax  # the corners beyond the largest full ring are left out
    out = torch.zeros(kmax + 1, dtype=power.dtype, device=power.device)
    return out.index_add_(0, ring[keep], power.reshape(-1)[keep])


def spectrum_log_distance(spec: Tensor, reference: Tensor, skip_mean: bool = True) -> float:
    """Mean |log10(spec_k / ref_k)| over wavenumbers (0 for identical spectra; 1 = one decade off)."""
    a, b = (spec[1:], reference[1:]) if skip_mean else (spec, reference)
    tiny = torch.finfo(a.dtype).tiny
    return float((torch.log10(a.clamp_min(tiny)) - torch.log10(b.clamp_min(tiny))).abs().mean())


class TaylorResult(NamedTuple):
    """Remainders of the tangent-linear Taylor test."""

    eps: Tensor
    #: ||M(x + eps dx) - M(x) - eps M'(x) dx||
    remainder: Tensor
    #: least-squares slope of log remainder against log eps (2 for a correct TL)
    slope: float


def _direction(x: Tensor, generator: torch.Generator | None) -> Tensor:
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    d = torch.randn(x.shape, generator=g, dtype=torch.float64).to(x)
    return d / torch.linalg.vector_norm(d)


def taylor_test(
    model: Model,
    x: Tensor,
    dx: Tensor | None = None,
    n_steps: int = 1,
    eps: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> TaylorResult:
    """Taylor test of the tangent-linear: r(eps) = ||M(x + eps dx) - M(x) - eps M' dx|| = O(eps^2).

    The slope of log r against log eps is 2 when the TL is the derivative of
    the nonlinear model (Navon et al. 1992). ``dx`` defaults to a unit random
    direction from ``generator`` (default seed 0); ``eps`` to 10^-1 .. 10^-4.
    Run in float64: float32 round-off dominates small eps.
    """
    dx = _direction(x, generator) if dx is None else dx
    eps = torch.logspace(-1, -4, 7, dtype=torch.float64) if eps is None else eps
    with torch.no_grad():
        base = model.forecast(x, n_steps)
    tl = tangent_linear(model, x, dx, n_steps).detach()
    rem = []
    with torch.no_grad():
        for e in eps.tolist():
            rem.append(
                float(torch.linalg.vector_norm(model.forecast(x + e * dx, n_steps) - base - e * tl))
            )
    r = torch.tensor(rem, dtype=torch.float64)
    le, lr = eps.log(), r.clamp_min(1e-300).log()
    slope = float(((le - le.mean()) * (lr - lr.mean())).sum() / ((le - le.mean()) ** 2).sum())
    return TaylorResult(eps, r, slope)


def adjoint_test(
    model: Model, x: Tensor, n_steps: int = 1, generator: torch.Generator | None = None
) -> float:
    """Relative error of the dot-product identity <M' dx, dy> = <dx, M'^T dy> (random dx, dy)."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    dx, dy = _direction(x, g), _direction(x, g)
    lhs = float((tangent_linear(model, x, dx, n_steps).detach() * dy).sum())
    rhs = float((dx * adjoint(model, x, dy, n_steps).detach()).sum())
    return abs(lhs - rhs) / max(abs(lhs), abs(rhs), 1e-300)


class TLComparison(NamedTuple):
    """Leading singular values/vectors of two tangent-linear propagators about the same state."""

    #: leading k singular values of the surrogate's / the truth's n_steps propagator
    sv_model: Tensor
    sv_truth: Tensor
    #: angles (radians, in [0, pi/2]) between corresponding right (initial) singular vectors
    angle_initial: Tensor
    #: ... and between the left (evolved) singular vectors
    angle_final: Tensor
    #: Frobenius norm of the difference of the propagators, relative to the truth's
    rel_frobenius: float


def tl_comparison(
    model: Model, truth: Model, x: Tensor, n_steps: int = 1, k: int = 1
) -> TLComparison:
    """Compare the TL propagators M'(x) of ``model`` and ``truth`` over ``n_steps`` at one state (n,).

    Singular vectors of the propagator are the optimal perturbations of
    Buizza & Palmer (1995); the singular values their growth factors. Sign
    ambiguity is removed by taking |<u, v>| before the arccos.
    """
    if x.ndim != 1:
        raise ValueError(f"x must be a single state (n,), got shape {tuple(x.shape)}")
    if not 1 <= k <= x.shape[-1]:
        raise ValueError(f"k must be in [1, n={x.shape[-1]}], got {k}")
    Jm = jacobian(model, x.detach(), n_steps).detach()
    Jt = jacobian(truth, x.detach(), n_steps).detach()
    Um, Sm, Vhm = torch.linalg.svd(Jm)
    Ut, St, Vht = torch.linalg.svd(Jt)

    def angles(A: Tensor, B: Tensor) -> Tensor:
        c = (A * B).sum(-1).abs().clamp(max=1.0)
        return torch.arccos(c)

    return TLComparison(
        sv_model=Sm[:k],
        sv_truth=St[:k],
        angle_initial=angles(Vhm[:k], Vht[:k]),
        angle_final=angles(Um[:, :k].T, Ut[:, :k].T),
        rel_frobenius=float(torch.linalg.matrix_norm(Jm - Jt) / torch.linalg.matrix_norm(Jt)),
    )


def lyapunov_time(lyapunov_exponent: float = L96_LEADING_LYAPUNOV) -> float:
    """One Lyapunov time 1 / lambda_1 in model time units."""
    if not (math.isfinite(lyapunov_exponent) and lyapunov_exponent > 0):
        raise ValueError(f"lyapunov_exponent must be a finite number > 0, got {lyapunov_exponent}")
    return 1.0 / lyapunov_exponent
