"""Finite-size ensemble Kalman filter EnKF-N in its dual form (Bocquet 2011; Bocquet et al. 2015).

The EnKF-N integrates the prior over the unknown error covariance (Jeffreys
hyperprior), so that in ensemble space x = x̄ + wᵀ A (A the unscaled anomalies
``(N, n)``) the analysis minimises the primal cost

    J(w) = ½ ‖d - S̃ᵀ w‖² + ½ K log(ε + ‖w‖²),

with d = R^{-1/2}(y - H x̄), S̃ = R^{-1/2}-whitened observed anomalies
``(N, p)``, ε = ε_N = 1 + 1/N and K = N + g in the papers. Writing
log a = min_ζ (ζa/K - log(ζ/K) - 1) turns it into a one-dimensional dual

    D(ζ) = -½ Σᵢ uᵢ² / (λᵢ + ζ) + ½ ε ζ - ½ K log ζ,

λᵢ, vᵢ the eigenpairs of S̃ S̃ᵀ and uᵢ = vᵢᵀ S̃ d, whose minimiser ζ* gives
w = (S̃ S̃ᵀ + ζ* I)⁻¹ S̃ d and the prior inflation l = sqrt((N-1)/ζ*).
Conventions of DAPPER's ``EnKF_N`` (Raanes): the hyperprior constants get
its mode correction and the scaling ``xN`` (:func:`hyperprior_constants`),
and the anomalies use the symmetric square root sqrt(N-1) H^{-1/2} of the
primal Hessian H = S̃ S̃ᵀ + ζ* I without its radial term (``hess=False``),
or of the exact Hessian H - (2ζ*²/K) w wᵀ (``hess=True``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.assimilation.ensemble.base import (
    EnsembleMethod,
    _check_positive_int,
    observed_anomalies,
)
from hybrida.observations.base import Observation

#: grid spacing in log ζ of the global search for the dual minimum
_GRID_STEP = 0.1


def hyperprior_constants(
    lam: Tensor, N: int, xN: float = 1.0, g: int = 0, mode_correction: bool = True
) -> tuple[Tensor, Tensor]:
    """Constants (ε, K) of the EnKF-N cost ½‖d - S̃ᵀw‖² + ½ K log(ε + ‖w‖²).

    Without correction ε = (N+1)/N and K = N + g (Bocquet et al. 2015). With
    ``mode_correction`` the prior mode m = ε(N-1)/K of the inflation l² is
    pulled towards 1 by c = m^{r/2}, ε → ε/c, K → K c, where
    r = mean_i (N-1)/(λᵢ + N-1) ≈ the prior's weight in the analysis
    (Bocquet et al. 2015 eq. 36, as DAPPER's ``hyperprior_coeffs``); both are
    finally multiplied by ``xN``. ``lam`` ``(..., N)`` are the eigenvalues of
    S̃ S̃ᵀ; the constants have its batch shape.
    """
    N1 = N - 1
    eps = torch.full(lam.shape[:-1], (N + 1) / N, dtype=lam.dtype, device=lam.device)
    K = torch.full_like(eps, float(N + g))
    if mode_correction:
        prior_mode = (N + 1) / N * N1 / (N + g)
        weight = (N1 / (lam.clamp_min(0.0) + N1)).mean(-1)
        c = torch.pow(torch.as_tensor(prior_mode, dtype=lam.dtype, device=lam.device), weight / 2)
        eps = eps / c
        K = K * c
    return eps * xN, K * xN


def dual_cost(t: Tensor, lam: Tensor, u2: Tensor, eps: Tensor, K: Tensor) -> Tensor:
    """Dual cost D at ζ = exp(t), up to a constant; ``t`` ``(..., G)``, ``lam``, ``u2`` ``(..., N)``."""
    zeta = t.exp()
    fit = (u2.unsqueeze(-2) / (lam.unsqueeze(-2) + zeta.unsqueeze(-1))).sum(-1)
    return -0.5 * fit + 0.5 * eps.unsqueeze(-1) * zeta - 0.5 * K.unsqueeze(-1) * t


def dual_gradient(
    t: Tensor, lam: Tensor, u2: Tensor, eps: Tensor, K: Tensor
) -> tuple[Tensor, Tensor]:
    """First and second derivatives of D with respect to t = log ζ (same shapes as ``t``).

    dD/dt = ½ (ζ ‖w(ζ)‖² + ε ζ - K) with ‖w(ζ)‖² = Σᵢ uᵢ²/(λᵢ + ζ)², and
    d²D/dt² = ½ (Σᵢ uᵢ² ζ (λᵢ - ζ)/(λᵢ + ζ)³ + ε ζ).
    """
    zeta = t.exp().unsqueeze(-1)
    lam_ = lam.unsqueeze(-2)
    u2_ = u2.unsqueeze(-2)
    s = lam_ + zeta
    first = 0.5 * ((u2_ * zeta / s**2).sum(-1) + eps.unsqueeze(-1) * zeta[..., 0] - K.unsqueeze(-1))
    second = 0.5 * ((u2_ * zeta * (lam_ - zeta) / s**3).sum(-1) + eps.unsqueeze(-1) * zeta[..., 0])
    return first, second


def solve_dual(lam: Tensor, u2: Tensor, eps: Tensor, K: Tensor, max_iter: int = 100) -> Tensor:
    """Global minimiser ζ* ``(...)`` of the dual cost D on ζ > 0.

    Every stationary point satisfies ζ = K/(ε + ‖w(ζ)‖²), so it lies in
    [max(K/(ε + W₀), (K - ‖d∥‖²/4)/ε), K/ε] with W₀ = Σ uᵢ²/λᵢ² (λᵢ > 0) and
    ‖d∥‖² = Σ uᵢ²/λᵢ. D is scanned on a grid in t = log ζ (step 0.1, finer
    than the O(1)-wide features of D), the sign change of dD/dt with the
    lowest D is kept and refined by safeguarded Newton steps on dD/dt = 0
    (bisection whenever Newton leaves the bracket).
    """
    pos = lam > 0
    lam_safe = torch.where(pos, lam, torch.ones_like(lam))
    W0 = torch.where(pos, u2 / lam_safe**2, torch.zeros_like(u2)).sum(-1)
    q = torch.where(pos, u2 / lam_safe, torch.zeros_like(u2)).sum(-1) / 4
    lower = torch.maximum(K / (eps + W0), (K - q) / eps)
    t_lo = lower.log() - 0.05
    t_hi = (K / eps).log() + 0.05
    span = float((t_hi - t_lo).max())
    G = max(16, math.ceil(span / _GRID_STEP) + 1)
    frac = torch.linspace(0.0, 1.0, G, dtype=lam.dtype, device=lam.device)
    grid = t_lo.unsqueeze(-1) + (t_hi - t_lo).unsqueeze(-1) * frac
    D = dual_cost(grid, lam, u2, eps, K)
    dD, _ = dual_gradient(grid, lam, u2, eps, K)
    change = (dD[..., :-1] < 0) & (dD[..., 1:] >= 0)
    score = torch.where(change, torch.minimum(D[..., :-1], D[..., 1:]), torch.inf)
    k = score.argmin(-1, keepdim=True)
    a = grid.gather(-1, k).squeeze(-1)
    b = grid.gather(-1, k + 1).squeeze(-1)
    t = 0.5 * (a + b)
    tol = 4 * torch.finfo(lam.dtype).eps
    for _ in range(max_iter):
        f, fp = dual_gradient(t.unsqueeze(-1), lam, u2, eps, K)
        f, fp = f.squeeze(-1), fp.squeeze(-1)
        a = torch.where(f < 0, t, a)
        b = torch.where(f >= 0, t, b)
        newton = t - f / torch.where(fp > 0, fp, torch.ones_like(fp))
        inside = (fp > 0) & (newton > a) & (newton < b)
        t_new = torch.where(inside, newton, 0.5 * (a + b))
        done = ((t_new - t).abs() <= tol * (1 + t.abs())) | ((b - a) <= tol * (1 + t.abs()))
        t = t_new
        if bool(done.all()):
            break
    return t.exp()


def enkf_n_transform(
    S: Tensor,
    d: Tensor,
    xN: float = 1.0,
    g: int = 0,
    mode_correction: bool = True,
    hess: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean weights w ``(..., N)``, transform T ``(..., N, N)`` and ζ* ``(...)`` of the EnKF-N.

    ``S`` ``(..., N, p)`` are the unscaled whitened observed anomalies S̃ and
    ``d`` ``(..., p)`` the whitened innovations. The posterior is
    x̄ + wᵀ A for the mean and T A for the anomalies, A the unscaled prior
    anomalies; T = sqrt(N-1) H^{-1/2} with H the (approximate if not ``hess``)
    Hessian of the primal cost at its minimum.
    """
    N = S.shape[-2]
    lam, V = torch.linalg.eigh(S @ S.mT)
    lam = lam.clamp_min(0.0)
    u = (V.mT @ (S @ d.unsqueeze(-1))).squeeze(-1)
    # directions with λ at round-off level (at least 1, the member mean) carry no information
    tiny = lam <= lam[..., -1:] * (10 * N * torch.finfo(lam.dtype).eps)
    lam = torch.where(tiny, torch.zeros_like(lam), lam)
    u = torch.where(tiny, torch.zeros_like(u), u)
    eps, K = hyperprior_constants(lam, N, xN, g, mode_correction)
    zeta = solve_dual(lam, u * u, eps, K)
    z = zeta.unsqueeze(-1)
    w = (V @ (u / (lam + z)).unsqueeze(-1)).squeeze(-1)
    if hess:
        H = (V * (lam + z).unsqueeze(-2)) @ V.mT
        H = H - (2 * zeta**2 / K)[..., None, None] * (w.unsqueeze(-1) * w.unsqueeze(-2))
        mu, U = torch.linalg.eigh(0.5 * (H + H.mT))
        mu = mu.clamp_min(torch.finfo(mu.dtype).tiny)
        T = (U * (math.sqrt(N - 1) * mu.rsqrt()).unsqueeze(-2)) @ U.mT
    else:
        T = (V * (math.sqrt(N - 1) * (lam + z).rsqrt()).unsqueeze(-2)) @ V.mT
    return w, T, zeta


class EnKFN(EnsembleMethod):
    """Finite-size EnKF (EnKF-N), dual form, with DAPPER's hyperprior conventions.

    The prior inflation is estimated at every analysis from the ensemble and
    the innovation (Bocquet 2011; Bocquet, Raanes & Hannart 2015), so no
    inflation tuning is needed with a perfect model. ``xN`` scales the
    hyperprior's confidence (DAPPER: 1 for chaotic/stochastic, 2 for more
    linear systems), ``g`` adds to the log-term weight N + g (DAPPER's
    default 0), ``mode_correction`` pulls the hyperprior mode towards 1 as
    the observations weaken (DAPPER always does), ``hess`` uses the exact
    primal Hessian for the anomalies. ``infl``, ``rot``, ``rtps`` and
    ``rtpp`` act after the analysis as in every ensemble filter.
    """

    def __init__(
        self,
        N: int,
        xN: float = 1.0,
        g: int = 0,
        hess: bool = False,
        mode_correction: bool = True,
        infl: float = 1.0,
        rot: bool = False,
        rtps: float = 0.0,
        rtpp: float = 0.0,
    ):
        super().__init__(N, infl=infl, rtps=rtps, rtpp=rtpp, adaptive=False, rot=rot)
        if isinstance(xN, bool) or not isinstance(xN, (int, float)):
            raise ValueError(f"EnKFN: xN must be a finite number > 0, got {xN!r}")  # noqa: TRY004
        xN = float(xN)
        if not (math.isfinite(xN) and xN > 0):
            raise ValueError(f"EnKFN: xN must be a finite number > 0, got {xN}")
        self.xN = xN
        self.g = _check_positive_int("EnKFN: g", g, 0)
        for name, value in (("hess", hess), ("mode_correction", mode_correction)):
            if not isinstance(value, bool):
                raise ValueError(f"EnKFN: {name} must be True or False, got {value!r}")  # noqa: TRY004
        self.hess = hess
        self.mode_correction = mode_correction

    def _update(self, E: Tensor, obs: Observation, generator: torch.Generator | None) -> Tensor:
        N = E.shape[-2]
        S, d, _ = observed_anomalies(E, obs)
        w, T, zeta = enkf_n_transform(
            S * math.sqrt(N - 1), d, self.xN, self.g, self.mode_correction, self.hess
        )
        xm = E.mean(-2, keepdim=True)
        A = E - xm
        self._diag["inflation"] = float(((N - 1) / zeta).sqrt().mean())
        self._diag["zeta"] = float(zeta.mean())
        return xm + w.unsqueeze(-2) @ A + T @ A

    def diagnostics(self) -> dict[str, float]:
        """``n_obs``; after an analysis ``inflation`` = sqrt((N-1)/ζ*) (prior std-dev factor) and ``zeta``.

        With a batch of ensembles both are batch means.
        """
        return dict(self._diag)

    def __repr__(self) -> str:
        return (
            f"EnKFN(N={self.N}, xN={self.xN}, g={self.g}, hess={self.hess}, "
            f"mode_correction={self.mode_correction}, infl={self.infl}, rot={self.rot}, "
            f"rtps={self.rtps}, rtpp={self.rtpp})"
        )
