"""Error variances by maximum innovation likelihood through hybrida's own Kalman filter.

A linear-Gaussian filter run gives, per cycle, the innovation v_k = y_k − H x_k^f
and its variance F_k = H P_k^f Hᵀ + R; their joint density factorises
(prediction-error decomposition; Harvey 1989, sec. 3.4; Durbin & Koopman 2012,
sec. 7.2, eq. 7.2)

    log L(θ) = −½ Σ_{k > d} [log 2π F_k + v_k² / F_k],

where d cycles of a diffuse start are left out. Unknown variances θ are
estimated by maximising log L over log θ (so they stay positive) with a
Nelder–Mead simplex (Nelder & Mead 1965; coefficients as in Lagarias et al.
1998); each evaluation is one :func:`hybrida.cycle.run_cycle` of the EKF,
whose log-likelihood is :func:`hybrida.innovations.summarize_innovations`'s
``innovation_loglik``. No gradient is needed, so any filter hybrida runs can
be tuned this way.

The oracle is the local-level model (:class:`hybrida.models.local_level.LocalLevel`)
on the Nile series: σ²_ε (observation error, R) and σ²_η (level random walk,
the EKF's Q). The start mimics statsmodels' ``approximate_diffuse``
initialisation: the prior of the first observation is N(level, κ) with κ = 10⁶
and its innovation is left out (``burn = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hybrida.assimilation.base import GaussianState
from hybrida.assimilation.variational.ekf import EKF
from hybrida.cycle import run_cycle
from hybrida.innovations import summarize_innovations
from hybrida.io.obsfile import cycle_steps
from hybrida.models.local_level import LocalLevel
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError

__all__ = [
    "LocalLevelFit",
    "SimplexResult",
    "fit_local_level",
    "local_level_loglik",
    "moment_variances",
    "nelder_mead",
    "with_obs_variance",
]

#: prior variance of the first observed level, as statsmodels' approximate_diffuse initialisation
DIFFUSE_VARIANCE = 1e6


@dataclass(frozen=True)
class SimplexResult:
    """Minimiser ``x``, its value ``fun``, evaluations used, and whether the tolerances were met."""

    x: np.ndarray
    fun: float
    n_evaluations: int
    converged: bool


def nelder_mead(
    f: Callable[[np.ndarray], float],
    x0: Sequence[float],
    step: float = 0.5,
    xatol: float = 1e-6,
    fatol: float = 1e-8,
    max_evaluations: int = 500,
) -> SimplexResult:
    """Minimise ``f`` from ``x0`` with the Nelder–Mead simplex (Nelder & Mead 1965).

    Reflection 1, expansion 2, contraction ½, shrink ½ (Lagarias, Reeds,
    Wright & Wright 1998, sec. 2). The start simplex is ``x0`` and ``x0 +
    step e_i``. Stops when every vertex lies within ``xatol`` (max norm) of the
    best and the values within ``fatol``, or after ``max_evaluations``.
    A non-finite value counts as +inf (the step is rejected).
    """
    x0 = np.asarray(x0, dtype=np.float64)
    n = x0.size
    count = 0

    def value(x: np.ndarray) -> float:
        nonlocal count
        count += 1
        v = float(f(x))
        return v if math.isfinite(v) else math.inf

    simplex = np.vstack([x0] + [x0 + step * e for e in np.eye(n)])
    values = np.array([value(v) for v in simplex])
    converged = False
    while count < max_evaluations:
        order = np.argsort(values, kind="stable")
        simplex, values = simplex[order], values[order]
        if (np.abs(simplex[1:] - simplex[0]).max() <= xatol
                and np.abs(values[1:] - values[0]).max() <= fatol):
            converged = True
            break
        centroid = simplex[:-1].mean(0)
        worst = simplex[-1]
        xr = centroid + (centroid - worst)
        fr = value(xr)
        if fr < values[0]:
            xe = centroid + 2.0 * (centroid - worst)
            fe = value(xe)
            simplex[-1], values[-1] = (xe, fe) if fe < fr else (xr, fr)
            continue
        if fr < values[-2]:
            simplex[-1], values[-1] = xr, fr
            continue
        # contraction: outside when the reflection improved on the worst, else inside
        xc = centroid + 0.5 * (xr - centroid) if fr < values[-1] else centroid + 0.5 * (worst - centroid)
        fc = value(xc)
        if fc < min(fr, values[-1]):
            simplex[-1], values[-1] = xc, fc
            continue
        simplex[1:] = simplex[0] + 0.5 * (simplex[1:] - simplex[0])
        values[1:] = [value(v) for v in simplex[1:]]
    best = int(np.argmin(values))
    return SimplexResult(x=simplex[best].copy(), fun=float(values[best]), n_evaluations=count, converged=converged)


def with_obs_variance(observations: Sequence[Observation], variance: float) -> list[Observation]:
    """Copies of ``observations`` whose error variance is ``variance`` for every value (R = σ² I)."""
    out = []
    for obs in observations:
        var = torch.full_like(obs.y, float(variance))
        out.append(Observation(obs.y, obs.operator, DiagonalError(var), obs.locations, obs.matrix, dict(obs.meta)))
    return out


def moment_variances(y: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Moment estimates (σ²_ε, σ²_η) of a local level from the first differences Δy.

    For the local level Δy_t = η_{t−1} + ε_t − ε_{t−1}, so the lag-1
    autocovariance is γ₁ = −σ²_ε and the variance γ₀ = σ²_η + 2σ²_ε
    (Harvey 1989, sec. 2.5). Negative values are floored at 1 % of γ₀; a
    starting point for :func:`fit_local_level`, not an estimate to report.
    """
    y = np.asarray(y, dtype=np.float64)
    y = y[np.isfinite(y)]
    if y.size < 4:
        raise ValueError(f"moment_variances: need at least 4 finite values, got {y.size}")
    d = np.diff(y)
    d = d - d.mean()
    g0, g1 = float(np.mean(d * d)), float(np.mean(d[1:] * d[:-1]))
    floor = 0.01 * g0 if g0 > 0 else 1.0
    eps = max(-g1, floor)
    return eps, max(g0 - 2.0 * eps, floor)


def local_level_loglik(
    observations: Sequence[Observation],
    obs_variance: float,
    level_variance: float,
    *,
    level: float = 0.0,
    diffuse_variance: float = DIFFUSE_VARIANCE,
    burn: int = 1,
    dt: float = 1.0,
) -> float:
    """Innovation log-likelihood of a local-level EKF run over ``observations`` (see the module docstring).

    σ²_ε = ``obs_variance`` replaces the files' R; σ²_η = ``level_variance``
    is the level's variance per analysis cycle (the EKF's Q per unit time is
    σ²_η / (steps · dt)). The filter starts one cycle before the first
    observation from N(level, (κ − σ²_η) I), so the first forecast is N(level, κ I)
    with κ = ``diffuse_variance`` (statsmodels' approximate diffuse start; the
    start variance is floored at 0 when σ²_η > κ). The first ``burn`` cycles
    are left out of the sum.
    """
    for name, v in (("obs_variance", obs_variance), ("level_variance", level_variance),
                    ("diffuse_variance", diffuse_variance)):
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"local_level_loglik: {name} must be a finite number > 0, got {v}")
    if not observations:
        raise ValueError("local_level_loglik: no observations")
    n = int(observations[0].matrix.shape[-1]) if observations[0].matrix is not None else 1
    model = LocalLevel(n=n, dt=dt, level=level)
    steps = cycle_steps(list(observations), dt, 1)
    dtype = observations[0].y.dtype
    method = EKF(Q=torch.tensor(level_variance / (steps * dt), dtype=dtype))
    p0 = max(diffuse_variance - level_variance, 0.0)
    state = GaussianState(model.initial_state(dtype), p0 * torch.eye(n, dtype=dtype))
    obs = with_obs_variance(observations, obs_variance)
    records = run_cycle(model, method, state, None, obs, steps, probabilistic_scores=False, innovations=True)
    cycles = [rec.innovation for rec, _ in records]
    return summarize_innovations(cycles[burn:])["innovation_loglik"]


@dataclass(frozen=True)
class LocalLevelFit:
    """Maximum-likelihood σ²_ε (``obs_variance``), σ²_η (``level_variance``) and log L at the optimum."""

    obs_variance: float
    level_variance: float
    loglik: float
    n_evaluations: int
    converged: bool
    start: tuple[float, float]


def fit_local_level(
    observations: Sequence[Observation],
    *,
    start: tuple[float, float] | None = None,
    level: float = 0.0,
    diffuse_variance: float = DIFFUSE_VARIANCE,
    burn: int = 1,
    dt: float = 1.0,
    step: float = 0.5,
    xatol: float = 1e-6,
    fatol: float = 1e-8,
    max_evaluations: int = 400,
) -> LocalLevelFit:
    """Maximise :func:`local_level_loglik` over (log σ²_ε, log σ²_η) with :func:`nelder_mead`.

    ``start`` defaults to :func:`moment_variances` of the observed values;
    ``step`` is the start simplex's size in log-variance (0.5: a factor 1.6).
    ``xatol`` is the tolerance on the log-variances (a relative tolerance on
    the variances), ``fatol`` the one on log L; both must be met. On the Nile
    series this reaches the optimum of statsmodels'
    ``UnobservedComponents(y, 'local level')`` run to convergence
    (σ²_ε = 15108.3, σ²_η = 1463.55; its default fit stops at 15078, 1479),
    and with ``diffuse_variance=1e10`` Durbin & Koopman's (2012) 15099, 1469.1.
    """
    if start is None:
        y = torch.cat([o.y for o in observations]).detach().cpu().numpy()
        start = moment_variances(y)
    if min(start) <= 0 or not all(math.isfinite(s) for s in start):
        raise ValueError(f"fit_local_level: start variances must be finite and > 0, got {start}")

    def negloglik(theta: np.ndarray) -> float:
        if not np.all(np.abs(theta) < 700.0):  # exp would overflow: a rejected step
            return math.inf
        eps, eta = math.exp(theta[0]), math.exp(theta[1])
        return -local_level_loglik(observations, eps, eta, level=level, diffuse_variance=diffuse_variance,
                                   burn=burn, dt=dt)

    res = nelder_mead(negloglik, np.log(start), step=step, xatol=xatol, fatol=fatol, max_evaluations=max_evaluations)
    return LocalLevelFit(
        obs_variance=math.exp(res.x[0]),
        level_variance=math.exp(res.x[1]),
        loglik=-res.fun,
        n_evaluations=res.n_evaluations,
        converged=res.converged,
        start=(float(start[0]), float(start[1])),
    )
