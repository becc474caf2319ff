"""Run one twin experiment end to end: build, cycle, checkpoint, score, write."""

from __future__ import annotations

import contextlib
import logging
import math
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import xarray as xr
from tqdm.auto import tqdm

from hybrida.assimilation.base import AssimilationMethod, State
from hybrida.assimilation.variational.climatology import ClimatologySample
from hybrida.cycle import FilterDiverged, Record, Screen, run_cycle
from hybrida.device import to_device
from hybrida.experiment.builder import Experiment, build
from hybrida.experiment.config import ExperimentConfig
from hybrida.innovations import summarize_innovations
from hybrida.io.checkpoint import CHECKPOINT_NAME, Checkpoint, load_checkpoint, save_checkpoint
from hybrida.io.obsfile import write_observations
from hybrida.io.results import records_to_dataset, write_dataset, write_summary
from hybrida.observations.base import Observation

log = logging.getLogger(__name__)

RESULTS_NAME = "results.nc"
#: results of an assimilation of observations from a file (no truth): analyses.nc, or .zarr when large
ANALYSES_STEM = "analyses"
#: datasets larger than this many bytes are written as chunked Zarr instead of NetCDF
ZARR_BYTES = 2 * 1024**3
OBSERVATIONS_NAME = "observations.nc"
SUMMARY_NAME = "summary.json"
CONFIG_NAME = "config.yaml"

Callback = Callable[[Record, State], None]


@dataclass
class Result:
    """Records, summary scores and output files of one experiment."""

    config: ExperimentConfig
    records: list[Record]
    summary: dict[str, Any]
    final_state: State | None
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    resumed_from: int | None = None

    def dataset(self) -> xr.Dataset:
        """The records as an xarray Dataset (see :func:`hybrida.io.results.records_to_dataset`)."""
        return records_to_dataset(
            self.records,
            attrs=dataset_attrs(self.config, self.summary),
            ensemble_size=self.summary.get("N"),
        )


def dataset_attrs(config: ExperimentConfig, summary: dict[str, Any]) -> dict[str, Any]:
    """Global attributes of results.nc: the config as YAML, seed, method, summary."""
    return {
        "title": f"hybrida twin experiment {config.name}",
        "preset": config.name,
        "method": config.method.name,
        "seed": config.seed,
        "config": config.to_yaml(),
        "config_sha256": config.digest(),
        "summary": summary,
        "diverged": bool(summary.get("diverged", False)),
    }


def _method_state(method: AssimilationMethod) -> dict[str, Any]:
    # adaptive inflation etc. live in attributes; keep what can be pickled
    state = dict(vars(method))
    try:
        pickle.dumps(state)
        return state
    except Exception:  # noqa: BLE001 - any pickling failure: fall back per attribute
        keep = {}
        for k, v in state.items():
            try:
                pickle.dumps(v)
                keep[k] = v
            except Exception:  # noqa: BLE001
                log.debug("checkpoint: method attribute %s is not picklable; skipped", k)
        return keep


def climatological_std(exp: Experiment) -> float:
    """sqrt of the domain-mean climatological variance: from the climatology run, else the truth series."""
    if isinstance(exp.climatology, ClimatologySample):
        return float(exp.climatology.variance().mean().sqrt())
    if exp.climatology is not None:
        return float(torch.diagonal(exp.climatology[1]).mean().sqrt())
    if exp.twin.truth is None:
        return math.inf
    truth = exp.twin.truth[1:]
    if truth.shape[0] < 2:
        return math.inf
    return float(truth.var(0, unbiased=True).mean().sqrt())


#: analysis error above this multiple of the spread counts as "lost track" in the summary
LOST_RATIO = 4.0


#: the per-cycle scores whose time means (after burn-in) a summary reports
SCORE_NAMES = ("rmse_a", "rmse_f", "spread_a", "spread_f", "crps_a")


def summarize(
    config: ExperimentConfig,
    records: list[Record],
    *,
    wall_s: float,
    build_s: float,
    clim_std: float,
    diverged_cycle: int | None,
    diverged_reason: str,
    N: int | None,
) -> dict[str, Any]:
    """Time means after burn-in (REFERENCES conventions), innovation statistics and the divergence verdict.

    The records' scores after ``config.burn_in`` go to :func:`summarize_scores`.
    """
    scored = [r for r in records if r.time > config.burn_in]
    return summarize_scores(
        config,
        {name: [getattr(r, name) for r in scored] for name in SCORE_NAMES},
        has_truth=any(r.truth is not None for r in scored),
        innovations=[r.innovation for r in scored if r.innovation is not None],
        n_cycles=len(records),
        wall_s=wall_s, build_s=build_s, clim_std=clim_std,
        diverged_cycle=diverged_cycle, diverged_reason=diverged_reason, N=N,
    )


def summarize_scores(
    config: ExperimentConfig,
    scores: dict[str, list[float]],
    *,
    has_truth: bool,
    innovations: list,
    n_cycles: int,
    wall_s: float,
    build_s: float,
    clim_std: float,
    diverged_cycle: int | None,
    diverged_reason: str,
    N: int | None,
) -> dict[str, Any]:
    """The summary of a run from its scored cycles' series ``scores[name]`` (names: ``SCORE_NAMES``).

    Without a truth the rmse/CRPS means are NaN and divergence is only a
    non-finite forecast or analysis; the innovation statistics
    (:func:`hybrida.innovations.summarize_innovations`: ``omb_rms``,
    ``oma_rms``, ``desroziers_sigma_o``, ...) are there in both cases.

    ``lost_fraction`` is the share of scored cycles in which the analysis error
    exceeds ``LOST_RATIO`` times the ensemble spread: a filter that has lost
    track of the truth for a while but recovers can keep a modest time-mean
    rmse_a, and this makes such episodes visible (NaN for methods without
    spread).
    """
    n_scored = len(scores["rmse_a"])
    with_spread = [(e, s) for e, s in zip(scores["rmse_a"], scores["spread_a"], strict=True) if s > 0]
    lost_fraction = (
        sum(e > LOST_RATIO * s for e, s in with_spread) / len(with_spread) if with_spread else math.nan
    )

    def mean(name: str) -> float:
        return float(sum(scores[name]) / n_scored) if n_scored else math.nan

    rmse_a = mean("rmse_a")
    spread_a = mean("spread_a")
    diverged = diverged_cycle is not None
    reason = diverged_reason
    exempt = config.method.name == "climatology"  # it *is* the climatological reference
    if not diverged and n_scored and not exempt and has_truth:
        if not math.isfinite(rmse_a):
            diverged, reason = True, "time-mean rmse_a is not finite"
        elif rmse_a > clim_std:
            diverged = True
            reason = f"rmse_a {rmse_a:.4g} exceeds the climatological std {clim_std:.4g}"
    return {
        "preset": config.name,
        "method": config.method.name,
        "seed": config.seed,
        "N": N,
        "rmse_a": rmse_a,
        "rmse_f": mean("rmse_f"),
        "spread_a": spread_a,
        "spread_f": mean("spread_f"),
        "spread_skill": spread_a / rmse_a if rmse_a and math.isfinite(rmse_a) else math.nan,
        "crps_a": mean("crps_a"),
        "lost_fraction": lost_fraction,
        "clim_std": clim_std,
        "wall_s": wall_s,
        "build_s": build_s,
        "diverged": diverged,
        "diverged_cycle": diverged_cycle,
        "diverged_reason": reason,
        "n_cycles": n_cycles,
        "cycles": config.cycles,
        "n_scored": n_scored,
        "burn_in": config.burn_in,
        "truth": has_truth,
        **summarize_innovations(innovations),
    }


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callback: Callback | None = None,
    observations: list[Observation] | None = None,
    qc: Screen | None = None,
    digest: str | None = None,
    write_observations_file: bool = False,
) -> Result:
    """Build and cycle ``config``; write results.nc, summary.json, config.yaml into ``out_dir``.

    ``observations`` (cycles 1..K, e.g. from :func:`hybrida.io.obsfile.load_observations`)
    replace the twin's nature run: no truth, scores from the observations;
    ``digest`` then identifies them in checkpoints (with the config's digest).
    ``qc`` screens each cycle's observations before the analysis (default:
    the config's ``qc`` section, if any).
    ``write_observations_file`` writes the twin's observations to
    ``out_dir/observations.nc`` (:func:`hybrida.io.obsfile.write_observations`,
    model times), the input ``hybrida assimilate`` reads.

    Every ``config.checkpoint_every`` cycles a checkpoint is written; with
    ``resume=True`` the run continues from ``out_dir/checkpoint.pt`` and gives
    bit-identical numbers to an uninterrupted run. A :class:`FilterDiverged`
    stops the cycling: the records so far are kept and the summary says
    ``diverged`` with the cycle. ``callback(record, state)`` runs after each
    cycle (after any checkpoint). ``out_dir=None`` writes nothing.
    """
    with torch_threads(config.threads, config.model):
        return _run(
            config, out_dir, resume, progress, callback, observations, qc, digest, write_observations_file
        )


#: states with fewer values than this (n x N) run single-threaded: intra-op
#: threads only add synchronisation cost to tiny tensor ops
SMALL_PROBLEM = 200_000


@contextlib.contextmanager
def torch_threads(threads: int, model_config: Any) -> Iterator[None]:
    """Set torch's intra-op thread count for the run (0 = automatic), then restore it."""
    old = torch.get_num_threads()
    if threads == 0:
        params = getattr(model_config, "params", {}) or {}
        size = int(params.get("n", 0) or 0) or 1000
        threads = 1 if size * 100 < SMALL_PROBLEM else old
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _run(
    config: ExperimentConfig,
    out_dir: str | Path | None,
    resume: bool,
    progress: bool,
    callback: Callback | None,
    observations: list[Observation] | None = None,
    qc: Screen | None = None,
    digest: str | None = None,
    write_observations_file: bool = False,
) -> Result:
    out = Path(out_dir) if out_dir is not None else None
    t_build = time.perf_counter()
    exp = build(config, observations, progress=progress)
    run_digest = config.digest() if digest is None else f"{config.digest()}+{digest}"
    build_s = time.perf_counter() - t_build
    seeds = exp.seeds
    gen = exp.generators["analysis"]
    torch.manual_seed(seeds["torch_global"])

    records: list[Record] = []
    state: State = exp.initial
    start, wall_before, resumed_from = 1, 0.0, None
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    if resume:
        if ckpt_path is None:
            raise ValueError("resume=True needs an out_dir holding a checkpoint")
        if ckpt_path.exists():
            ckpt = load_checkpoint(ckpt_path, run_digest)  # read onto the CPU: the state goes back to the run's device
            device = torch.device(config.device)
            state, records = to_device(ckpt.state, device), [to_device(r, device) for r in ckpt.records]
            gen.set_state(ckpt.generators["analysis"])
            torch.set_rng_state(ckpt.generators["torch_global"])
            if ckpt.method_state:
                vars(exp.method).update(to_device(ckpt.method_state, device))
            start, wall_before, resumed_from = ckpt.cycle + 1, ckpt.wall_s, ckpt.cycle
        else:
            log.warning("no checkpoint in %s; starting from cycle 1", out)

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(config.to_yaml())
        if write_observations_file and observations is None:
            every = exp.twin.steps_per_cycle
            times = [k * every * exp.model.dt for k in range(1, config.cycles + 1)]
            obs_file = write_observations(
                out / OBSERVATIONS_NAME,
                exp.twin.observations,
                times=times,
                attrs={"source": f"hybrida twin {config.name} seed {config.seed}"},
            )

    diverged_cycle, reason = None, ""
    every = config.checkpoint_every
    bar = tqdm(
        total=config.cycles,
        initial=start - 1,
        disable=not progress,
        desc=config.name,
        unit="cycle",
        leave=False,
        mininterval=0.5,
    )
    t0 = time.perf_counter()
    try:
        cycles = run_cycle(
            exp.model,
            exp.method,
            state,
            exp.twin.truth,
            exp.twin.observations,
            exp.twin.steps_per_cycle,
            start_cycle=start,
            generator=gen,
            keep_members=config.store_members,
            innovations=True,
            qc=qc if qc is not None else exp.qc,
        )
        while True:
            try:
                record, state = next(cycles)
            except StopIteration:
                break
            except FilterDiverged as err:
                diverged_cycle, reason = err.cycle, str(err)
                log.info("%s", err)
                break
            records.append(record)
            bar.update(1)
            if record.cycle % 50 == 0:
                if record.truth is not None:
                    bar.set_postfix(rmse_a=f"{record.rmse_a:.3g}", refresh=False)
                elif record.innovation is not None:
                    bar.set_postfix(omb_rms=f"{record.innovation.scalars()['omb_rms']:.3g}", refresh=False)
            if ckpt_path is not None and every and record.cycle % every == 0:
                save_checkpoint(
                    Checkpoint(
                        cycle=record.cycle,
                        state=state,
                        records=records,
                        generators={
                            "analysis": gen.get_state(),
                            "torch_global": torch.get_rng_state(),
                        },
                        config_digest=run_digest,
                        wall_s=wall_before + time.perf_counter() - t0,
                        method_state=_method_state(exp.method),
                    ),
                    ckpt_path,
                )
            if callback is not None:
                callback(record, state)
    finally:
        bar.close()
    wall_s = wall_before + time.perf_counter() - t0

    summary = summarize(
        config,
        records,
        wall_s=wall_s,
        build_s=build_s,
        clim_std=climatological_std(exp),
        diverged_cycle=diverged_cycle,
        diverged_reason=reason,
        N=getattr(exp.method, "N", None),
    )
    result = Result(
        config=config,
        records=records,
        summary=summary,
        final_state=state,
        out_dir=out,
        resumed_from=resumed_from,
    )
    if out is not None and write_observations_file and observations is None:
        result.files["observations"] = obs_file
    if out is not None:
        ds = result.dataset()
        if observations is None:
            path = out / RESULTS_NAME
        else:
            path = out / (ANALYSES_STEM + (".zarr" if ds.nbytes > ZARR_BYTES else ".nc"))
        result.files["results"] = write_dataset(ds, path)
        result.files["summary"] = write_summary(summary, out / SUMMARY_NAME)
        result.files["config"] = out / CONFIG_NAME
    return result
