"""Reanalyses for the DA–ML loop: filter or fixed-lag smoother runs with a (learned) model, and a model-noise estimate.

The DA half of Brajard et al. (2020)'s loop (:mod:`hybrida.experiment.loop`): cycle a
method with a model over an observation sequence and keep the analysis means
and spreads (:func:`assimilate`), or smooth them with a fixed-lag EnKS
(:func:`smooth`); :func:`forecast_error_std` estimates a model's one-step error
from innovations alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hybrida import metrics
from hybrida.assimilation.base import AssimilationMethod, state_mean, state_members
from hybrida.assimilation.ensemble.enks import enks
from hybrida.cycle import FilterDiverged, run_cycle
from hybrida.models.base import Model
from hybrida.observations.base import Observation

__all__ = ["Reanalysis", "assimilate", "forecast_error_std", "smooth"]


@dataclass
class Reanalysis:
    """Analysis means at cycles 0..K ``(K + 1, n)``, their spread and, with a truth, time-mean RMSE.

    ``std``: per-variable ensemble standard deviation of the analyses ``(K + 1, n)``
    (None for methods without members).
    """

    mean: Tensor
    rmse_a: float = math.nan
    diverged_at: int | None = None
    std: Tensor | None = None


def assimilate(
    model: Model,
    method: AssimilationMethod,
    first: Tensor,
    observations: Sequence[Observation],
    *,
    steps_per_cycle: int = 1,
    initial_std: float = 1.0,
    truth: Tensor | None = None,
    burn_in: int = 0,
    generator: torch.Generator | None = None,
) -> Reanalysis:
    """Cycle ``method`` with ``model`` over ``observations`` from around ``first``; keep the analysis means.

    A divergence stops the run: the remaining rows repeat the last finite
    analysis and ``diverged_at`` records the cycle. With ``truth`` (K + 1, n),
    ``rmse_a`` is the time-mean analysis RMSE after ``burn_in`` cycles.
    """
    K = len(observations)
    n = first.shape[-1]
    scoring = truth if truth is not None else torch.zeros(K + 1, n, dtype=first.dtype)
    state = method.initial_state(first, initial_std, generator)
    means = [state_mean(state)[..., :n]]
    stds: list[Tensor] | None = [torch.full_like(means[0], float(initial_std))]
    diverged = None
    with torch.no_grad():
        try:
            for record, post in run_cycle(
                model,
                method,
                state,
                scoring,
                observations,
                steps_per_cycle,
                generator=generator,
                probabilistic_scores=False,
            ):
                means.append(record.posterior_mean)
                members = state_members(post)
                if members is None or stds is None:
                    stds = None
                else:
                    stds.append(members[..., :n].std(-2))
        except FilterDiverged as err:
            diverged = err.cycle
            means.extend([means[-1]] * (K + 1 - len(means)))
            if stds is not None:
                stds.extend([stds[-1]] * (K + 1 - len(stds)))
    mean = torch.stack(means)
    rmse = math.nan
    if truth is not None:
        rmse = float(metrics.rmse(mean[1 + burn_in :], truth[1 + burn_in :]).mean())
    return Reanalysis(mean, rmse, diverged, None if stds is None else torch.stack(stds))


def smooth(
    model: Model,
    first: Tensor,
    observations: Sequence[Observation],
    *,
    N: int,
    lag: int,
    infl: float = 1.0,
    initial_std: float = 1.0,
    truth: Tensor | None = None,
    burn_in: int = 0,
    generator: torch.Generator | None = None,
) -> Reanalysis:
    """Fixed-lag EnKS reanalysis with ``model``: smoothed means and spreads (a better training target).

    The square-root EnKS of :func:`~hybrida.assimilation.ensemble.enks.enks`
    (``lag`` cycles, multiplicative inflation ``infl``) from N members around
    ``first``; each state is conditioned on the observations up to ``lag``
    cycles after it. A non-finite ensemble counts as a divergence at the first
    such cycle (the rows from there repeat the last finite mean).
    """
    if isinstance(N, bool) or int(N) < 2:
        raise ValueError(f"smooth: N must be an integer >= 2, got {N}")
    E0 = first + initial_std * torch.randn(
        int(N), first.shape[-1], generator=generator, dtype=first.dtype
    )
    res = enks(model, E0, observations, 1, lag, infl=infl, generator=generator)
    mean, std = res.smoothed.mean(-2), res.smoothed.std(-2)
    bad = ~torch.isfinite(mean).all(-1)
    diverged = int(bad.nonzero()[0]) if bool(bad.any()) else None
    if diverged is not None:
        mean[diverged:] = mean[diverged - 1]
        std[diverged:] = std[diverged - 1]
    rmse = math.nan
    if truth is not None:
        rmse = float(metrics.rmse(mean[1 + burn_in :], truth[1 + burn_in :]).mean())
    return Reanalysis(mean, rmse, diverged, std)


def forecast_error_std(
    model: Model, states: Tensor, observations: Sequence[Observation], start: int = 0
) -> float:
    """One-step forecast error std estimated from innovations: a truth-free model-noise level.

    sigma_f^2 = max(0, mean_{k >= start, i} [(y_{k+1} - H(M(x_k)))_i^2 - R_ii]), the
    innovation variance minus the observation error variance, averaged over
    every observed entry: the variance of one-step forecasts from ``states``
    (``(K + 1, n)``, row 0 = initial; ``observations[k]`` verifies row k + 1)
    in observation units — state units for point observations. It includes
    the error of ``states`` propagated one step, so it bounds the model error
    from above (Desroziers et al. 2005 style innovation diagnostic).
    """
    K = len(observations)
    if not 0 <= start < K:
        raise ValueError(f"forecast_error_std: start must lie in [0, {K}), got {start}")
    total, var, count = 0.0, 0.0, 0
    with torch.no_grad():
        forecasts = model.step(states[start:K])
        for j, k in enumerate(range(start, K)):
            obs = observations[k].valid()
            if obs.p == 0:
                continue
            r = obs.y.to(forecasts) - obs.H(forecasts[j])
            total += float((r * r).sum())
            var += float(obs.error.variance.to(forecasts).expand(obs.p).sum())
            count += obs.p
    return math.sqrt(max(total - var, 0.0) / max(count, 1))
