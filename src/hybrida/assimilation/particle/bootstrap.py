"""Bootstrap (SIR) particle filter with regularised resampling (Gordon, Salmond & Smith 1993)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.assimilation.base import ParticleState
from hybrida.assimilation.particle.base import (
    ParticleMethod,
    check_float,
    log_likelihood,
)
from hybrida.assimilation.particle.regularize import bandwidth, kernel_noise, weighted_sqrt_cov
from hybrida.assimilation.particle.resampling import (
    SCHEMES,
    duplicated,
    ess,
    normalise_log_weights,
    resample,
)
from hybrida.observations.base import Observation


class BootstrapPF(ParticleMethod):
    """Bootstrap particle filter: importance weights from the likelihood, resampling, jitter.

    Analysis (Gordon et al. 1993), in log-weights:
    log w_i ← log w_i + log N(y - H(x_i); 0, R), normalised by log-sum-exp.
    When ESS = 1/Σ w_i² <= ``NER`` · N (always when ``NER`` >= 1), the
    particles are resampled by ``resampling`` (systematic by default) and the
    weights reset to 1/N; then, if ``reg`` > 0, the copies of duplicated
    particles (all particles with ``jitter_all=True``) are jittered with
    N(0, (h · reg)² C), C the weighted covariance of the particles before
    resampling and h = N^{-1/(n+4)} — the regularised PF of Musso, Oudjane &
    Le Gland (2001), with ``reg``, ``NER`` and the duplicates-only jitter
    following DAPPER's ``PartFilt`` so that tuned settings carry over.

    Particles ``(..., N, n)`` may carry leading batch dimensions (independent
    filters); diagnostics then average over them. :meth:`diagnostics`: ``n_obs``,
    ``ess`` (before resampling), ``resampled`` (0/1), ``log_evidence``
    (log Σ w_i p(y | x_i), the marginal-likelihood increment) and ``degenerate`` (0/1).

    Scoring note: the cycle scores the particles this method returns, i.e.
    after resampling and jitter; DAPPER's ``PartFilt`` scores the weighted
    particles before resampling (a slightly less noisy mean). Missing (NaN) observations
    are dropped; with none left the prior is returned. If every likelihood
    underflows or is non-finite (weight collapse beyond log-domain range), the
    prior weights are kept and ``degenerate`` is 1.
    """

    def __init__(
        self,
        N: int,
        reg: float = 0.0,
        NER: float = 1.0,
        resampling: str = "systematic",
        jitter_all: bool = False,
    ):
        super().__init__(N)
        self.reg = check_float("BootstrapPF: reg", reg, 0.0)
        if math.isinf(self.reg):
            raise ValueError(f"BootstrapPF: reg must be finite, got {reg!r}")
        self.NER = check_float("BootstrapPF: NER", NER, 0.0, 1.0)
        if resampling not in SCHEMES:
            raise ValueError(
                f"BootstrapPF: unknown resampling '{resampling}'; choose one of: {', '.join(SCHEMES)}"
            )
        self.resampling = resampling
        if not isinstance(jitter_all, bool):
            raise ValueError(f"BootstrapPF: jitter_all must be True or False, got {jitter_all!r}")  # noqa: TRY004
        self.jitter_all = jitter_all

    def reweight(self, prior: ParticleState, obs: Observation) -> tuple[Tensor, Tensor, Tensor]:
        """Posterior weights ``(..., N)``, log-evidence increment ``(...)`` and collapse mask ``(...)``.

        log p(y | y_past) ≈ log Σ_i w_i p(y | x_i); where that is -inf (all
        likelihoods underflow) the prior weights are returned unchanged.
        """
        X, w0 = prior.particles, prior.weights.to(prior.particles)
        logw = torch.log(w0) + log_likelihood(X, obs)
        w, log_evidence = normalise_log_weights(logw)
        collapsed = ~torch.isfinite(log_evidence)
        w = torch.where(collapsed.unsqueeze(-1), w0 / w0.sum(-1, keepdim=True), w)
        return w, log_evidence, collapsed

    def analyse(
        self,
        prior: ParticleState,
        obs: Observation,
        t: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> ParticleState:
        """Weighted (and, when ESS is low, resampled and jittered) particles given ``obs``."""
        prior = self.check_prior(prior)
        obs = obs.valid()
        X = prior.particles
        if obs.p == 0:
            e = ess(prior.weights.to(X))
            self._diag = {
                "n_obs": 0.0,
                "ess": float(e.mean()),
                "resampled": 0.0,
                "log_evidence": 0.0,
                "degenerate": 0.0,
            }
            return prior
        w, log_evidence, collapsed = self.reweight(prior, obs)
        e = ess(w)
        trigger = (
            torch.ones_like(e, dtype=torch.bool) if self.NER >= 1.0 else e <= self.NER * self.N
        )
        self._diag = {
            "n_obs": float(obs.p),
            "ess": float(e.mean()),
            "resampled": float(trigger.to(e.dtype).mean()),
            "log_evidence": float(log_evidence.mean()),
            "degenerate": float(collapsed.to(e.dtype).mean()),
        }
        if not bool(trigger.any()):
            return ParticleState(X, w)
        Xr, wr = self._resample(X, w, generator)
        if bool(trigger.all()):
            return ParticleState(Xr, wr)
        keep = trigger.unsqueeze(-1)
        return ParticleState(torch.where(keep.unsqueeze(-1), Xr, X), torch.where(keep, wr, w))

    def _resample(
        self, X: Tensor, w: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """Resampled, regularised particles and uniform weights."""
        N, n = X.shape[-2], X.shape[-1]
        idx = resample(w, generator, self.resampling)
        Xr = torch.gather(X, -2, idx.unsqueeze(-1).expand(*idx.shape, n))
        if self.reg > 0:
            C12 = weighted_sqrt_cov(X, w)
            noise = kernel_noise(C12, self.reg * bandwidth(N, n), generator, N)
            if not self.jitter_all:
                noise = noise * duplicated(idx).unsqueeze(-1).to(noise)
            Xr = Xr + noise
        return Xr, torch.full_like(w, 1.0 / N)

    def __repr__(self) -> str:
        return (
            f"BootstrapPF(N={self.N}, reg={self.reg}, NER={self.NER}, "
            f"resampling='{self.resampling}', jitter_all={self.jitter_all})"
        )
