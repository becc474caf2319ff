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
from hybrida.learn.train import FitResult, TrajectoryDataset, fit
from hybrida.models.base import Model
from hybrida.models.noisy import NoisyModel
from hybrida.models.surrogate import SurrogateModel
from hybrida.observations.base import Observation

__all__ = [
    "LoopResult",
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


def da_ml_loop(
    make_surrogate: Callable[[Tensor], SurrogateModel],
    make_method: Callable[[], AssimilationMethod],
    observations: Sequence[Observation],
    n: int,
    *,
    first_guess: Tensor | None = None,
    interpolate: str = "time",
    truth: Tensor | None = None,
    max_iterations: int = 5,
    patience: int = 1,
    valid_fraction: float = 0.2,
    initial_std: float = 1.0,
    burn_in: int = 0,
    score_lead: int = 4,
    fit_kwargs: dict[str, Any] | None = None,
    first_fit_kwargs: dict[str, Any] | None = None,
    model_noise: float | str | None = None,
    noise_scale: float = 1.0,
    weight_by_spread: bool = False,
    spread_floor: float = 0.01,
    smoother: dict[str, Any] | None = None,
    targets: str = "analyses",
    seed: int = 0,
) -> LoopResult:
    """Alternate training on analyses and assimilation with the trained surrogate (Brajard et al. 2020).

    Iteration 0 trains on ``first_guess`` (``(K + 1, n)``; default: the
    observations interpolated ``interpolate="time"`` or ``"space"`` by
    :func:`interpolate_observations`, with the loss restricted to observed
    entries) and later iterations on the previous analyses, warm-starting from
    the previous weights. The last ``valid_fraction`` of the cycles is held out:
    early stopping of each fit and the loop's :func:`observation_score`
    (forecasts of ``score_lead`` cycles) use it. The loop stops after ``max_iterations`` or when the score has not
    improved for ``patience`` iterations; the best surrogate is returned.
    ``truth`` (optional, twin experiments) only adds ``rmse_a`` to the history.
    ``fit_kwargs`` go to every :func:`~hybrida.learn.train.fit`, updated by
    ``first_fit_kwargs`` for iteration 0 (e.g. more epochs from scratch).

    Model error in the DA step: ``model_noise=None`` assimilates with the
    deterministic surrogate; a number is the std sigma_m of additive Gaussian
    noise per step (:class:`~hybrida.models.noisy.NoisyModel`); ``"innovation"`` sets sigma_m =
    ``noise_scale`` x :func:`forecast_error_std` of the surrogate's one-step
    forecasts from the current archive over the validation cycles, re-estimated
    every iteration. Noise draws are seeded from ``seed``.
    ``smoother``: ``{"N": .., "lag": .., "infl": ..}`` replaces the filter of
    ``make_method`` by a fixed-lag EnKS (:func:`smooth`): smoothed analyses as
    the next training targets.
    ``weight_by_spread``: fits after iteration 0 weight each target entry by
    1 / (sigma_a^2 + ``spread_floor``), sigma_a the analysis ensemble std
    (Brajard et al.'s code).
    ``targets``: what the fits after iteration 0 regress on — ``"analyses"``
    (the next analyses, as Brajard et al.) or ``"observations"``: rollouts from
    the analyses scored against the later observations themselves, weighted by
    1 / R_ii (:func:`observation_field`). Observation targets are noisier but
    independent of the surrogate that made the analyses. On Brajard's L96 setup
    they did worse (1.0 against 1.8 Lyapunov times, docs/benchmarks.md): the
    inputs' analysis errors are no longer matched by the correlated errors of
    analysis targets, and the fit blurs the dynamics.
    """
    K = len(observations)
    if K < 10:
        raise ValueError(f"da_ml_loop: need at least 10 cycles of observations, got {K}")
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"da_ml_loop: valid_fraction must lie in (0, 1), got {valid_fraction}")
    if isinstance(max_iterations, bool) or int(max_iterations) < 1:
        raise ValueError(
            f"da_ml_loop: max_iterations must be an integer >= 1, got {max_iterations}"
        )
    fixed = model_noise is not None and model_noise != "innovation"
    if fixed and (
        isinstance(model_noise, str)
        or not (math.isfinite(float(model_noise)) and float(model_noise) >= 0)
    ):
        raise ValueError(
            f"da_ml_loop: model_noise must be None, a number >= 0 or 'innovation', got {model_noise!r}"
        )
    if not (math.isfinite(noise_scale) and noise_scale >= 0):
        raise ValueError(f"da_ml_loop: noise_scale must be a finite number >= 0, got {noise_scale}")
    if not (math.isfinite(spread_floor) and spread_floor > 0):
        raise ValueError(f"da_ml_loop: spread_floor must be a finite number > 0, got {spread_floor}")
    if targets not in ("analyses", "observations"):
        raise ValueError(f"da_ml_loop: targets must be 'analyses' or 'observations', got {targets!r}")
    if targets == "observations" and weight_by_spread:
        raise ValueError("da_ml_loop: weight_by_spread applies to analysis targets only")
    cut = K + 1 - max(2, round(valid_fraction * (K + 1)))
    weights = None
    if first_guess is None:
        first_guess = interpolate_observations(observations, n, along=interpolate)
        first_guess = torch.cat((first_guess[:1], first_guess))  # row 0: no observation at t=0
        mask = observation_mask(observations, n)
        weights = torch.cat((mask[:1], mask))
    if first_guess.shape != (K + 1, n):
        raise ValueError(
            f"da_ml_loop: first_guess must have shape {(K + 1, n)}, got {tuple(first_guess.shape)}"
        )
    fit_kwargs = {"progress": False, **(fit_kwargs or {})}
    first_rmse = math.nan
    if truth is not None:
        first_rmse = float(metrics.rmse(first_guess[1 + burn_in :], truth[1 + burn_in :]).mean())

    obs_targets = obs_weights = None
    if targets == "observations":
        values, inv_var = observation_field(observations, n)
        nan_row = torch.full((1, n), math.nan, dtype=values.dtype)
        obs_targets = torch.cat((nan_row, values)).to(first_guess.dtype)  # row k: cycle k
        obs_weights = torch.cat((torch.zeros(1, n, dtype=inv_var.dtype), inv_var)).to(first_guess.dtype)
    archive = first_guess
    surrogate = make_surrogate(archive[:cut])
    best, best_score, best_iter, stale = None, math.inf, 0, 0
    steps: list[LoopStep] = []
    best_analyses = None
    for it in range(int(max_iterations)):
        w_train = None if weights is None else weights[:cut]
        w_valid = None if weights is None else weights[cut:]
        kwargs = {**fit_kwargs, **(first_fit_kwargs or {})} if it == 0 else fit_kwargs
        train, valid = archive[:cut], archive[cut:]
        if it > 0 and obs_targets is not None:
            roll = {k: kwargs[k] for k in ("rollout", "steps_between") if k in kwargs}
            kwargs = {k: v for k, v in kwargs.items() if k not in roll}
            train, valid = (
                TrajectoryDataset(archive[a:b], weights=obs_weights[a:b], targets=obs_targets[a:b], **roll)
                for a, b in ((0, cut), (cut, K + 1))
            )
        result = fit(
            surrogate,
            train,
            valid,
            weights=w_train,
            valid_weights=w_valid,
            seed=seed + it,
            description=f"DA-ML iteration {it}",
            **kwargs,
        )
        weights = None  # later iterations train on complete analyses
        generator = torch.Generator().manual_seed(seed + 1000 + it)
        if model_noise == "innovation":
            sigma_m = noise_scale * forecast_error_std(surrogate, archive, observations, start=cut)
        else:
            sigma_m = 0.0 if model_noise is None else float(model_noise)
        forecaster: Model = surrogate
        if sigma_m > 0:
            forecaster = NoisyModel(surrogate, sigma_m, torch.Generator().manual_seed(seed + 3000 + it))
        if smoother is not None:
            ana = smooth(
                forecaster, archive[0], observations, **smoother, initial_std=initial_std,
                truth=truth, burn_in=burn_in, generator=generator,
            )
        else:
            ana = assimilate(
                forecaster,
                make_method(),
                archive[0],
                observations,
                initial_std=initial_std,
                truth=truth,
                burn_in=burn_in,
                generator=generator,
            )
        score = observation_score(surrogate, ana.mean, observations, start=cut, lead=score_lead)
        if ana.diverged_at is not None:
            score = math.inf
        steps.append(LoopStep(it, result, score, ana.rmse_a, ana.diverged_at, sigma_m))
        if score < best_score:
            best, best_score, best_iter, stale = copy.deepcopy(surrogate), score, it, 0
            best_analyses = ana.mean
        else:
            stale += 1
            if stale >= patience:
                break
        if ana.diverged_at is None:
            archive = ana.mean
            if weight_by_spread and ana.std is not None:
                weights = 1.0 / (ana.std**2 + spread_floor)
    if best is None:  # every iteration diverged: return the last surrogate, flagged by its scores
        best, best_analyses = surrogate, archive
    return LoopResult(best, best_iter, steps, best_analyses, first_rmse)
