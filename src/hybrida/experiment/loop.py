"""The DA–ML loop: analyses of sparse noisy observations train a surrogate that drives the next DA.

Brajard, Carrassi, Bocquet & Bertino (2020, J. Comput. Sci.; also Bocquet et
al. 2020): start from a crude state estimate (observations interpolated in
space), train a surrogate on it, assimilate the same observations with the
surrogate as forecast model, retrain on the new analyses, and repeat while a
validation score computed from the observations alone keeps improving. The
surrogate makes one step per analysis cycle.

The surrogate is imperfect, so the DA step treats it as a stochastic model,
x_{k+1} = Phi(x_k) + eta_k, eta_k ~ N(0, sigma_m^2 I) (Brajard et al. 2020 add
Gaussian model noise to the ensemble forecasts): :class:`~hybrida.models.noisy.NoisyModel` draws
eta from an explicit generator, and ``sigma_m`` is either given or estimated
each iteration from the one-step innovations of the current archive
(:func:`~hybrida.experiment.reanalysis.forecast_error_std`). The fits can weight
each training target by the inverse analysis variance 1 / (sigma_a^2 + c), as
in their code. The DA runs themselves (filter or fixed-lag smoother) are in
:mod:`hybrida.experiment.reanalysis`, re-exported here.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hybrida import metrics
from hybrida.assimilation.base import AssimilationMethod
from hybrida.experiment.reanalysis import Reanalysis, assimilate, forecast_error_std, smooth
from hybrida.learn.train import FitResult, TrajectoryDataset, auto_loss_scale, fit
from hybrida.models.base import Model
from hybrida.models.noisy import NoisyModel
from hybrida.models.surrogate import SurrogateModel
from hybrida.observations.base import Observation

__all__ = [
    "LoopResult",
    "LoopSettings",
    "LoopStep",
    "Reanalysis",
    "assimilate",
    "da_ml_loop",
    "forecast_error_std",
    "interpolate_observations",
    "observation_field",
    "observation_mask",
    "observation_score",
    "smooth",
]


def interpolate_observations(observations: Sequence[Observation], n: int, along: str = "space") -> Tensor:
    """Point observations linearly interpolated to every variable and cycle, ``(K, n)``: a first guess.

    Needs point observations with ``locations`` (grid-index units) and
    identity-like operators (y_i = x at location i), as the random-subset
    network of Brajard et al. (2020). ``along="space"``: each cycle's
    observations interpolated on the periodic grid 0..n-1 (a cycle without
    observations repeats the previous row). ``along="time"``: each variable's
    observations interpolated between the cycles that observe it (constant
    before the first and after the last) — much closer to the truth when the
    observed subset changes every cycle and the field has short spatial
    correlations, as Lorenz-96 has.
    """
    if along not in ("space", "time"):
        raise ValueError(f"interpolate_observations: along must be 'space' or 'time', got {along!r}")
    K = len(observations)
    values = np.full((K, n), np.nan)
    for k, obs in enumerate(observations):
        obs = obs.valid()
        if obs.locations is None:
            raise ValueError(f"interpolate_observations: observations of cycle {k + 1} have no locations")
        if obs.p:
            idx = np.rint(obs.locations.detach().cpu().double().numpy()).astype(int) % n
            values[k, idx] = obs.y.detach().cpu().double().numpy()
    if along == "space":
        grid = np.arange(n, dtype=float)
        rows: list[np.ndarray] = []
        for k in range(K):
            seen = np.isfinite(values[k])
            if not seen.any():
                rows.append(rows[-1].copy() if rows else np.zeros(n))
                continue
            rows.append(np.interp(grid, grid[seen], values[k, seen], period=n))
        out = np.stack(rows)
    else:
        times = np.arange(K, dtype=float)
        out = np.zeros((K, n))
        for i in range(n):
            seen = np.isfinite(values[:, i])
            if seen.any():
                out[:, i] = np.interp(times, times[seen], values[seen, i])
    ref = observations[0].y
    return torch.as_tensor(out, dtype=ref.dtype if ref.is_floating_point() else torch.float64)


def observation_mask(observations: Sequence[Observation], n: int) -> Tensor:
    """1 where a variable is observed (valid, point observation at an integer location), ``(K, n)``."""
    mask = torch.zeros(len(observations), n, dtype=torch.float64)
    for k, obs in enumerate(observations):
        obs = obs.valid()
        if obs.locations is not None and obs.p:
            mask[k, obs.locations.round().long() % n] = 1.0
    return mask


def observation_field(observations: Sequence[Observation], n: int) -> tuple[Tensor, Tensor]:
    """Point observations on the grid, ``(K, n)`` (NaN where unobserved), and their inverse error variances.

    Identity-like point observations with integer ``locations`` as in
    :func:`interpolate_observations`; the weights are 1 / R_ii (0 where unobserved).
    """
    values = torch.full((len(observations), n), math.nan, dtype=torch.float64)
    inv_var = torch.zeros(len(observations), n, dtype=torch.float64)
    for k, obs in enumerate(observations):
        obs = obs.valid()
        if obs.p == 0:
            continue
        if obs.locations is None:
            raise ValueError(f"observation_field: observations of cycle {k + 1} have no locations")
        idx = obs.locations.round().long() % n
        values[k, idx] = obs.y.detach().double().cpu()
        inv_var[k, idx] = 1.0 / obs.error.variance.detach().double().cpu()
    return values, inv_var


def observation_score(
    model: Model, analyses: Tensor, observations: Sequence[Observation], start: int = 0, lead: int = 1
) -> float:
    """Mean squared whitened innovation of ``lead``-step forecasts from the analyses: a truth-free skill score.

    (1/p) sum |R^{-1/2}(y_{k+lead} - H(M^lead(x^a_k)))|^2 averaged over
    analysis cycles k >= ``start``: about 1 + (forecast error variance)/(obs
    error variance) — larger for a worse model, and more sensitive to the
    model the longer the lead. ``analyses[k]`` is the analysis at cycle k
    (row 0 = initial), ``observations[k]`` those of cycle k + 1.
    """
    if isinstance(lead, bool) or int(lead) < 1:
        raise ValueError(f"observation_score: lead must be an integer >= 1, got {lead}")
    K = len(observations)
    if start + lead > K:
        raise ValueError(f"observation_score: no verifying observations after cycle {start} at lead {lead}")
    total, count = 0.0, 0
    with torch.no_grad():
        forecasts = model.forecast(analyses[start : K + 1 - lead], int(lead))
        for j, k in enumerate(range(start + lead, K + 1)):
            obs = observations[k - 1].valid()
            if obs.p == 0:
                continue
            r = obs.error.whiten(obs.y.to(forecasts) - obs.H(forecasts[j]))
            total += float((r * r).sum())
            count += obs.p
    return total / max(count, 1)


@dataclass
class LoopStep:
    """One DA–ML iteration: the fit, the analyses it led to and their scores."""

    iteration: int
    fit: FitResult
    obs_score: float
    rmse_a: float = math.nan
    diverged_at: int | None = None
    #: std of the additive model noise used in this iteration's DA (0: deterministic)
    model_noise: float = 0.0


@dataclass
class LoopResult:
    """The best surrogate of the loop (lowest validation observation score) and the history."""

    surrogate: SurrogateModel
    best_iteration: int
    steps: list[LoopStep] = field(default_factory=list)
    analyses: Tensor | None = None
    first_guess_rmse: float = math.nan


@dataclass(frozen=True)
class LoopSettings:
    """Settings of :func:`da_ml_loop` (Brajard et al. 2020), validated on construction.

    - ``interpolate``: how the first guess fills unobserved entries, ``"time"`` or ``"space"``
      (:func:`interpolate_observations`).
    - ``max_iterations``, ``patience``: at most this many DA–ML iterations; stop after
      ``patience`` iterations without a better observation score.
    - ``valid_fraction``: the last share of the cycles held out for early stopping of each fit
      and for the loop's :func:`observation_score` (forecasts of ``score_lead`` cycles).
    - ``initial_std``, ``burn_in``: the initial ensemble std of each DA run; cycles left out of
      the (twin-only) ``rmse_a``.
    - ``fit_kwargs`` go to every :func:`~hybrida.learn.train.fit`, updated by
      ``first_fit_kwargs`` for iteration 0 (e.g. more epochs from scratch).
    - ``model_noise``: ``None`` assimilates with the deterministic surrogate; a number is the
      std sigma_m of additive Gaussian noise per step (:class:`~hybrida.models.noisy.NoisyModel`);
      ``"innovation"`` sets sigma_m = ``noise_scale`` x :func:`forecast_error_std` of the
      surrogate's one-step forecasts over the validation cycles, re-estimated each iteration.
    - ``weight_by_spread``: fits after iteration 0 weight each target entry by
      1 / (sigma_a^2 + ``spread_floor``), sigma_a the analysis ensemble std (Brajard et al.'s code).
    - ``smoother``: ``{"N": .., "lag": .., "infl": ..}`` replaces the filter by a fixed-lag EnKS
      (:func:`smooth`): smoothed analyses as the next training targets.
    - ``targets``: what the fits after iteration 0 regress on — ``"analyses"`` (the next
      analyses, as Brajard et al.) or ``"observations"``: rollouts from the analyses scored
      against the later observations, weighted by 1 / R_ii (:func:`observation_field`).
      Observation targets are independent of the surrogate that made the analyses but did worse
      on Brajard's L96 setup (1.0 against 1.8 Lyapunov times, docs/benchmarks.md): the fit
      blurs the dynamics.
    - ``seed``: seeds every fit and every noise draw.
    """

    interpolate: str = "time"
    max_iterations: int = 5
    patience: int = 1
    valid_fraction: float = 0.2
    initial_std: float = 1.0
    burn_in: int = 0
    score_lead: int = 4
    fit_kwargs: dict[str, Any] = field(default_factory=dict)
    first_fit_kwargs: dict[str, Any] = field(default_factory=dict)
    model_noise: float | str | None = None
    noise_scale: float = 1.0
    weight_by_spread: bool = False
    spread_floor: float = 0.01
    smoother: dict[str, Any] | None = None
    targets: str = "analyses"
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, what: str) -> ValueError:
            return ValueError(f"LoopSettings: {name} must be {what}, got {getattr(self, name)!r}")

        if self.interpolate not in ("time", "space"):
            raise bad("interpolate", "'time' or 'space'")
        for name in ("max_iterations", "patience", "score_lead"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, "an integer >= 1")
        if isinstance(self.burn_in, bool) or not isinstance(self.burn_in, int) or self.burn_in < 0:
            raise bad("burn_in", "an integer >= 0")
        if not 0.0 < self.valid_fraction < 1.0:
            raise bad("valid_fraction", "in (0, 1)")
        if not (math.isfinite(self.initial_std) and self.initial_std > 0):
            raise bad("initial_std", "a finite number > 0")
        noise = self.model_noise
        if noise is not None and noise != "innovation" and (
            isinstance(noise, (str, bool)) or not (math.isfinite(float(noise)) and float(noise) >= 0)
        ):
            raise bad("model_noise", "None, a number >= 0 or 'innovation'")
        if not (math.isfinite(self.noise_scale) and self.noise_scale >= 0):
            raise bad("noise_scale", "a finite number >= 0")
        if not (math.isfinite(self.spread_floor) and self.spread_floor > 0):
            raise bad("spread_floor", "a finite number > 0")
        if self.targets not in ("analyses", "observations"):
            raise bad("targets", "'analyses' or 'observations'")
        if self.targets == "observations" and self.weight_by_spread:
            raise ValueError("LoopSettings: weight_by_spread applies to analysis targets only")


def _first_guess(
    observations: Sequence[Observation], n: int, first_guess: Tensor | None, along: str
) -> tuple[Tensor, Tensor | None]:
    """The archive of iteration 0, ``(K + 1, n)``, and its loss weights (observed entries only)."""
    K = len(observations)
    weights = None
    if first_guess is None:
        first_guess = interpolate_observations(observations, n, along=along)
        first_guess = torch.cat((first_guess[:1], first_guess))  # row 0: no observation at t=0
        mask = observation_mask(observations, n)
        weights = torch.cat((mask[:1], mask))
    if first_guess.shape != (K + 1, n):
        raise ValueError(
            f"da_ml_loop: first_guess must have shape {(K + 1, n)}, got {tuple(first_guess.shape)}"
        )
    return first_guess, weights


def _observation_targets(observations: Sequence[Observation], n: int, dtype) -> tuple[Tensor, Tensor]:
    """Observation values and 1 / R_ii weights as ``(K + 1, n)`` targets (row k: cycle k, NaN at 0)."""
    values, inv_var = observation_field(observations, n)
    nan_row = torch.full((1, n), math.nan, dtype=values.dtype)
    targets = torch.cat((nan_row, values)).to(dtype)
    weights = torch.cat((torch.zeros(1, n, dtype=inv_var.dtype), inv_var)).to(dtype)
    return targets, weights


def _noise_std(
    settings: LoopSettings, surrogate: SurrogateModel, archive: Tensor,
    observations: Sequence[Observation], cut: int,
) -> float:
    """sigma_m of this iteration's DA: fixed, none, or estimated from one-step innovations."""
    if settings.model_noise == "innovation":
        return settings.noise_scale * forecast_error_std(surrogate, archive, observations, start=cut)
    return 0.0 if settings.model_noise is None else float(settings.model_noise)


def da_ml_loop(
    make_surrogate: Callable[[Tensor], SurrogateModel],
    make_method: Callable[[], AssimilationMethod],
    observations: Sequence[Observation],
    n: int,
    settings: LoopSettings | None = None,
    *,
    first_guess: Tensor | None = None,
    truth: Tensor | None = None,
) -> LoopResult:
    """Alternate training on analyses and assimilation with the trained surrogate (Brajard et al. 2020).

    Iteration 0 trains on ``first_guess`` (``(K + 1, n)``; default: the observations
    interpolated as ``settings.interpolate`` says, with the loss restricted to observed
    entries) and later iterations on the previous analyses, warm-starting from the previous
    weights. Each iteration assimilates ``observations`` with ``make_method()`` and the
    surrogate (plus model noise, see :class:`LoopSettings`) and is scored on the held-out
    cycles by :func:`observation_score`; the loop stops after ``settings.max_iterations`` or
    when the score has not improved for ``settings.patience`` iterations, and returns the best
    surrogate. ``truth`` (optional, twin experiments) only adds ``rmse_a`` to the history.
    """
    cfg = settings or LoopSettings()
    K = len(observations)
    if K < 10:
        raise ValueError(f"da_ml_loop: need at least 10 cycles of observations, got {K}")
    cut = K + 1 - max(2, round(cfg.valid_fraction * (K + 1)))
    archive, weights = _first_guess(observations, n, first_guess, cfg.interpolate)
    fit_kwargs = {"progress": False, **cfg.fit_kwargs}
    first_rmse = math.nan
    if truth is not None:
        b = 1 + cfg.burn_in
        first_rmse = float(metrics.rmse(archive[b:], truth[b:]).mean())
    obs_targets = obs_weights = None
    if cfg.targets == "observations":
        obs_targets, obs_weights = _observation_targets(observations, n, archive.dtype)

    surrogate = make_surrogate(archive[:cut])
    best, best_score, best_iter, stale = None, math.inf, 0, 0
    steps: list[LoopStep] = []
    best_analyses = None
    for it in range(cfg.max_iterations):
        w_train = None if weights is None else weights[:cut]
        w_valid = None if weights is None else weights[cut:]
        kwargs = {**fit_kwargs, **cfg.first_fit_kwargs} if it == 0 else fit_kwargs
        train, valid = archive[:cut], archive[cut:]
        if it > 0 and obs_targets is not None:
            roll = {k: kwargs[k] for k in ("rollout", "steps_between") if k in kwargs}
            kwargs = {k: v for k, v in kwargs.items() if k not in roll}
            train, valid = (
                TrajectoryDataset(archive[a:b], weights=obs_weights[a:b], targets=obs_targets[a:b], **roll)
                for a, b in ((0, cut), (cut, K + 1))
            )
        kwargs = {"loss_scale": auto_loss_scale(archive[:cut]), **kwargs}
        result = fit(
            surrogate, train, valid, weights=w_train, valid_weights=w_valid,
            seed=cfg.seed + it, description=f"DA-ML iteration {it}", **kwargs,
        )
        weights = None  # later iterations train on complete analyses
        generator = torch.Generator().manual_seed(cfg.seed + 1000 + it)
        sigma_m = _noise_std(cfg, surrogate, archive, observations, cut)
        forecaster: Model = surrogate
        if sigma_m > 0:
            forecaster = NoisyModel(surrogate, sigma_m, torch.Generator().manual_seed(cfg.seed + 3000 + it))
        common = {"initial_std": cfg.initial_std, "truth": truth, "burn_in": cfg.burn_in, "generator": generator}
        if cfg.smoother is not None:
            ana = smooth(forecaster, archive[0], observations, **cfg.smoother, **common)
        else:
            ana = assimilate(forecaster, make_method(), archive[0], observations, **common)
        score = observation_score(surrogate, ana.mean, observations, start=cut, lead=cfg.score_lead)
        if ana.diverged_at is not None:
            score = math.inf
        steps.append(LoopStep(it, result, score, ana.rmse_a, ana.diverged_at, sigma_m))
        if score < best_score:
            best, best_score, best_iter, stale = copy.deepcopy(surrogate), score, it, 0
            best_analyses = ana.mean
        else:
            stale += 1
            if stale >= cfg.patience:
                break
        if ana.diverged_at is None:
            archive = ana.mean
            if cfg.weight_by_spread and ana.std is not None:
                weights = 1.0 / (ana.std**2 + cfg.spread_floor)
    if best is None:  # every iteration diverged: return the last surrogate, flagged by its scores
        best, best_analyses = surrogate, archive
    return LoopResult(best, best_iter, steps, best_analyses, first_rmse)
