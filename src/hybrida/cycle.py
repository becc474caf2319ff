"""The forecast–analysis loop: one implementation for every assimilation method."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hybrida import metrics
from hybrida.assimilation.base import (
    AssimilationMethod,
    GaussianState,
    State,
    state_mean,
    state_members,
    state_spread,
)
from hybrida.innovations import CycleInnovations, cycle_innovations
from hybrida.models.base import Model
from hybrida.observations.base import Observation
from hybrida.observations.qc import QualityControl, missing_flags

#: a quality-control check (:mod:`hybrida.observations.qc`): rejected values become NaN, with int8 flags
Screen = QualityControl


class FilterDiverged(RuntimeError):
    """The analysis became non-finite; carries the cycle at which it happened."""

    def __init__(self, cycle: int, message: str):
        super().__init__(message)
        self.cycle = cycle


@dataclass
class Record:
    """What one cycle produced: prior/posterior summaries, scored against the truth when there is one.

    Without a truth (real observations) ``truth`` is None and the rmse/CRPS
    fields are NaN; ``innovation`` (O−B, O−A per observation) scores the
    cycle against the observations instead, in twins as well. ``qc_flags``
    ``(p,)`` are the quality-control decisions (0 good, 1 missing, ...).
    """

    cycle: int
    time: float
    truth: Tensor | None
    prior_mean: Tensor
    posterior_mean: Tensor
    rmse_f: float
    rmse_a: float
    spread_f: float
    spread_a: float
    crps_a: float
    n_obs: int
    rank_a: Tensor | None = None
    members: Tensor | None = None
    diagnostics: dict = field(default_factory=dict)
    innovation: CycleInnovations | None = None
    qc_flags: Tensor | None = None


def _spread(state: State, n: int) -> Tensor:
    members = state_members(state)
    if members is not None and members.shape[-1] > n and not hasattr(state, "weights"):
        return state_spread(members[..., :n])
    return state_spread(state)


def _crps(state: State, truth: Tensor) -> float:
    n = truth.shape[-1]  # an augmented state [x, theta] is scored on x
    members = state_members(state)
    if members is not None:
        return float(metrics.crps_ensemble(members[..., :n], truth))
    mean = state_mean(state)[..., :n]
    std = state_spread(state)
    if float(std) == 0.0:
        return float((mean - truth).abs().mean())
    if isinstance(state, GaussianState):
        std = torch.diagonal(state.cov)[:n].clamp_min(0).sqrt()
    return float(metrics.crps_gaussian(mean, std, truth))


def run_cycle(
    model: Model,
    method: AssimilationMethod,
    state: State,
    truth: Tensor | None,
    observations: Sequence[Observation],
    steps_per_cycle: int,
    *,
    start_cycle: int = 1,
    generator: torch.Generator | None = None,
    keep_members: bool = False,
    probabilistic_scores: bool = True,
    innovations: bool = False,
    qc: Screen | None = None,
) -> Iterator[tuple[Record, State]]:
    """Cycle forecast and analysis, yielding ``(record, posterior)`` each cycle.

    ``truth[k]`` is the true state at analysis time k (``truth[0]`` = start,
    no observation there), ``observations[k - 1]`` the observations at cycle
    k. ``truth=None`` (real observations) scores against the observations
    only. Starting at ``start_cycle`` > 1 resumes from a checkpointed
    ``state``. ``probabilistic_scores=False`` skips the per-cycle CRPS and
    truth rank (NaN / None in the record), which dominate the bookkeeping for
    very large ensembles of states; ``innovations=True`` records the O−B/O−A
    departures (the runner and the no-truth path ask for them; off by default
    so the bare loop costs what it did: they add ~10% to an n=40 ETKF cycle).
    ``qc.screen(obs, prior)`` rejects observations before the analysis (its
    flags go to ``record.qc_flags``). Raises
    :class:`FilterDiverged` when the forecast or the posterior becomes
    non-finite.
    """
    n_cycles = len(observations)
    dt = model.dt
    n = truth.shape[-1] if truth is not None else model.n
    B = getattr(method, "B", None)
    for k in range(start_cycle, n_cycles + 1):
        t_prev = (k - 1) * steps_per_cycle * dt
        prior = method.forecast(model, state, steps_per_cycle, t_prev)
        t = k * steps_per_cycle * dt
        # a forecast that overflowed (e.g. an unstable surrogate) is a divergence, not an input
        # for the analysis, whose linear algebra would fail on inf/NaN with its own error
        mean_f = state_mean(prior)
        if not bool(torch.isfinite(mean_f).all()):
            raise FilterDiverged(k, f"{type(method).__name__}: forecast became non-finite at cycle {k}")
        received = observations[k - 1]
        obs, flags = qc.screen(received, prior) if qc is not None else (received, missing_flags(received))
        posterior = method.analyse(prior, obs, t, generator)
        varqc = getattr(method, "analysis_flags", None)  # variational QC: weight < 0.5 is flag 4
        if callable(varqc) and (more := varqc()) is not None:
            flags = torch.maximum(flags, more.to(flags))
        mean_a = state_mean(posterior)
        if not bool(torch.isfinite(mean_a).all()):
            raise FilterDiverged(k, f"{type(method).__name__}: analysis became non-finite at cycle {k}")
        # scores compare the physical state: an augmented state [x, theta]
        # (parameter estimation) is cut to the truth's size
        mean_a, mean_f = mean_a[..., :n], mean_f[..., :n]
        members = state_members(posterior)
        members = None if members is None else members[..., :n]
        x_true = truth[k] if truth is not None else None
        scored = x_true is not None
        record = Record(
            cycle=k,
            time=t,
            truth=x_true,
            prior_mean=mean_f,
            posterior_mean=mean_a,
            rmse_f=float(metrics.rmse(mean_f, x_true)) if scored else math.nan,
            rmse_a=float(metrics.rmse(mean_a, x_true)) if scored else math.nan,
            spread_f=float(_spread(prior, n)),
            spread_a=float(_spread(posterior, n)),
            crps_a=_crps(posterior, x_true) if (probabilistic_scores and scored) else math.nan,
            n_obs=int(torch.isfinite(obs.y).sum()),
            rank_a=(
                metrics.rank_of_truth(members, x_true)
                if members is not None and probabilistic_scores and scored
                else None
            ),
            members=members.clone() if (keep_members and members is not None) else None,
            diagnostics=method.diagnostics(),
            innovation=(
                cycle_innovations(received, prior, posterior, n, B, used=torch.isfinite(obs.y))
                if innovations
                else None
            ),
            qc_flags=flags,
        )
        state = posterior
        yield record, state
