"""``hybrida learn filter bach2025_l96``: a learned LETKF against the grid-searched LETKF on the Bach et al. (2025) L96 twin.

Lorenz-96 d=40, F=8, x₁, x₅, …, x₃₇ observed every 0.15 with σ_y (default 1). Per ensemble
size N the LETKF is grid-searched over inflation × radius on separate trajectories; the
learned filter (:class:`~hybrida.assimilation.ensemble.learned_filter.LearnedFilterNet`:
a taper as a function of distance, rescaled per grid point, and an inflation field, both
from a deep-sets network of the forecast ensemble) starts at the tuned LETKF of ``train_N``
and is trained by truncated BPTT (a) on the truth and (b) truth-free on the next
observations, stopped early on validation R-RMSE. Both are cycled beside the tuned LETKF
on the same test trajectories at every N (the network trained at ``train_N``, optionally
fine-tuned at each other N). Score: R-RMSE = mean ‖x̄ᵃ − x‖₂ / ‖x‖₂.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from hybrida.assimilation.ensemble.learned_filter import LearnedFilterNet, LearnedLETKF
from hybrida.assimilation.learned import save_learned_analysis
from hybrida.experiment.config import _Strict
from hybrida.experiment.learned_analysis import pipeline_config, write_json
from hybrida.learn.filter_bach import (
    BachSetup,
    TwinData,
    cycle_r_rmse,
    fit_filter,
    grid_search,
    initial_ensemble,
    learned_analysis,
    letkf_analysis,
    make_data,
)
from hybrida.plots import save_figure

DESCRIPTION = (
    "Learned LETKF localisation/inflation (Bach et al. 2025): L96 d=40, 10 of 40 observed every 0.15, sigma_y=1; "
    "truth-trained and truth-free vs the grid-searched LETKF per N (bars -10% at N=10, 20; truth-free -5% at N=20)"
)

#: Bach et al. (2025) tuned-LETKF R-RMSE (their table), by σ_y and N
PAPER_LETKF = {1.0: {5: 0.609, 10: 0.467, 20: 0.364, 40: 0.322, 100: 0.301},
               0.7: {5: 0.601, 10: 0.375, 20: 0.248, 40: 0.206, 100: 0.198}}


class FilterBachConfig(_Strict):
    """Everything the pipeline needs; every field has a default."""

    sigma: float = Field(1.0, gt=0, description="observation error std σ_y")
    sizes: list[int] = Field([5, 10, 20, 40], description="ensemble sizes N evaluated")
    train_N: int = Field(20, ge=3, description="ensemble size the network is trained at")
    infls: list[float] = Field([1.0, 1.03, 1.06, 1.1, 1.15], description="LETKF inflations tried")
    radii: list[float] = Field([1.0, 1.5, 2.0, 3.0, 4.0, 6.0], description="LETKF radii tried (grid points)")
    grid_trajectories: int = Field(6, ge=1, description="trajectories of the grid search")
    grid_cycles: int = Field(400, ge=20, description="cycles per grid-search trajectory")
    train_trajectories: int = Field(16, ge=1, description="training trajectories")
    train_cycles: int = Field(300, ge=20, description="cycles per training trajectory")
    valid_trajectories: int = Field(16, ge=1, description="validation trajectories (early stopping)")
    valid_cycles: int = Field(250, ge=20, description="cycles per validation trajectory")
    test_trajectories: int = Field(24, ge=1, description="test trajectories (the paper: 64)")
    test_cycles: int = Field(1000, ge=20, description="cycles per test trajectory (the paper: 1500)")
    burn_in: int = Field(100, ge=0, description="cycles left out of every R-RMSE")
    epochs: int = Field(15, ge=0, description="training epochs at most (0: untrained, the tuned LETKF)")
    finetune_epochs: int = Field(0, ge=0, description="epochs of fine-tuning at each other N (0: none)")
    lr: float = Field(0.003, gt=0, description="Adam learning rate")
    window: int = Field(10, ge=1, description="cycles per truncated-BPTT window")
    patience: int = Field(4, ge=1, description="epochs without validation improvement before stopping")
    fresh_data: bool = Field(True, description="new training trajectories every epoch (False: one fixed set)")
    max_minutes: float = Field(60.0, gt=0, description="wall-time budget of each training (minutes)")
    hidden: int = Field(8, ge=1, description="channels of the ensemble field network")
    width: int = Field(2, ge=1, description="half-width of its periodic convolutions")
    field: bool = Field(False, description="use the ensemble field network (False: taper and scalar inflation only)")
    sites: int = Field(3, ge=1, description="taper rows / base inflations by distance to the nearest observation")
    correction: bool = Field(True, description="add the convolutional correction of the analysis mean")
    correction_hidden: int = Field(16, ge=1, description="channels of the mean correction")
    init_loc_rad: float | None = Field(None, gt=0, description="starting radius (None: the tuned LETKF's at train_N)")
    init_infl: float | None = Field(None, gt=1, description="starting inflation (None: the tuned LETKF's)")
    truth_free: bool = Field(True, description="also train the truth-free (next-observation) variant")
    bar_truth: float = Field(0.10, description="required relative gain 1 - learned/LETKF of the truth-trained filter "
                             "at bar_sizes (negative: may be that much worse)")
    bar_sizes: list[int] = Field([10, 20], description="ensemble sizes the truth bar applies to")
    bar_truth_free: float = Field(0.05, description="required relative gain of the truth-free filter at train_N")


QUICK = {
    "sizes": [10, 20], "infls": [1.02, 1.05, 1.08], "radii": [1.5, 2.5, 4.0], "grid_trajectories": 4,
    "grid_cycles": 250, "train_trajectories": 8, "train_cycles": 200, "valid_trajectories": 4, "valid_cycles": 200,
    "test_trajectories": 8, "test_cycles": 400, "burn_in": 50, "epochs": 4, "hidden": 4, "truth_free": False,
    "field": False, "correction": False, "fresh_data": False, "init_loc_rad": 6.0, "init_infl": 1.15, "lr": 0.1, "window": 5, "bar_truth": -0.03,
    "bar_sizes": [20],
}
#: the quick preset starts far from the tuned LETKF (radius 6, inflation 1.15) and must come back within 3% of it


def make_config(quick: bool, overrides: list[str]) -> FilterBachConfig:
    """The validated config: defaults (or the quick variant) with ``--set`` overrides applied."""
    config = pipeline_config(FilterBachConfig, QUICK, quick, overrides)
    if config.train_N not in config.sizes:
        config.sizes = sorted({*config.sizes, config.train_N})
    return config


def _seeds(seed: int) -> dict[str, int]:
    names = ("grid", "train", "valid", "test", "fit", "init", "test_ens", "grid_ens")
    states = np.random.SeedSequence([seed, 13]).generate_state(len(names), dtype=np.uint64)
    return {k: int(s) >> 1 for k, s in zip(names, states, strict=True)}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _data(setup: BachSetup, config: FilterBachConfig, seeds: dict[str, int]) -> dict[str, TwinData]:
    return {
        "grid": make_data(setup, config.grid_trajectories, config.grid_cycles, _gen(seeds["grid"])),
        "train": make_data(setup, config.train_trajectories, config.train_cycles, _gen(seeds["train"])),
        "valid": make_data(setup, config.valid_trajectories, config.valid_cycles, _gen(seeds["valid"])),
        "test": make_data(setup, config.test_trajectories, config.test_cycles, _gen(seeds["test"])),
    }


def _grids(setup: BachSetup, config: FilterBachConfig, data: TwinData, seeds: dict[str, int], out: Path,
           resume: bool, say: Callable[[str], None]) -> dict[int, dict]:
    path = out / "grid.json"
    if resume and path.is_file():
        saved = {int(k): v for k, v in json.loads(path.read_text()).items()}
        if all(N in saved for N in config.sizes):
            say("grid search finished before: reloading grid.json")
            return saved
    grids = {}
    for N in config.sizes:
        say(f"grid search LETKF N={N}: {len(config.infls)} inflations x {len(config.radii)} radii")
        burn = min(config.burn_in, config.grid_cycles // 2)
        grids[N] = grid_search(setup, N, data, config.infls, config.radii, _gen(seeds["grid_ens"] + N), burn)
        say(f"  best infl {grids[N]['infl']}, radius {grids[N]['loc_rad']}: R-RMSE {grids[N]['r_rmse']:.4f}")
    write_json(path, {str(k): v for k, v in grids.items()})
    return grids


def _train(setup: BachSetup, config: FilterBachConfig, data: dict[str, TwinData], grid: dict, loss: str,
           seeds: dict[str, int], out: Path, resume: bool, say: Callable[[str], None]) -> tuple[LearnedFilterNet, dict]:
    torch.manual_seed(seeds["init"])
    field = {"hidden": config.hidden, "width": config.width} if config.field else None
    correction = {"hidden": config.correction_hidden, "width": config.width} if config.correction else None
    net = LearnedFilterNet(setup.n, loc_rad=config.init_loc_rad or grid["loc_rad"],
                           infl=config.init_infl or max(grid["infl"], 1.005), field=field, sites=config.sites,
                           correction=correction)
    if config.epochs == 0:
        return net, {"history": [], "best_valid": math.nan, "cpu_s": 0.0, "wall_s": 0.0, "stopped_early": False}
    fit = fit_filter(setup, net, config.train_N, data["train"], data["valid"], generator=_gen(seeds["fit"]),
                     loss=loss, epochs=config.epochs, lr=config.lr, window=config.window, patience=config.patience,
                     burn_in=config.burn_in, checkpoint=out / f"checkpoint_{loss}.pt", resume=resume, progress=say,
                     fresh_data=config.fresh_data, max_seconds=60.0 * config.max_minutes)
    return net, {"history": fit.history, "best_valid": fit.best_valid, "cpu_s": fit.cpu_s, "wall_s": fit.wall_s,
                 "stopped_early": fit.stopped_early}


def _finetune(setup: BachSetup, config: FilterBachConfig, data: dict[str, TwinData], net: LearnedFilterNet, N: int,
              seeds: dict[str, int], say: Callable[[str], None]) -> tuple[LearnedFilterNet, float]:
    tuned = copy.deepcopy(net)
    fit = fit_filter(setup, tuned, N, data["train"], data["valid"], generator=_gen(seeds["fit"] + N), loss="truth",
                     epochs=config.finetune_epochs, lr=config.lr / 2, window=config.window,
                     patience=config.patience, burn_in=config.burn_in, progress=say, fresh_data=config.fresh_data,
                     max_seconds=60.0 * config.max_minutes)
    return tuned, fit.cpu_s


def _fields_vs_spread(setup: BachSetup, net: LearnedFilterNet, data: TwinData, N: int, seed: int) -> dict[str, list]:
    """Inflation and distance scale per grid point against the forecast spread, over the first test cycles."""
    E = initial_ensemble(data, N, _gen(seed))[:2]
    model, analyse = setup.model, learned_analysis(setup, net)
    spread, infl, scale = [], [], []
    with torch.no_grad():
        for k in range(1, min(150, data.y.shape[0]) + 1):
            Ef = model.forecast(E, setup.steps)
            if k > 50:
                s, lam = net.fields(Ef, setup.obs_index.to(Ef))
                spread.append(Ef.std(-2).flatten())
                infl.append(lam.flatten())
                scale.append(s.flatten())
            E = analyse(Ef, data.y[k - 1, :2], k)
    return {"spread": torch.cat(spread).tolist(), "infl": torch.cat(infl).tolist(), "scale": torch.cat(scale).tolist()}


def _plots(out: Path, setup: BachSetup, nets: dict[str, LearnedFilterNet], grid: dict, results: dict,
           fields: dict[str, list]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hybrida.assimilation.ensemble.letkf import GC_HALF_WIDTH_FACTOR
    from hybrida.assimilation.ensemble.localization import gaspari_cohn, periodic_distance

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    d = torch.arange(nets["truth"].taper.max_dist + 1, dtype=torch.float64)
    ax[0].plot(d, gaspari_cohn(d / (GC_HALF_WIDTH_FACTOR * grid["loc_rad"])), "k--",
               label=f"GC, tuned radius {grid['loc_rad']:g}")
    locations = setup.obs_index.to(torch.float64)
    grid_points = torch.arange(setup.n, dtype=torch.float64)
    dist = periodic_distance(grid_points.unsqueeze(-1), locations.unsqueeze(-2), float(setup.n)).round().long()
    for name, net in nets.items():
        site = net.site_classes(locations)
        for c, row in enumerate(net.taper.values().detach()):
            used = sorted({int(v) for v in dist[site == c].flatten() if v <= net.taper.max_dist})  # distances that occur
            ax[0].plot(used, row[used], "o-", ms=3, label=f"learned ({name}, {c} from the nearest obs)")
    ax[0].set_xlabel("state-observation distance (grid points)")
    ax[0].set_ylabel("taper ρ(d)")
    ax[0].set_xlim(0, 12)
    ax[0].legend()
    ax[1].scatter(fields["spread"], fields["infl"], s=2, alpha=0.3)
    ax[1].axhline(grid["infl"], color="k", ls="--", lw=0.8, label=f"tuned LETKF {grid['infl']:g}")
    ax[1].set_xlabel("forecast spread at the grid point")
    ax[1].set_ylabel("learned inflation λ_i (truth-trained)")
    ax[1].legend()
    fig.tight_layout()
    save_figure(fig, out / "taper_inflation.png")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    sizes = sorted(results)
    ax.plot(sizes, [results[N]["letkf"] for N in sizes], "ks-", label="grid-searched LETKF")
    for key in ("truth", "observations", "finetuned"):
        if all(key in results[N] for N in sizes):
            ax.plot(sizes, [results[N][key] for N in sizes], "o-", label=f"learned ({key})")
    paper = PAPER_LETKF.get(setup.sigma)
    if paper:
        ax.plot(sorted(paper), [paper[N] for N in sorted(paper)], "x:", color="gray", label="Bach et al. LETKF")
    ax.set_xscale("log")
    ax.set_xlabel("ensemble size N")
    ax.set_ylabel("R-RMSE")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "r_rmse_vs_N.png")


def run(
    out: Path,
    *,
    seed: int = 1,
    quick: bool = False,
    overrides: list[str] | None = None,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Grid-search, train, test and compare; returns the summary written to ``out/summary.json``."""
    config = make_config(quick, list(overrides or []))
    say = progress or (lambda _msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    setup = BachSetup(sigma=config.sigma)
    seeds = _seeds(seed)
    data = _data(setup, config, seeds)
    grids = _grids(setup, config, data["grid"], seeds, out, resume, say)
    nets, training = {}, {}
    for loss in ("truth", "observations") if config.truth_free else ("truth",):
        say(f"training the learned filter at N={config.train_N} with the {loss} loss")
        nets[loss], training[loss] = _train(setup, config, data, grids[config.train_N], loss, seeds, out, resume, say)
        name = "filter.pt" if loss == "truth" else "filter_truth_free.pt"
        info = {"config": config.model_dump(), "seed": seed, "loss": loss, "train_N": config.train_N,
                "best_valid_r_rmse": training[loss]["best_valid"]}
        save_learned_analysis(LearnedLETKF(nets[loss], p=len(setup.obs_index), N=config.train_N, info=info),
                              out / name)
    results: dict[int, dict[str, float]] = {}
    common: dict[int, dict[str, float]] = {}
    diverged: dict[str, dict[str, int]] = {}
    finetune_cpu = 0.0
    test = data["test"]
    burn = min(config.burn_in, config.test_cycles // 2)
    for N in config.sizes:
        g = grids[N]
        E0 = initial_ensemble(test, N, _gen(seeds["test_ens"] + N))
        per = {"letkf": cycle_r_rmse(setup, letkf_analysis(setup, g["infl"], g["loc_rad"]), E0, test, burn,
                                     per_trajectory=True)}
        for loss, net in nets.items():
            per[loss] = cycle_r_rmse(setup, learned_analysis(setup, net), E0, test, burn, per_trajectory=True)
        if config.finetune_epochs and N != config.train_N:
            say(f"fine-tuning the truth-trained filter at N={N}")
            tuned, cpu = _finetune(setup, config, data, nets["truth"], N, seeds, say)
            finetune_cpu += cpu
            per["finetuned"] = cycle_r_rmse(setup, learned_analysis(setup, tuned), E0, test, burn, per_trajectory=True)
        elif config.finetune_epochs:
            per["finetuned"] = per["truth"]
        ok = torch.stack([torch.isfinite(v) for v in per.values()]).all(0)  # trajectories no filter lost
        results[N] = {k: float(v.mean()) for k, v in per.items()}
        common[N] = {k: float(v[ok].mean()) if bool(ok.any()) else math.inf for k, v in per.items()}
        common[N]["trajectories"] = int(ok.sum())
        lost = {k: int((~torch.isfinite(v)).sum()) for k, v in per.items()}
        if any(lost.values()):
            diverged[str(N)] = lost
        say(f"N={N}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[N].items())
            + (f"; diverged trajectories {lost}, on the {int(ok.sum())} common ones: "
               + ", ".join(f"{k} {common[N][k]:.4f}" for k in per) if any(lost.values()) else ""))
    # gains on the trajectories every filter kept; a learned filter losing more trajectories than the LETKF fails
    gain = {N: {k: 1.0 - v / c["letkf"] for k, v in c.items() if k not in ("letkf", "trajectories")}
            for N, c in common.items()}

    def passes(N: int, key: str, bar: float) -> bool:
        lost = diverged.get(str(N), {})
        return key in gain[N] and gain[N][key] >= bar and lost.get(key, 0) <= lost.get("letkf", 0)

    checks = {f"truth_N{N}": passes(N, "truth", config.bar_truth) or passes(N, "finetuned", config.bar_truth)
              for N in config.bar_sizes}
    if config.truth_free:
        checks[f"truth_free_N{config.train_N}"] = passes(config.train_N, "observations", config.bar_truth_free)
    fields = _fields_vs_spread(setup, nets["truth"], test, config.train_N, seeds["test_ens"])
    _plots(out, setup, nets, grids[config.train_N], common, fields)
    train_cpu = sum(t["cpu_s"] for t in training.values()) + finetune_cpu
    summary = {
        "method": "learned_filter",
        "r_rmse": {str(N): r["truth"] for N, r in results.items()},
        "r_rmse_truth_free": {str(N): r["observations"] for N, r in results.items() if "observations" in r},
        "r_rmse_finetuned": {str(N): r["finetuned"] for N, r in results.items() if "finetuned" in r},
        "rmse": results[config.train_N]["truth"],
        "baselines": {f"letkf_N{N}": r["letkf"] for N, r in results.items()},
        "baseline_params": {f"letkf_N{N}": {k: grids[N][k] for k in ("infl", "loc_rad", "r_rmse")} for N in results},
        "paper_letkf": PAPER_LETKF.get(config.sigma, {}),
        "gain": {str(N): v for N, v in gain.items()},
        "r_rmse_common": {str(N): v for N, v in common.items()},
        "diverged": diverged,
        "train_s": train_cpu,
        "train_cpu_s": train_cpu,
        "train_wall_s": sum(t["wall_s"] for t in training.values()),
        "training": {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in training.items()},
        "bar": {"truth_gain": config.bar_truth, "truth_sizes": config.bar_sizes,
                "truth_free_gain": config.bar_truth_free if config.truth_free else None, "checks": checks},
        "met": all(checks.values()),
        "learned_infl": nets["truth"].infl.detach().tolist(),
        "learned_taper": nets["truth"].taper.values().detach().tolist(),
        "quick": quick,
        "seed": seed,
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "config": config.model_dump(),
    }
    write_json(out / "training.json", {k: v["history"] for k, v in training.items()})
    write_json(out / "summary.json", summary)
    say(f"R-RMSE at N={config.train_N}: learned {summary['rmse']:.4f} vs tuned LETKF "
        f"{results[config.train_N]['letkf']:.4f}; bars {'met' if summary['met'] else 'NOT met'} {checks}")
    return summary
