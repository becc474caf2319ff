"""Local particle filter: per-grid-point weights from localized likelihoods, vectorised over points.

A local-weights PF in the spirit of Penny & Miyoshi (2016) and Poterjoy (2016),
for a periodic 1-D grid (grid point j at coordinate j, domain length n).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.assimilation.base import ParticleState
from hybrida.assimilation.ensemble.localization import gaspari_cohn, periodic_distance
from hybrida.assimilation.particle.base import ParticleMethod, check_float, check_int
from hybrida.assimilation.particle.resampling import ess, normalise_log_weights, systematic, uniform
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError

#: GC half-width per unit of ``loc_rad`` (the LETKF convention, as in DAPPER)
GC_HALF_WIDTH_FACTOR = 1.82


def taper_matrix(locations: Tensor, n: int, loc_rad: float, like: Tensor) -> Tensor:
    """Gaspari–Cohn weights ρ_jk ``(n, p)`` of observation k at grid point j (half-width 1.82·loc_rad).

    ``loc_rad = inf`` gives ρ ≡ 1 (no localization).
    """
    points = torch.arange(n, dtype=torch.float64, device=like.device)
    loc = locations.to(device=like.device, dtype=torch.float64)
    dist = periodic_distance(points[:, None], loc[None, :], float(n))
    if math.isinf(loc_rad):
        return torch.ones_like(dist).to(like)
    return gaspari_cohn(dist / (GC_HALF_WIDTH_FACTOR * loc_rad)).to(like)


def whitened_sq_innovations(particles: Tensor, obs: Observation) -> tuple[Tensor, Tensor]:
    """Squared whitened innovations ((y - H(x_i)) / σ)² ``(..., N, p)`` and a dead-particle mask ``(..., N)``.

    Needs a diagonal R (localized likelihoods factor over observations). A
    particle with any non-finite innovation is dead (zero weight everywhere).
    """
    err = obs.error
    if isinstance(err, DiagonalError):
        var = err.variance
    else:
        R = err.cov
        if bool((R - torch.diag(torch.diagonal(R))).abs().max() > 0):
            raise ValueError(
                "LocalPF: localized likelihoods need a diagonal R; got correlated errors"
            )
        var = torch.diagonal(R)
    HX = obs.H(particles)
    if HX.shape[:-1] != particles.shape[:-1] or HX.shape[-1] != obs.p:
        raise ValueError(
            f"LocalPF: observation operator returned shape {tuple(HX.shape)}, "
            f"expected {(*particles.shape[:-1], obs.p)}"
        )
    q = (obs.y.to(HX) - HX) ** 2 / var.to(HX)
    dead = ~torch.isfinite(q).all(-1)
    return torch.where(torch.isfinite(q), q, torch.zeros_like(q)), dead


def local_log_weights(
    particles: Tensor, log_prior_weights: Tensor, obs: Observation, rho: Tensor
) -> Tensor:
    """Unnormalised local log-weights ``(..., n, N)``: log w_i - ½ Σ_k ρ_jk (y_k - H(x_i)_k)² / r_k.

    The localized log-likelihood of Poterjoy (2016) / Penny & Miyoshi (2016)
    in its R-localization form; with ρ ≡ 1 every grid point gets the global
    bootstrap-PF log-weights (up to a constant).
    """
    q, dead = whitened_sq_innovations(particles, obs)
    ell = -0.5 * (q @ rho.mT.to(q))  # (..., N, n)
    ell = ell + log_prior_weights.to(ell).unsqueeze(-1)
    ell = torch.where(dead.unsqueeze(-1), torch.full_like(ell, -math.inf), ell)
    return ell.mT


class LocalPF(ParticleMethod):
    """Local particle filter: per-point weights, shared-draw systematic resampling, moment matching.

    At grid point j the particles get weights W_ji ∝ w_i exp(-½ Σ_k ρ_jk
    (y_k - H(x_i)_k)² / r_k), ρ the Gaspari–Cohn taper of half-width
    1.82·``loc_rad`` (Poterjoy 2016; Penny & Miyoshi 2016). Each point is
    resampled systematically with one uniform shared by all points, so that
    neighbouring points with similar weights select the same particles for the
    same slot (Penny & Miyoshi 2016); ``smooth`` = s > 0 averages, at point j,
    the selections of points j-s..j+s (their "smoothing by weights"). The
    resampled values a are mixed with the prior particles b,
    (1 - ``mix``) a + ``mix`` b, then recentred and rescaled per point to the
    local weighted mean and a target spread σ = (1 - ``rtps``) σ_w + ``rtps`` σ_b
    (σ_w the ESS-corrected weighted spread, σ_b the prior spread): the
    mean/variance matching of Poterjoy (2016) with a fixed mixing fraction and
    an RTPS-like relaxation (Whitaker & Hamill 2012) of its target. Finally
    every particle is jittered with N(0, ``jitter``² C_j), C_j the local
    weighted covariance, coloured by the locally weighted anomalies with one
    standard-normal vector per particle shared by all points (so the noise is
    spatially smooth). Weights return to 1/N every analysis.

    With ``loc_rad = inf`` every point carries the bootstrap-PF weights.
    Needs observation locations and a diagonal R. Diagnostics: ``n_obs``,
    ``ess`` (mean over points of the local ESS) and ``ess_min``.
    """

    def __init__(
        self,
        N: int,
        loc_rad: float,
        mix: float = 0.0,
        smooth: int = 0,
        jitter: float = 0.0,
        rtps: float = 0.0,
    ):
        super().__init__(N)
        self.loc_rad = check_float("LocalPF: loc_rad", loc_rad, 0.0)
        if self.loc_rad == 0.0:
            raise ValueError(f"LocalPF: loc_rad must be > 0, got {loc_rad!r}")
        self.mix = check_float("LocalPF: mix", mix, 0.0, 1.0)
        self.smooth = check_int("LocalPF: smooth", smooth, 0)
        self.jitter = check_float("LocalPF: jitter", jitter, 0.0)
        if math.isinf(self.jitter):
            raise ValueError(f"LocalPF: jitter must be finite, got {jitter!r}")
        self.rtps = check_float("LocalPF: rtps", rtps, 0.0, 1.0)
        self._rho: tuple[Tensor, int, Tensor] | None = None

    def _taper(self, locations: Tensor, n: int, like: Tensor) -> Tensor:
        cached = self._rho
        if (
            cached is not None
            and cached[1] == n
            and cached[0].shape == locations.shape
            and cached[0].device == locations.device
            and bool(torch.equal(cached[0], locations))
            and cached[2].dtype == like.dtype
            and cached[2].device == like.device
        ):
            return cached[2]
        rho = taper_matrix(locations, n, self.loc_rad, like)
        self._rho = (locations.detach().clone(), n, rho)
        return rho

    def local_weights(self, prior: ParticleState, obs: Observation) -> Tensor:
        """Normalised local weights ``(..., n, N)`` of the (valid) observations ``obs``."""
        if obs.locations is None:
            raise ValueError("LocalPF: observations have no locations (obs.locations is None)")
        if obs.locations.shape != (obs.p,):
            raise ValueError(
                f"LocalPF: obs.locations must have shape ({obs.p},), got {tuple(obs.locations.shape)}"
            )
        X = prior.particles
        rho = self._taper(obs.locations, X.shape[-1], X)
        logw = local_log_weights(X, torch.log(prior.weights.to(X)), obs, rho)
        return normalise_log_weights(logw)[0]

    def analyse(
        self,
        prior: ParticleState,
        obs: Observation,
        t: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> ParticleState:
        """Locally resampled, moment-matched, jittered particles with uniform weights."""
        prior = self.check_prior(prior)
        obs = obs.valid()
        X = prior.particles
        if obs.p == 0:
            e = ess(prior.weights.to(X))
            self._diag = {"n_obs": 0.0, "ess": float(e.mean()), "ess_min": float(e.min())}
            return prior
        W = self.local_weights(prior, obs)  # (..., n, N)
        e = ess(W)  # (..., n)
        self._diag = {"n_obs": float(obs.p), "ess": float(e.mean()), "ess_min": float(e.min())}
        N = self.N
        Xt = X.mT  # (..., n, N)
        mu = (W * Xt).sum(-1, keepdim=True)
        dev = Xt - mu
        correction = torch.where(e > 1.0 + 1e-9, e / (e - 1.0).clamp_min(1e-9), torch.ones_like(e))
        var = correction * (W * dev * dev).sum(-1)  # (..., n)
        if self.rtps > 0:  # relax the target spread towards the prior spread
            prior_sd = Xt.var(-1, unbiased=True).sqrt()
            var = ((1.0 - self.rtps) * var.sqrt() + self.rtps * prior_sd) ** 2

        u = uniform((), generator, X)  # one draw shared by every grid point
        idx = systematic(W, n_out=N, u=u)  # (..., n, N), sorted per point
        Xr = torch.gather(Xt, -1, idx)
        if self.smooth > 0:
            for o in range(1, self.smooth + 1):
                Xr = Xr + torch.gather(Xt, -1, torch.roll(idx, -o, -2))
                Xr = Xr + torch.gather(Xt, -1, torch.roll(idx, o, -2))
            Xr = Xr / (2 * self.smooth + 1)

        a = Xr - Xr.mean(-1, keepdim=True)
        if self.mix > 0:
            a = (1.0 - self.mix) * a + self.mix * (Xt - Xt.mean(-1, keepdim=True))
        va = (a * a).sum(-1) / (N - 1)
        tiny = torch.finfo(X.dtype).eps * (1.0 + var)
        scale = torch.where(va > tiny, (var / va.clamp_min(tiny)).sqrt(), torch.ones_like(va))
        Xa = mu + scale.unsqueeze(-1) * a

        if self.jitter > 0:
            C12 = (correction.unsqueeze(-1) * W).sqrt() * dev  # (..., n, N): local raw sqrt-cov
            z = torch.randn(
                (*X.shape[:-2], N, N),
                generator=generator,
                dtype=X.dtype,
                device=generator.device if generator is not None else X.device,
            ).to(X.device)
            Xa = Xa + self.jitter * (C12 @ z.mT)
        return ParticleState(Xa.mT, torch.full_like(prior.weights, 1.0 / N))

    def __repr__(self) -> str:
        return (
            f"LocalPF(N={self.N}, loc_rad={self.loc_rad}, mix={self.mix}, smooth={self.smooth}, "
            f"jitter={self.jitter}, rtps={self.rtps})"
        )
