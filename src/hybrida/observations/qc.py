"""Observation quality control: background check, learned gross-error detector, gross-error scenario.

Every check follows one contract, ``screen(obs, prior) -> (obs', flags)``:
rejected values become NaN in ``obs'`` (so every method masks them, as it
masks missing data) and ``flags`` ``(p,)`` int8 say why (QC_GOOD 0,
QC_MISSING 1, QC_BACKGROUND 2, QC_LEARNED 3; QC_VARQC 4 is set after a
variational analysis, see :mod:`hybrida.assimilation.variational.robust`).

The innovation d = y - H(x_b) of a good observation has variance
diag(H B H^T) + diag(R); the background check rejects

    |d_i| > k sqrt((H B H^T)_ii + R_ii)                       (Lorenc & Hammon 1988; ECMWF first-guess check)

with H B H^T from the ensemble spread in observation space (ensemble priors),
from the prior covariance (Gaussian priors) or from a static B given to the
check (3D-Var). The learned detector (Lorenc & Hammon's Bayesian check made
empirical) classifies each observation from its normalised innovation, its
neighbours' and the cycle's median, and the background-to-observation spread
ratio; it is trained on twins with injected gross errors
(:func:`hybrida.learn.qc.fit_gross_error_detector`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from hybrida.nn.common import seeded
from hybrida.observations.base import Observation
from hybrida.observations.system import ObservationSystem

if TYPE_CHECKING:  # observations sit below assimilation: states are duck-typed at run time
    from hybrida.assimilation.base import State

__all__ = [
    "QC_BACKGROUND",
    "QC_GOOD",
    "QC_LEARNED",
    "QC_MISSING",
    "QC_VARQC",
    "BackgroundCheck",
    "Chain",
    "GrossErrorObs",
    "LearnedGrossErrorDetector",
    "QualityControl",
    "detection_rates",
    "innovation_features",
    "missing_flags",
    "normalised_innovations",
]

QC_GOOD, QC_MISSING, QC_BACKGROUND, QC_LEARNED, QC_VARQC = 0, 1, 2, 3, 4


@runtime_checkable
class QualityControl(Protocol):
    """A quality-control check applied to the observations of one cycle before the analysis."""

    def screen(self, obs: Observation, prior: State) -> tuple[Observation, Tensor]:
        """The observations with rejected values set to NaN, and int8 flags ``(p,)``."""
        ...


def missing_flags(obs: Observation) -> Tensor:
    """int8 flags ``(p,)``: QC_GOOD where ``y`` is finite, QC_MISSING where it is NaN."""
    return torch.where(torch.isfinite(obs.y), QC_GOOD, QC_MISSING).to(torch.int8)


def _reject(obs: Observation, flags: Tensor, bad: Tensor, code: int) -> tuple[Observation, Tensor]:
    """Set y to NaN and the flag to ``code`` where ``bad`` (only on observations still good)."""
    bad = bad & (flags == QC_GOOD)
    flags = torch.where(bad, torch.tensor(code, dtype=torch.int8, device=flags.device), flags)
    return replace(obs, y=torch.where(bad.to(obs.y.device), torch.nan, obs.y), matrix=obs.stored_matrix, meta=dict(obs.meta)), flags


def _hbh_diag(obs: Observation, mean: Tensor, cov: Tensor) -> Tensor:
    """diag(H P H^T) for a covariance P at ``mean`` (H linearised by autodiff where no matrix is given)."""
    if obs.matrix is not None:
        Hm = obs.matrix.to(cov)
    else:
        Hm = torch.func.jacrev(obs.operator)(mean.detach())
    return ((Hm @ cov) * Hm).sum(-1)


def normalised_innovations(
    obs: Observation, prior: State, B: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Innovations d = y - H(x_b), their predicted std s = sqrt(diag(H B H^T) + diag(R)), and sqrt(diag HBH^T).

    x_b and H B H^T come from the prior: an ensemble ``(N, n)`` (mean of H(members),
    their unbiased variance), a :class:`GaussianState` (mean, covariance) or a
    single state ``(n,)`` with the static ``B`` (required then). All ``(p,)``; NaN where y is.
    """
    if hasattr(prior, "current"):  # WindowState
        prior = prior.current
    R = obs.error.variance
    with torch.no_grad():
        if isinstance(prior, Tensor) and prior.ndim >= 2:
            hE = obs.H(prior)
            hx = hE.mean(-2)
            hbh = hE.var(-2, unbiased=True)
        elif isinstance(prior, Tensor):
            if B is None:
                raise ValueError("quality control: a single-state prior needs a static B (pass B= to the check)")
            hx = obs.H(prior)
            hbh = _hbh_diag(obs, prior, B.to(prior))
        elif hasattr(prior, "mean") and hasattr(prior, "cov"):  # GaussianState
            hx = obs.H(prior.mean)
            hbh = _hbh_diag(obs, prior.mean, prior.cov)
        else:
            raise ValueError(f"quality control: unsupported prior type {type(prior).__name__}")
        d = obs.y.to(hx) - hx
        s = (hbh + R.to(hx)).sqrt()
    return d, s, hbh.clamp_min(0).sqrt()


class BackgroundCheck:
    """Reject observations with |y - H(x_b)| > k sqrt(diag(H B H^T) + diag(R)) (flag 2).

    ``B``: the static background covariance for single-state priors (3D-Var's
    ``method.B``); ensemble and Gaussian priors bring their own.
    """

    def __init__(self, k: float = 5.0, B: Tensor | None = None):
        if not (math.isfinite(k) and k > 0):
            raise ValueError(f"BackgroundCheck: k must be finite and > 0, got {k}")
        self.k = float(k)
        self.B = B

    def screen(self, obs: Observation, prior: State) -> tuple[Observation, Tensor]:
        flags = missing_flags(obs)
        d, s, _ = normalised_innovations(obs, prior, self.B)
        bad = ((d.abs() > self.k * s) & torch.isfinite(d)).to(flags.device)
        return _reject(obs, flags, bad, QC_BACKGROUND)


def _neighbours(obs: Observation, z: Tensor) -> tuple[Tensor, Tensor]:
    """Values of ``z`` at the previous and next observation in location order (periodic), NaN -> 0."""
    order = torch.argsort(obs.locations) if obs.locations is not None else torch.arange(z.shape[-1])
    order = order.to(z.device)
    zs = torch.nan_to_num(z[order])
    left, right = torch.empty_like(z), torch.empty_like(z)
    left[order] = zs.roll(1)
    right[order] = zs.roll(-1)
    return left, right


#: number of features of :func:`innovation_features`
N_FEATURES = 5


def innovation_features(obs: Observation, prior: State, B: Tensor | None = None) -> Tensor:
    """Per-observation features ``(p, 5)`` of the learned detector.

    [|z_i|, |z_left|, |z_right|, median_j |z_j|, sqrt(HBH^T_ii / R_ii)] with
    z = d / s the normalised innovation (:func:`normalised_innovations`),
    neighbours in location order and the median over the cycle's valid
    observations (context: a poor background inflates every |z|). |z| enters
    as log(1 + |z|) to keep gross errors in range. NaN rows where y is missing.
    """
    d, s, sb = normalised_innovations(obs, prior, B)
    a = torch.log1p((d / s).abs())
    left, right = _neighbours(obs, a)
    fin = torch.isfinite(a)
    med = a[fin].median() if bool(fin.any()) else a.new_zeros(())
    ratio = sb / obs.error.std.to(sb)
    feats = torch.stack([a, left, right, med.expand_as(a), ratio], -1)
    return torch.where(fin.unsqueeze(-1), feats, torch.nan)


class LearnedGrossErrorDetector(nn.Module):
    """A small MLP classifier p(gross | features) on innovation features; rejects where p > ``threshold`` (flag 3).

    Input ``(..., 5)`` from :func:`innovation_features`, output logits
    ``(...,)``. ``threshold`` is chosen on validation data for a target
    false-alarm rate by :func:`hybrida.learn.qc.fit_gross_error_detector`.
    ``B`` as for :class:`BackgroundCheck`.
    """

    def __init__(self, width: int = 32, depth: int = 2, seed: int | None = None, B: Tensor | None = None):
        super().__init__()
        self.config = {"width": int(width), "depth": int(depth)}
        with seeded(seed):
            layers: list[nn.Module] = []
            d_in = N_FEATURES
            for _ in range(int(depth)):
                layers += [nn.Linear(d_in, int(width)), nn.Tanh()]
                d_in = int(width)
            layers.append(nn.Linear(d_in, 1))
            self.net = nn.Sequential(*layers).double()
        self.threshold = 0.5
        self.B = B

    def forward(self, features: Tensor) -> Tensor:
        p = next(self.parameters())
        return self.net(features.to(p)).squeeze(-1)

    def probability(self, obs: Observation, prior: State) -> Tensor:
        """p(gross error) ``(p,)`` of each observation (NaN where missing)."""
        f = innovation_features(obs, prior, self.B)
        with torch.no_grad():
            prob = torch.sigmoid(self(torch.nan_to_num(f)))
        return torch.where(torch.isfinite(f[:, 0]).to(prob.device), prob, torch.nan)

    def screen(self, obs: Observation, prior: State) -> tuple[Observation, Tensor]:
        flags = missing_flags(obs)
        prob = self.probability(obs, prior)
        bad = (prob > self.threshold).to(flags.device)
        return _reject(obs, flags, bad, QC_LEARNED)

    def save(self, path: str | Path) -> None:
        """Weights, architecture and threshold in one file."""
        torch.save({"config": self.config, "state": self.state_dict(), "threshold": self.threshold}, path)

    @classmethod
    def load(cls, path: str | Path, B: Tensor | None = None) -> LearnedGrossErrorDetector:
        """A detector saved by :meth:`save`."""
        blob = torch.load(path, map_location="cpu", weights_only=True)
        det = cls(**blob["config"], B=B)
        det.load_state_dict(blob["state"])
        det.threshold = float(blob["threshold"])
        return det


class Chain:
    """Apply checks in turn; each sees the survivors of the previous one, the first rejection's flag is kept."""

    def __init__(self, checks: Sequence[QualityControl]):
        self.checks = list(checks)

    def screen(self, obs: Observation, prior: State) -> tuple[Observation, Tensor]:
        flags = missing_flags(obs)
        for check in self.checks:
            obs, f = check.screen(obs, prior)
            flags = torch.where(flags == QC_GOOD, f, flags)
        return obs, flags


class GrossErrorObs(ObservationSystem):
    """Observations of ``inner`` with gross errors ±``k`` sigma_o added with probability ``prob`` each.

    The sign is ± with equal odds; both draws use the generator of
    :meth:`observe` (after the inner system's own draws). The true gross-error
    mask ``(p,)`` is recorded in ``meta["gross"]`` for hit and false-alarm rates,
    the added errors in ``meta["gross_error"]`` (y - gross_error is the clean value).
    """

    def __init__(self, inner: ObservationSystem, prob: float = 0.1, k: float = 10.0):
        if not (0.0 <= prob <= 1.0):
            raise ValueError(f"GrossErrorObs: prob must lie in [0, 1], got {prob}")
        self.inner, self.prob, self.k = inner, float(prob), float(k)
        self.every = inner.every

    def network(self, cycle: int, generator: torch.Generator | None = None) -> Observation:
        return self.inner.network(cycle, generator)

    def observe(self, x_true: Tensor, cycle: int, generator: torch.Generator | None = None) -> Observation:
        o = self.inner.observe(x_true, cycle, generator)
        p = o.p
        u = torch.rand(p, generator=generator, dtype=torch.float64)
        sign = torch.rand(p, generator=generator, dtype=torch.float64) < 0.5
        gross = u < self.prob
        shift = torch.where(sign, 1.0, -1.0) * self.k * o.error.std.cpu().double()
        added = torch.where(gross, shift, 0.0).to(o.y)
        o.y = o.y + added
        o.meta = {**o.meta, "gross": gross.to(o.y.device), "gross_error": added}
        return o


def detection_rates(flags: Sequence[Tensor], gross: Sequence[Tensor]) -> tuple[float, float]:
    """Hit rate P(rejected | gross) and false-alarm rate P(rejected | clean), over available observations.

    A flag >= 2 counts as a rejection; missing values (flag 1) are left out.
    """
    f = torch.cat([x.flatten().cpu() for x in flags])
    g = torch.cat([x.flatten().cpu().bool() for x in gross])
    avail = f != QC_MISSING
    rej = f >= QC_BACKGROUND
    n_g, n_c = int((g & avail).sum()), int((~g & avail).sum())
    hit = float((rej & g & avail).sum()) / n_g if n_g else math.nan
    far = float((rej & ~g & avail).sum()) / n_c if n_c else math.nan
    return hit, far
