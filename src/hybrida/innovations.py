"""Observation-space diagnostics that need no truth: O−B, O−A, χ², Desroziers, DFS.

With d_ob = y − H(x_b), d_oa = y − H(x_a) and d_ab = H(x_a) − H(x_b), an
analysis with the optimal gain K = BHᵀ(HBHᵀ + R)⁻¹ satisfies (Desroziers,
Berre, Chapnik & Poli 2005, eqs. 1–3)

    E[d_oa d_obᵀ] = R,    E[d_ab d_obᵀ] = HBHᵀ,    E[d_ob d_obᵀ] = HBHᵀ + R,

and E[d_abᵀ R⁻¹ d_oa] = tr(HK), the degrees of freedom for signal (DFS;
Chapnik et al. 2006). Averaging these products over observations and cycles
estimates σ_o² and σ_b² from the departures alone; a mismatch with the
assumed R or B says the system is mis-specified. The innovations use the
background and analysis *means*, H(x̄); HBHᵀ on its diagonal comes from the
prior ensemble (as the method receives it, before its own inflation), from a
Gaussian state's covariance, or from a static B for a linear H.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hybrida.assimilation.base import GaussianState, State, state_mean, state_members
from hybrida.observations.base import Observation

__all__ = ["CycleInnovations", "background_variance", "cycle_innovations", "summarize_innovations"]


@dataclass
class CycleInnovations:
    """Departures of one cycle, per observation ``(p,)``, NaN where the value is missing.

    ``hbh`` is diag(HBHᵀ) (NaN where the prior gives no covariance), ``r``
    diag(R), ``used`` marks the observations the analysis used (False where
    quality control rejected them; their departures are kept for the record
    but left out of the statistics).
    """

    omb: Tensor
    oma: Tensor
    hbh: Tensor
    r: Tensor
    used: Tensor | None = None

    def sums(self) -> dict[str, float]:
        """Sums over the used, valid observations of the products the summary averages."""
        ok = torch.isfinite(self.omb) & torch.isfinite(self.oma)
        if self.used is not None:
            ok = ok & self.used.to(ok.device)
        d_ob, d_oa, r = self.omb[ok], self.oma[ok], self.r[ok]
        d_ab = d_ob - d_oa
        hbh = self.hbh[ok]
        s = hbh + r
        return {
            "n": float(ok.sum()),
            "omb": float(d_ob.sum()),
            "omb2": float((d_ob * d_ob).sum()),
            "oma": float(d_oa.sum()),
            "oma2": float((d_oa * d_oa).sum()),
            "oa_ob": float((d_oa * d_ob).sum()),
            "ab_ob": float((d_ab * d_ob).sum()),
            "r": float(r.sum()),
            "hbh": float(hbh.sum()),
            "chi2": float((d_ob * d_ob / s).sum()),
            "dfs": float((d_ab * d_oa / r).sum()),
            # Gaussian log density of the innovations, -1/2 sum [log 2 pi F + v^2 / F] with F = HBH^T + R
            # on its diagonal (prediction-error decomposition; Harvey 1989, Durbin & Koopman 2012 sec. 7.2)
            "loglik": float(-0.5 * (torch.log(2 * math.pi * s) + d_ob * d_ob / s).sum()),
        }

    def scalars(self) -> dict[str, float]:
        """Per-cycle summary: O−B and O−A mean and rms, χ² per observation, DFS."""
        s = self.sums()
        n = s["n"]
        if n == 0:
            return {k: math.nan for k in ("omb_mean", "omb_rms", "oma_mean", "oma_rms", "chi2", "dfs")}
        return {
            "omb_mean": s["omb"] / n,
            "omb_rms": math.sqrt(s["omb2"] / n),
            "oma_mean": s["oma"] / n,
            "oma_rms": math.sqrt(s["oma2"] / n),
            "chi2": s["chi2"] / n,
            "dfs": s["dfs"],
        }


def background_variance(prior: State, obs: Observation, n: int, B: Tensor | None = None) -> Tensor:
    """diag(HBHᵀ) ``(p,)``: from the prior ensemble's spread in observation space, a Gaussian
    state's covariance or a static ``B`` (linear H only); NaN when none is available.

    ``n`` is the physical state size (H's input); augmented states are cut to it.
    """
    members = state_members(prior)
    if members is not None and members.ndim == 2 and members.shape[0] > 1 and not hasattr(prior, "weights"):
        return obs.H(members[..., :n]).var(0, unbiased=True)
    cov = prior.cov if isinstance(prior, GaussianState) else None
    if cov is None and B is not None and isinstance(prior, Tensor) and prior.ndim == 1:
        cov = B
    if cov is not None and obs.matrix is not None:
        M = obs.matrix.to(cov)
        return ((M @ cov[:n, :n]) * M).sum(-1)
    return torch.full_like(obs.y, math.nan)


def cycle_innovations(
    obs: Observation,
    prior: State,
    posterior: State,
    n: int,
    B: Tensor | None = None,
    used: Tensor | None = None,
) -> CycleInnovations:
    """O−B, O−A and diag(HBHᵀ) of one cycle for the observations ``obs`` (NaN values stay NaN).

    ``n`` is the physical state size: the means are cut to it when the method
    cycles an augmented state (parameters after the physical state).
    """
    xb, xa = state_mean(prior)[..., :n], state_mean(posterior)[..., :n]
    with torch.no_grad():
        y = obs.y.to(xb)
        omb = y - obs.H(xb)
        oma = y - obs.H(xa)
        hbh = background_variance(prior, obs, n, B).to(xb)
    return CycleInnovations(omb=omb, oma=oma, hbh=hbh, r=obs.error.variance.to(xb), used=used)


def summarize_innovations(cycles: Sequence[CycleInnovations]) -> dict[str, float]:
    """Time- and observation-averaged statistics over ``cycles``.

    * ``omb_rms``, ``oma_rms``, ``omb_mean`` (a non-zero mean is a bias);
    * ``desroziers_sigma_o`` = sqrt(mean d_oa·d_ob), ``desroziers_sigma_b`` = sqrt(mean d_ab·d_ob)
      (NaN when the mean is negative), and ``sigma_o_assumed`` = sqrt(mean diag R);
      their squared ratio ``desroziers_r_ratio`` is the factor by which R should be scaled;
    * ``chi2_per_obs``: mean d_ob² / (HBHᵀ + R), ≈ 1 for a consistent system;
    * ``spread_ratio``: mean d_ob² / mean(HBHᵀ + R) with the diagonals averaged first;
    * ``dfs_per_cycle``: mean over cycles of d_abᵀ R⁻¹ d_oa (its expectation is tr(HK));
    * ``innovation_loglik``: the innovation log-likelihood (prediction-error decomposition;
      Harvey 1989; Durbin & Koopman 2012, sec. 7.2)
      log L = −½ Σ_k Σ_i [log 2π F_ki + v_ki² / F_ki],  v = O−B,  F = diag(HBHᵀ) + diag(R),
      exact for one observation per cycle or a diagonal HBHᵀ + R (otherwise its diagonal
      approximation); NaN when the prior gives no HBHᵀ. Leave the cycles of a diffuse start out
      of ``cycles``, as Durbin & Koopman do.
    """
    keys = ("n", "omb", "omb2", "oma", "oma2", "oa_ob", "ab_ob", "r", "hbh", "chi2", "dfs", "loglik")
    total = dict.fromkeys(keys, 0.0)
    for c in cycles:
        for k, v in c.sums().items():
            total[k] += v
    n = total["n"]
    if n == 0:
        return {
            k: math.nan
            for k in ("omb_mean", "omb_rms", "oma_rms", "desroziers_sigma_o", "desroziers_sigma_b",
                      "sigma_o_assumed", "desroziers_r_ratio", "chi2_per_obs", "spread_ratio",
                      "dfs_per_cycle")
        } | {"n_innovations": 0, "innovation_loglik": 0.0}

    def root(v: float) -> float:
        return math.sqrt(v) if v >= 0 else math.nan

    r_mean = total["r"] / n
    return {
        "omb_mean": total["omb"] / n,
        "omb_rms": math.sqrt(total["omb2"] / n),
        "oma_rms": math.sqrt(total["oma2"] / n),
        "desroziers_sigma_o": root(total["oa_ob"] / n),
        "desroziers_sigma_b": root(total["ab_ob"] / n),
        "sigma_o_assumed": math.sqrt(r_mean),
        "desroziers_r_ratio": total["oa_ob"] / total["r"],
        "chi2_per_obs": total["chi2"] / n,
        "spread_ratio": total["omb2"] / (total["hbh"] + total["r"]),
        "dfs_per_cycle": total["dfs"] / len(cycles),
        "n_innovations": int(n),
        "innovation_loglik": total["loglik"],
    }
