"""Vectorised experiments: B twin runs that differ only in seed and inflation, cycled as one tensor program.

Each run is built exactly as alone (:func:`~hybrida.experiment.builder.build`: its own
nature run, observation noise and initial ensemble from its seed), then truth ``(K+1, B, n)``,
observations ``y (B, p)`` and ensembles ``(B, N, n)`` are stacked and one forecast and one
analysis per cycle serve all B runs (the ensemble methods batch over leading dimensions);
inflation is a ``(B, 1, 1)`` tensor. Per-run scores equal the unbatched runner's (tested to
1e-12; the spread comes from the two-pass :func:`~hybrida.metrics.spread_about_mean`, equal
to the runner's one-pass variance to ~1e-16 relative); the CRPS is not computed (NaN in the
summaries).

Vectorisable: deterministic ensemble filters (ETKF, LETKF, DEnKF) without adaptive
inflation or random rotations, fixed observation networks with the same error model in
every run, and runs whose configs differ only in ``seed`` and ``method.params.infl``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from hybrida import metrics
from hybrida.assimilation.base import AssimilationMethod
from hybrida.experiment.builder import Experiment, prepare
from hybrida.experiment.config import ConfigError, ExperimentConfig
from hybrida.experiment.runner import (
    SCORE_NAMES,
    climatological_std,
    summarize_scores,
    torch_threads,
)
from hybrida.experiment.twin import Twin, nature_run
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError
from hybrida.observations.networks import EveryKthObs, IdentityObs, SubsetObs
from hybrida.observations.system import ObservationSystem

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


#: networks observing the same components with the same errors every cycle (their ``network`` not overridden)
FIXED_NETWORKS = (IdentityObs, SubsetObs, EveryKthObs)


def fixed_network(system: ObservationSystem) -> Observation | None:
    """The network of every cycle (``y`` NaN) when ``system`` is a fixed index network, else None."""
    cls = type(system)
    fixed = (
        isinstance(system, FIXED_NETWORKS)
        and cls.network is IdentityObs.network
        and cls.observe is ObservationSystem.observe
    )
    return system.network(1) if fixed else None


class CycleObservations(Sequence):
    """The observations of cycles 1..K of one run: one fixed network and its values ``y (K, p)``.

    Each cycle's :class:`Observation` is made on access (as ``network(k)`` with ``y`` set
    would be), so a batch of B runs × K cycles does not build B·K network objects.
    """

    def __init__(self, net: Observation, y: Tensor):
        self.net, self.y = net, y

    def __len__(self) -> int:
        return self.y.shape[0]

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        k = range(len(self))[k]
        return replace(self.net, y=self.y[k], matrix=self.net.stored_matrix, meta={**self.net.meta, "cycle": k + 1})


def draw_errors(net: Observation, n_cycles: int, generator: torch.Generator) -> Tensor:
    """The observation errors ``(K, p)`` of cycles 1..K, drawn as ``observe`` draws them (one cycle at a time).

    y_k = H(x_k) + e_k is then formed for all runs at once, with the same bits.
    """
    err = net.error
    if type(err) is DiagonalError:  # sample() is randn(p) * sqrt(var): scale all cycles in one product
        var = err.variance
        device = generator.device  # draw where the generator lives (the same numbers on every device)
        z = [torch.randn(err.p, generator=generator, dtype=var.dtype, device=device) for _ in range(n_cycles)]
        return torch.stack(z).to(var.device) * var.sqrt()
    return torch.stack([err.sample((), generator) for _ in range(n_cycles)])


def _stack_observations(exps: list, k: int) -> Any:
    """The cycle-k observations of every run as one observation with ``y (B, p)``; checked equal otherwise."""
    obs = [e.twin.observations[k] for e in exps]
    first = obs[0]
    for o in obs[1:]:
        _check_same_network(first, o)
    y = torch.stack([o.y for o in obs])
    if not bool(torch.isfinite(y).all()):
        raise ConfigError("vectorised runs need complete observations (no missing values)")
    return replace(first, y=y, matrix=first.stored_matrix)


def _check_same_network(first: Observation, other: Observation) -> None:
    same_h = other.indices is not None and first.indices is not None and torch.equal(other.indices, first.indices)
    if not same_h or not torch.equal(other.error.variance, first.error.variance):
        raise ConfigError("vectorised runs need the same fixed observation network and errors in every run")


def run_vectorized(configs: list[ExperimentConfig], progress: bool = False) -> list[dict[str, Any]]:
    """Summaries of ``configs`` run as one batch, under the first config's thread setting (see :func:`_run`)."""
    if (reason := why_not_vectorizable(configs)) is not None:
        raise ConfigError(f"cannot vectorise: {reason}")
    with torch_threads(configs[0].threads, configs[0].model), torch.no_grad():
        return _run(configs, progress)


@dataclass
class Batch:
    """B runs ready to cycle as one: their experiments, truths and (fixed network) observations.

    ``truth`` is ``(K + 1, B, n)``; ``y`` ``(K, B, p)`` with one fixed network ``net`` (else None:
    each run's twin holds its own observations). With ``inline`` the truths are integrated as
    one more member of the ensemble forecast, cycle by cycle: then ``truth`` holds only its
    start and ``y`` is NaN until the cycle fills them from the pre-drawn errors ``noise``.
    """

    exps: list[Experiment]
    truth: Tensor
    y: Tensor | None = None
    net: Observation | None = None
    noise: Tensor | None = None
    inline: bool = False

    def observation(self, k: int) -> Observation:
        """The observations of cycle ``k`` of all runs as one with ``y (B, p)``."""
        if self.net is None:
            return _stack_observations(self.exps, k - 1)
        return replace(self.net, y=self.y[k - 1], matrix=self.net.stored_matrix, meta={**self.net.meta, "cycle": k})

    def finish_twins(self) -> None:
        """Give each run's twin its own contiguous truth and observations (as a lone build makes them)."""
        if self.net is None:
            return
        for b, e in enumerate(self.exps):
            obs = CycleObservations(e.twin.observations.net, self.y[:, b].contiguous())
            e.twin = Twin(truth=self.truth[:, b].contiguous(), observations=obs, steps_per_cycle=e.twin.steps_per_cycle)


def _run(configs: list[ExperimentConfig], progress: bool) -> list[dict[str, Any]]:
    """Summaries (as :func:`~hybrida.experiment.runner.summarize` writes them) of ``configs`` run as one batch.

    Raises :class:`ConfigError` with the reason when the runs cannot be batched. A run whose
    forecast or analysis becomes non-finite is marked diverged at that cycle and its
    ensemble is reset to its truth so that the other runs go on unaffected. The scores of
    all runs are computed per cycle as ``(B,)`` tensors and read out once at the end.
    """
    from tqdm.auto import tqdm

    t_build = time.perf_counter()
    batch = _build_batch(configs)
    exps, truth = batch.exps, batch.truth
    build_s = (time.perf_counter() - t_build) / len(exps)
    B = len(exps)
    method, model = exps[0].method, exps[0].model
    dtype = exps[0].initial.dtype
    method.infl = torch.tensor([e.method.infl for e in exps], dtype=dtype, device=exps[0].initial.device).view(B, 1, 1)
    E = torch.stack([e.initial for e in exps])  # (B, N, n)
    steps, K, dt = exps[0].twin.steps_per_cycle, configs[0].cycles, model.dt
    scores, oks = [], []
    t0 = time.perf_counter()
    for k in tqdm(range(1, K + 1), disable=not progress, desc=f"{B} runs", unit="cycle", leave=False):
        if batch.inline:
            X = method.forecast(model, torch.cat((E, truth[k - 1].unsqueeze(-2)), -2), steps, (k - 1) * steps * dt)
            Ef = X[..., :-1, :].contiguous()
            truth[k] = X[..., -1, :]
            batch.y[k - 1] = batch.net.operator(truth[k]) + batch.noise[k - 1]
            if not bool(torch.isfinite(batch.y[k - 1]).all()):
                raise ConfigError("vectorised runs need complete observations (no missing values)")
        else:
            Ef = method.forecast(model, E, steps, (k - 1) * steps * dt)
        obs = batch.observation(k)
        Ea = method.analyse(Ef, obs, k * steps * dt)
        mean_f, mean_a = Ef.mean(-2), Ea.mean(-2)
        ok = torch.isfinite(mean_f).all(-1) & torch.isfinite(mean_a).all(-1)
        scores.append(torch.stack((
            metrics.rmse(mean_f, truth[k]), metrics.rmse(mean_a, truth[k]),
            metrics.spread_about_mean(Ef, mean_f), metrics.spread_about_mean(Ea, mean_a),
        )))
        oks.append(ok)
        if not bool(ok.all()):  # keep the batch's linear algebra finite; those runs are over
            Ea = torch.where(ok.view(B, 1, 1), Ea, truth[k].unsqueeze(-2).expand_as(Ea))
        E = Ea
    wall = (time.perf_counter() - t0) / B
    batch.finish_twins()
    series, diverged = _score_series(scores, oks, steps * dt, [c.burn_in for c in configs])
    out = []
    for b, (config, exp) in enumerate(zip(configs, exps)):
        cyc = diverged[b]
        summary = summarize_scores(
            config, series[b], has_truth=True, innovations=[], n_cycles=K if cyc is None else cyc - 1,
            wall_s=wall, build_s=build_s, clim_std=climatological_std(exp),
            diverged_cycle=cyc, diverged_reason="" if cyc is None else f"non-finite state at cycle {cyc}",
            N=getattr(exp.method, "N", None),
        )
        summary["vectorized"] = B
        out.append(summary)
    return out


def _score_series(
    scores: list[Tensor], oks: list[Tensor], cycle_dt: float, burn_ins: list[float],
) -> tuple[list[dict[str, list[float]]], list[int | None]]:
    """Each run's scored series (``SCORE_NAMES`` after burn-in, up to its divergence) and divergence cycle.

    ``scores[k - 1]`` is ``(4, B)``: rmse_f, rmse_a, spread_f, spread_a of cycle k; the
    vectorised runs compute no CRPS (NaN, as :func:`~hybrida.cycle.run_cycle` without
    probabilistic scores).
    """
    if not scores:
        return [{name: [] for name in SCORE_NAMES} for _ in burn_ins], [None] * len(burn_ins)
    S = torch.stack(scores).tolist()  # (K, 4, B) as nested lists: one read-out
    ok = torch.stack(oks).tolist()
    K, B = len(S), len(ok[0])
    series, diverged = [], []
    for b in range(B):
        first = next((i for i in range(K) if (i + 1) * cycle_dt > burn_ins[b]), K)  # as Record.time > burn_in
        last = next((i for i in range(K) if not ok[i][b]), None)
        diverged.append(None if last is None else last + 1)
        rows = range(first, K if last is None else last)
        rmse_f, rmse_a, spread_f, spread_a = ([S[i][j][b] for i in rows] for j in range(4))
        series.append({"rmse_f": rmse_f, "rmse_a": rmse_a, "spread_f": spread_f, "spread_a": spread_a,
                       "crps_a": [math.nan] * len(rows)})
    return series, diverged


def truth_inline(preps: list) -> bool:
    """Whether the truths can be integrated as one more ensemble member (same bits as a nature run).

    Needs the forecast model as the truth model, a model whose rows step independently
    (``rows_independent``, e.g. :class:`~hybrida.models.Lorenz63`) and a method whose
    forecast is the model's (no member-dependent forcing or noise).
    """
    p = preps[0]
    return (
        all(q.truth_model is q.model for q in preps)
        and bool(getattr(p.model, "rows_independent", False))
        and type(p.method).forecast is AssimilationMethod.forecast
        and p.x0.dtype == p.x_ref.dtype
    )


def _build_batch(configs: list[ExperimentConfig]) -> Batch:
    """Each run's :class:`Experiment`, as :func:`~hybrida.experiment.builder.build` makes it, with one nature run.

    The true starts are drawn per run (their own seed streams); the B truths are integrated
    as one ``(B, n)`` tensor (elementwise dynamics: the same numbers as alone), then each
    run observes its truth with its own generator, in the order ``build`` does. With a fixed
    network (:func:`fixed_network`) the errors are drawn first and the observations of all
    runs are one ``y (K, B, p)``; with :func:`truth_inline` as well, the nature run is left
    to the cycle (see :class:`Batch`).
    """
    preps = [prepare(c) for c in configs]
    first = preps[0]
    if first.truth_model.n != first.model.n:
        raise ConfigError("cannot vectorise: the truth model's state size differs from the forecast model's")
    steps, K = first.obs_system.every, configs[0].cycles
    x0 = torch.stack([p.x0 for p in preps])
    nets = [fixed_network(p.obs_system) for p in preps]
    if any(net is None for net in nets):
        truth = nature_run(first.truth_model, x0, K, steps)
        exps = []
        for b, p in enumerate(preps):
            tb = truth[:, b].contiguous()
            obs = [p.obs_system.observe(tb[k], k, p.generators["truth"]) for k in range(1, K + 1)]
            exps.append(p.experiment(Twin(truth=tb, observations=obs, steps_per_cycle=steps)))
        return Batch(exps, truth)
    for net in nets[1:]:
        _check_same_network(nets[0], net)
    # drawn where the networks are built (the CPU generators' device), then the networks join the run's device
    noise = torch.stack([draw_errors(net, K, p.generators["truth"]) for net, p in zip(nets, preps)], 1).to(x0)
    nets = [net.to_device(x0.device) for net in nets]
    inline = truth_inline(preps)
    if inline:
        truth = torch.full((K + 1, *x0.shape), math.nan, dtype=x0.dtype, device=x0.device)
        truth[0] = x0
        y = torch.full(noise.shape, math.nan, dtype=noise.dtype, device=noise.device)
    else:
        truth = nature_run(first.truth_model, x0, K, steps)
        y = nets[0].operator(truth[1:]) + noise
        if not bool(torch.isfinite(y).all()):
            raise ConfigError("vectorised runs need complete observations (no missing values)")
    exps = [
        p.experiment(Twin(truth=truth[:, b], observations=CycleObservations(nets[b], y[:, b]), steps_per_cycle=steps))
        for b, p in enumerate(preps)
    ]
    return Batch(exps, truth, y, nets[0], noise, inline)


def split_groups(configs: list[ExperimentConfig]) -> list[list[int]]:
    """Indices of ``configs`` grouped by :func:`shape_key` (each group a candidate batch), in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(shape_key(c), []).append(i)
    return list(groups.values())
