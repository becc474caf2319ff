"""Vectorised experiments: B twin runs that differ only in seed and inflation, cycled as one tensor program.

Each run is built exactly as alone (:func:`~hybrida.experiment.builder.build`: its own
nature run, observation noise and initial ensemble from its seed), then truth ``(K+1, B, n)``,
observations ``y (B, p)`` and ensembles ``(B, N, n)`` are stacked and one forecast and one
analysis per cycle serve all B runs (the ensemble methods batch over leading dimensions);
inflation is a ``(B, 1, 1)`` tensor. Per-run scores equal the unbatched runner's (tested to
1e-12); the CRPS is not computed (NaN in the summaries).

Vectorisable: deterministic ensemble filters (ETKF, LETKF, DEnKF) without adaptive
inflation or random rotations, fixed observation networks with the same error model in
every run, and runs whose configs differ only in ``seed`` and ``method.params.infl``.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import torch

from hybrida import metrics
from hybrida.assimilation.base import state_spread
from hybrida.cycle import Record
from hybrida.experiment.builder import Experiment, prepare
from hybrida.experiment.config import ConfigError, ExperimentConfig
from hybrida.experiment.runner import climatological_std, summarize, torch_threads
from hybrida.experiment.twin import Twin, nature_run

#: method names that batch over runs with identical results
METHODS = ("etkf", "letkf", "denkf")


def shape_key(config: ExperimentConfig) -> str:
    """What must be equal for runs to share one tensor program: the config without seed and inflation."""
    data = config.model_dump(mode="json")
    data.pop("seed", None)
    data["method"]["params"].pop("infl", None)
    return repr(sorted(data.items()))


def why_not_vectorizable(configs: list[ExperimentConfig]) -> str | None:
    """A one-line reason why ``configs`` cannot run as one batch, or None when they can."""
    if not configs:
        return "no runs"
    first = configs[0]
    if first.method.name not in METHODS:
        return f"method {first.method.name!r} is not vectorised (only {', '.join(METHODS)})"
    params = first.method.params
    if params.get("adaptive") or params.get("rot"):
        return "adaptive inflation and random rotations keep per-run state or draws"
    if any(shape_key(c) != shape_key(first) for c in configs[1:]):
        return "the runs differ in more than seed and method.params.infl"
    return None


def _stack_observations(exps: list, k: int) -> Any:
    """The cycle-k observations of every run as one observation with ``y (B, p)``; checked equal otherwise."""
    obs = [e.twin.observations[k] for e in exps]
    first = obs[0]
    for o in obs[1:]:
        same_h = (o.indices is not None and first.indices is not None and torch.equal(o.indices, first.indices))
        if not same_h or not torch.equal(o.error.variance, first.error.variance):
            raise ConfigError("vectorised runs need the same fixed observation network and errors in every run")
    y = torch.stack([o.y for o in obs])
    if not bool(torch.isfinite(y).all()):
        raise ConfigError("vectorised runs need complete observations (no missing values)")
    return replace(first, y=y, matrix=first.stored_matrix)


def run_vectorized(configs: list[ExperimentConfig], progress: bool = False) -> list[dict[str, Any]]:
    """Summaries of ``configs`` run as one batch, under the first config's thread setting (see :func:`_run`)."""
    if (reason := why_not_vectorizable(configs)) is not None:
        raise ConfigError(f"cannot vectorise: {reason}")
    with torch_threads(configs[0].threads, configs[0].model):
        return _run(configs, progress)


def _run(configs: list[ExperimentConfig], progress: bool) -> list[dict[str, Any]]:
    """Summaries (as :func:`~hybrida.experiment.runner.summarize` writes them) of ``configs`` run as one batch.

    Raises :class:`ConfigError` with the reason when the runs cannot be batched. A run whose
    forecast or analysis becomes non-finite is marked diverged at that cycle and its
    ensemble is reset to its truth so that the other runs go on unaffected.
    """
    from tqdm.auto import tqdm

    t_build = time.perf_counter()
    exps = _build_batch(configs)
    build_s = (time.perf_counter() - t_build) / len(exps)
    B = len(exps)
    method, model = exps[0].method, exps[0].model
    dtype = exps[0].initial.dtype
    method.infl = torch.tensor([e.method.infl for e in exps], dtype=dtype).view(B, 1, 1)
    truth = torch.stack([e.twin.truth for e in exps], 1)  # (K+1, B, n)
    E = torch.stack([e.initial for e in exps])  # (B, N, n)
    steps, K, dt = exps[0].twin.steps_per_cycle, configs[0].cycles, model.dt
    records: list[list[Record]] = [[] for _ in range(B)]
    diverged: list[int | None] = [None] * B
    t0 = time.perf_counter()
    for k in tqdm(range(1, K + 1), disable=not progress, desc=f"{B} runs", unit="cycle", leave=False):
        Ef = method.forecast(model, E, steps, (k - 1) * steps * dt)
        obs = _stack_observations(exps, k - 1)
        Ea = method.analyse(Ef, obs, k * steps * dt)
        mean_f, mean_a = Ef.mean(-2), Ea.mean(-2)
        ok_f = torch.isfinite(mean_f).all(-1)
        ok = ok_f & torch.isfinite(mean_a).all(-1)
        rmse_f, rmse_a = metrics.rmse(mean_f, truth[k]), metrics.rmse(mean_a, truth[k])
        spread_f, spread_a = state_spread(Ef), state_spread(Ea)
        for b in range(B):
            if diverged[b] is not None:
                continue
            if not bool(ok[b]):
                diverged[b] = k
                continue
            records[b].append(Record(
                cycle=k, time=k * steps * dt, truth=truth[k, b], prior_mean=mean_f[b], posterior_mean=mean_a[b],
                rmse_f=float(rmse_f[b]), rmse_a=float(rmse_a[b]), spread_f=float(spread_f[b]),
                spread_a=float(spread_a[b]), crps_a=math.nan, n_obs=obs.p,
            ))
        if not bool(ok.all()):  # keep the batch's linear algebra finite; those runs are over
            Ea = torch.where(ok.view(B, 1, 1), Ea, truth[k].unsqueeze(-2).expand_as(Ea))
        E = Ea
    wall = (time.perf_counter() - t0) / B
    out = []
    for b, (config, exp) in enumerate(zip(configs, exps)):
        cyc = diverged[b]
        summary = summarize(
            config, records[b], wall_s=wall, build_s=build_s, clim_std=climatological_std(exp),
            diverged_cycle=cyc, diverged_reason="" if cyc is None else f"non-finite state at cycle {cyc}",
            N=getattr(exp.method, "N", None),
        )
        summary["vectorized"] = B
        out.append(summary)
    return out


def _build_batch(configs: list[ExperimentConfig]) -> list[Experiment]:
    """Each run's :class:`Experiment`, as :func:`~hybrida.experiment.builder.build` makes it, with one nature run.

    The true starts are drawn per run (their own seed streams); the B truths are integrated
    as one ``(B, n)`` tensor (elementwise dynamics: the same numbers as alone), then each
    run observes its truth with its own generator, in the order ``build`` does.
    """
    preps = [prepare(c) for c in configs]
    first = preps[0]
    if first.truth_model.n != first.model.n:
        raise ConfigError("cannot vectorise: the truth model's state size differs from the forecast model's")
    steps = first.obs_system.every
    truth = nature_run(first.truth_model, torch.stack([p.x0 for p in preps]), configs[0].cycles, steps)
    exps = []
    for b, p in enumerate(preps):
        tb = truth[:, b].contiguous()
        obs = [p.obs_system.observe(tb[k], k, p.generators["truth"]) for k in range(1, configs[0].cycles + 1)]
        exps.append(p.experiment(Twin(truth=tb, observations=obs, steps_per_cycle=steps)))
    return exps


def split_groups(configs: list[ExperimentConfig]) -> list[list[int]]:
    """Indices of ``configs`` grouped by :func:`shape_key` (each group a candidate batch), in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(shape_key(c), []).append(i)
    return list(groups.values())
