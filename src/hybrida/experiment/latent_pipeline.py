"""Shared pipeline of ``hybrida learn latent``: fit POD and an autoencoder, cycle latent DA beside full-space DA.

Steps (one problem = model + observation network, :class:`LatentProblem`): a free run
gives training/validation snapshots; POD and a periodic convolutional autoencoder are
fitted at the same latent size; latent ETKF, latent 3D-Var (B from the encoded
climatology) and a latent bootstrap PF are cycled with each reduction, beside the
full-space (L)ETKF, 3D-Var and bootstrap PF, on the same test truth and observations.
Inflation, B scaling and PF jitter of every method are picked on a separate tuning
twin from the same small grids. Each method's cost per analysis (wall and CPU ms) is timed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from hybrida.assimilation.base import AssimilationMethod, State
from hybrida.assimilation.ensemble.etkf import ETKF
from hybrida.assimilation.learned import save_learned_analysis
from hybrida.assimilation.learned.latent import LatentDA, latent_method
from hybrida.assimilation.learned.latent_space import Reduction, reduction_from_payload
from hybrida.assimilation.particle.bootstrap import BootstrapPF
from hybrida.assimilation.variational.threedvar import ThreeDVar
from hybrida.cycle import FilterDiverged, run_cycle
from hybrida.experiment.config import _Strict
from hybrida.experiment.twin import Twin, make_twin, nature_run
from hybrida.io.checkpoint import atomic_torch_save
from hybrida.learn.latent import (
    encoded_climatology,
    fit_autoencoder,
    fit_latent_surrogate,
    fit_pod,
    reconstruction_rmse,
)
from hybrida.models.base import Model
from hybrida.observations.base import Observation
from hybrida.observations.system import ObservationSystem


class LatentConfig(_Strict):
    """Everything a latent-DA pipeline needs; every field has a default (the problem module sets its own)."""

    latent: int = Field(32, ge=1, description="latent size k of both POD and the autoencoder")
    members: int = Field(16, ge=2, description="ensemble size N of the (L)ETKF, full and latent")
    particles: int = Field(100, ge=2, description="particles of the bootstrap PFs, full and latent")
    free_run: int = Field(8000, ge=10, description="free-run snapshots (one per cycle) for fitting")
    valid_fraction: float = Field(0.1, gt=0, lt=1, description="last fraction of the free run kept for validation")
    test_cycles: int = Field(1500, ge=10, description="test cycles")
    burn_in: int = Field(200, ge=0, description="test cycles left out of the time-mean rmse")
    tune_cycles: int = Field(300, ge=10, description="cycles of the separate tuning twin")
    channels: int = Field(32, ge=1, description="autoencoder channels")
    levels: int = Field(3, ge=0, description="autoencoder down/up-sampling levels")
    kernel: int = Field(5, ge=1, description="autoencoder kernel width (odd)")
    lr: float = Field(2e-3, ge=0, description="autoencoder Adam learning rate (0 disables training)")
    epochs: int = Field(150, ge=1, description="autoencoder epochs at most")
    max_minutes: float = Field(8.0, gt=0, description="autoencoder training budget (minutes)")
    patience: int = Field(10, ge=1, description="epochs without better validation error before stopping")
    pod_init: bool = Field(False, description="start the autoencoder at POD (linear bypass = EOFs) and refine it")
    var_outer: int = Field(3, ge=1, description="Gauss-Newton outer loops of the latent 3D-Var (nonlinear decoder)")
    surrogate: bool = Field(False, description="also cycle the latent ETKF (AE) with a latent MLP surrogate forecast")
    update: str = Field("increment", pattern="^(increment|replace)$", description="latent ETKF update")
    var_update: str = Field("replace", pattern="^(increment|replace)$", description="latent 3D-Var update")
    var_iter: int = Field(30, ge=1, description="CG iterations per outer loop of the latent 3D-Var")
    loc_rad: float = Field(28.0, gt=0, description="full-space LETKF localisation radius (grid points)")
    letkf_infl: list[float] = Field([1.02, 1.05], description="full LETKF inflation factors tried")
    etkf_infl: list[float] = Field([1.02, 1.05, 1.1], description="ETKF inflation factors tried (full and latent)")
    xB: list[float] = Field([0.05, 0.1, 0.2], description="3D-Var B scalings tried (full and latent)")
    pf_reg: list[float] = Field([0.5, 1.0, 2.0], description="PF jitter bandwidth factors tried (full and latent)")
    pf_NER: float = Field(0.5, ge=0, le=1, description="PF resampling threshold (ESS/N)")
    init_std: float = Field(1.0, gt=0, description="std of the initial ensemble/particles around the first truth")
    full_etkf: bool = Field(True, description="also cycle the full-space ETKF (no localisation)")
    extra_latent: list[int] = Field([], description="further POD latent sizes for an extra latent-ETKF row each")


@dataclass
class LatentProblem:
    """Model, observation network and initial-state draw of one latent-DA pipeline."""

    name: str
    model: Model
    obs: ObservationSystem
    draw: Callable[[torch.Generator], Tensor]  # a state on the attractor
    headline: str  # key of the headline latent method in the table
    bars: Callable[[dict[str, dict[str, float]]], list[dict[str, Any]]]



def seeds_of(seed: int) -> dict[str, int]:
    """Independent seeds for each random part of the pipeline."""
    names = ("free", "test", "tune", "fit", "cycle")
    states = np.random.SeedSequence([seed, 15]).generate_state(len(names), dtype=np.uint64)
    return {k: int(s) >> 1 for k, s in zip(names, states)}


class Timed(AssimilationMethod):
    """Delegates to ``method`` and accumulates the wall and CPU time of its analyses."""

    def __init__(self, method: AssimilationMethod):
        self.method, self.kind, self.N = method, method.kind, method.N
        self.wall = self.cpu = 0.0
        self.count = 0

    def initial_state(self, mean: Tensor, std: Tensor | float, generator: torch.Generator | None = None) -> State:
        return self.method.initial_state(mean, std, generator)

    def forecast(self, model: Model, state: State, n_steps: int, t0: float = 0.0) -> State:
        return self.method.forecast(model, state, n_steps, t0)

    def analyse(self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None) -> State:
        w, c = time.perf_counter(), time.process_time()
        out = self.method.analyse(prior, obs, t, generator)
        self.wall += time.perf_counter() - w
        self.cpu += time.process_time() - c
        self.count += 1
        return out

    def diagnostics(self) -> dict[str, float]:
        return self.method.diagnostics()


def cycle_score(model: Model, method: AssimilationMethod, twin: Twin, burn_in: int, seed: int,
                std: float) -> dict[str, Any]:
    """Time-mean analysis rmse after ``burn_in`` (inf on divergence), series, ms per analysis."""
    gen = torch.Generator().manual_seed(seed)
    timed = Timed(method)
    state = timed.initial_state(twin.truth[0], std, gen)
    series: list[float] = []
    try:
        for rec, _ in run_cycle(model, timed, state, twin.truth, twin.observations, twin.steps_per_cycle,
                                generator=gen, probabilistic_scores=False):
            series.append(rec.rmse_a)
    except (FilterDiverged, torch.linalg.LinAlgError, ValueError):
        series.append(math.inf)
    tail = series[burn_in:] if len(series) > burn_in else series
    value = float(np.mean(tail)) if tail else math.nan
    return {
        "rmse": value if math.isfinite(value) else math.inf,
        "series": series,
        "ms_per_analysis": 1e3 * timed.wall / max(timed.count, 1),
        "cpu_ms_per_analysis": 1e3 * timed.cpu / max(timed.count, 1),
    }


def tuned(build: Callable[[float], AssimilationMethod], grid: list[float], model: Model, tune: Twin,
          burn: int, seed: int, std: float) -> tuple[float, float]:
    """The grid value whose method has the lowest rmse on the tuning twin, and that rmse."""
    best, best_r = grid[0], math.inf
    for g in grid:
        r = cycle_score(model, build(g), tune, burn, seed, std)["rmse"]
        if r < best_r:
            best, best_r = g, r
    return best, best_r


def fit_reductions(problem: LatentProblem, cfg: LatentConfig, free: Tensor, out: Path, seed: int, resume: bool,
                   say: Callable[[str], None]) -> tuple[dict[str, Reduction], dict[str, Any]]:
    """POD and autoencoder at latent size ``cfg.latent`` (the autoencoder reloaded from ``out`` on resume)."""
    n_valid = max(2, round(cfg.valid_fraction * free.shape[0]))
    train, valid = free[:-n_valid], free[-n_valid:]
    pod = fit_pod(train, cfg.latent)
    ae_file = out / "autoencoder.pt"
    info: dict[str, Any] = {}
    if resume and ae_file.is_file():
        say("autoencoder trained before: reloading autoencoder.pt")
        saved = torch.load(ae_file, map_location="cpu", weights_only=True)
        ae, info = reduction_from_payload(saved["reduction"]), json.loads(saved["info"])
    else:
        say(f"training the autoencoder (k={cfg.latent}) on {train.shape[0]} snapshots")
        fit = fit_autoencoder(train, valid, cfg.latent, channels=cfg.channels, levels=cfg.levels,
                              kernel_size=cfg.kernel, lr=cfg.lr, max_epochs=cfg.epochs,
                              max_seconds=60 * cfg.max_minutes, patience=cfg.patience, pod_init=cfg.pod_init,
                              seed=seed, progress=say)
        ae = fit.reduction
        info = {"train_s": fit.train_s, "cpu_s": fit.cpu_s, "epochs": fit.epochs, "stopped": fit.stopped,
                "history": fit.history}
        atomic_torch_save({"reduction": ae.to_payload(), "info": json.dumps(info)}, ae_file)
    info["reconstruction_rmse"] = {"pod": reconstruction_rmse(pod, valid), "ae": reconstruction_rmse(ae, valid)}
    info["pod_explained_variance"] = float(pod.explained_variance()[cfg.latent - 1])
    return {"pod": pod, "ae": ae}, info


def methods_of(problem: LatentProblem, cfg: LatentConfig, reds: dict[str, Reduction], free: Tensor,
               ) -> dict[str, tuple[Callable[[float], AssimilationMethod], list[float]]]:
    """Name -> (builder from its tuned hyper-parameter, grid) of every method in the comparison."""
    from hybrida.assimilation.ensemble.letkf import LETKF

    mean, cov = free.mean(0), torch.cov(free.mT)
    N, P = cfg.members, cfg.particles
    table: dict[str, tuple[Callable[[float], AssimilationMethod], list[float]]] = {
        "letkf": (lambda a: LETKF(N, cfg.loc_rad, infl=a), cfg.letkf_infl),
        "3dvar": (lambda a: ThreeDVar((mean, cov), xB=a), cfg.xB),
        "pf": (lambda a: BootstrapPF(P, reg=a, NER=cfg.pf_NER), cfg.pf_reg),
    }
    if cfg.full_etkf:
        table["etkf"] = (lambda a: ETKF(N, infl=a), cfg.etkf_infl)
    for k in cfg.extra_latent:
        red_k = fit_pod(free, k)
        table[f"latent_etkf_pod{k}"] = (
            lambda a, red=red_k: latent_method("etkf", red, update=cfg.update, N=N, infl=a), cfg.etkf_infl)
    for key, red in reds.items():
        clim = encoded_climatology(red, free)
        table[f"latent_etkf_{key}"] = (
            lambda a, red=red: latent_method("etkf", red, update=cfg.update, N=N, infl=a), cfg.etkf_infl)
        table[f"latent_3dvar_{key}"] = (
            lambda a, red=red, clim=clim: latent_method("3dvar", red, update=cfg.var_update, climatology=clim, xB=a,
                                                  max_outer=cfg.var_outer, max_iter=cfg.var_iter), cfg.xB)
        table[f"latent_pf_{key}"] = (
            lambda a, red=red: latent_method("pf", red, N=P, reg=a, NER=cfg.pf_NER), cfg.pf_reg)
    return table


def run_latent_pipeline(problem: LatentProblem, cfg: LatentConfig, out: Path, *, seed: int, quick: bool,
                        resume: bool, progress: Callable[[str], None] | None) -> dict[str, Any]:
    """Fit, tune, cycle and compare; writes ``out/summary.json`` and plots; returns the summary."""
    from hybrida.experiment.latent_plots import plot_latent
    from hybrida.experiment.learned_analysis import write_json

    say = progress or (lambda _msg: None)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    s = seeds_of(seed)
    model, steps = problem.model, problem.obs.every
    say(f"free run of {cfg.free_run} cycles")
    free = nature_run(model, problem.draw(torch.Generator().manual_seed(s["free"])), cfg.free_run - 1, steps)
    reds, fit_info = fit_reductions(problem, cfg, free, out, s["fit"], resume, say)
    train_s = float(fit_info.get("train_s", 0.0))
    test = make_twin(model, problem.obs, problem.draw(torch.Generator().manual_seed(s["test"])), cfg.test_cycles,
                     torch.Generator().manual_seed(s["test"] + 1))
    tune = make_twin(model, problem.obs, problem.draw(torch.Generator().manual_seed(s["tune"])), cfg.tune_cycles,
                     torch.Generator().manual_seed(s["tune"] + 1))
    std = cfg.init_std
    tune_burn = min(cfg.burn_in, cfg.tune_cycles // 3)
    table, series, params = {}, {}, {}
    for name, (build, grid) in methods_of(problem, cfg, reds, free).items():
        best, tune_r = tuned(build, grid, model, tune, tune_burn, s["cycle"], std)
        res = cycle_score(model, build(best), test, cfg.burn_in, s["cycle"], std)
        table[name] = {"rmse": res["rmse"], "ms_per_analysis": res["ms_per_analysis"],
                       "cpu_ms_per_analysis": res["cpu_ms_per_analysis"], "param": best, "tune_rmse": tune_r}
        series[name] = res["series"]
        params[name] = best
        say(f"{name}: rmse {res['rmse']:.4f} (param {best}), {res['ms_per_analysis']:.2f} ms/analysis")
    if cfg.surrogate:
        n_valid = max(2, round(cfg.valid_fraction * free.shape[0]))
        sfit = fit_latent_surrogate(reds["ae"], free[:-n_valid], free[-n_valid:], steps, seed=s["fit"],
                                    max_seconds=60 * cfg.max_minutes / 2, progress=say)
        train_s += sfit.train_s
        a = params["latent_etkf_ae"]
        res = cycle_score(model, latent_method("etkf", reds["ae"], update="replace", surrogate=sfit.surrogate,
                                               N=cfg.members, infl=a), test, cfg.burn_in, s["cycle"], std)
        table["latent_etkf_ae_surrogate"] = {"rmse": res["rmse"], "ms_per_analysis": res["ms_per_analysis"],
                                             "cpu_ms_per_analysis": res["cpu_ms_per_analysis"], "param": a}
        series["latent_etkf_ae_surrogate"] = res["series"]
    headline = problem.headline
    build, _ = methods_of(problem, cfg, reds, free)[headline]
    method = build(params[headline])
    assert isinstance(method, LatentDA)
    save_learned_analysis(method, out / "latent.pt")
    bars = problem.bars(table)
    baselines = {k: v["rmse"] for k, v in table.items() if not k.startswith("latent_")}
    summary = {
        "method": headline, "rmse": table[headline]["rmse"], "baselines": baselines, "table": table,
        "bar": next((b["threshold"] for b in bars if b.get("headline")), math.nan),
        "met": all(b["met"] for b in bars if b.get("headline")), "bars": bars,
        "train_s": train_s, "autoencoder": {k: v for k, v in fit_info.items() if k != "history"},
        "quick": quick, "seed": seed, "latent": cfg.latent, "members": cfg.members, "particles": cfg.particles,
        "test_cycles": cfg.test_cycles, "burn_in": cfg.burn_in, "problem": problem.name,
        "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "config": cfg.model_dump(),
    }
    plot_latent(out, reds, free, test.truth, fit_info.get("history", []), series, cfg.burn_in)
    write_json(out / "summary.json", summary)
    say(f"{headline}: rmse {summary['rmse']:.4f}; bars met: {[b['met'] for b in bars]}")
    return summary
