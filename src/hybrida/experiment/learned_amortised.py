"""``hybrida learn analysis amortised``: train the amortised ensemble filter and compare it with a tuned LETKF.

Setup of McCabe & Brown (2021): Lorenz-96 n=40, F=8, observed every 0.1
(2 steps of dt 0.05), every 4th variable with the offset rotating each cycle
(10 observations), σ=1. The filter (m members) is trained self-supervised on
independent training trajectories (no truth in the loss), stopped early on
validation trajectories, and cycled on a test truth never seen in training,
together with an LETKF tuned on a small grid (N = m and N = 2m) on the same
test truth and observations.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from hybrida.assimilation.base import AssimilationMethod
from hybrida.assimilation.ensemble.letkf import LETKF
from hybrida.assimilation.learned import load_learned_analysis, save_learned_analysis
from hybrida.assimilation.learned.amortised import AmortisedFilter, EnsembleSetConv
from hybrida.cycle import FilterDiverged, run_cycle
from hybrida.experiment.config import _Strict
from hybrida.experiment.learned_analysis import pipeline_config, write_json
from hybrida.experiment.twin import Twin, make_twin, nature_run
from hybrida.learn.amortised import (
    AmortisedFit,
    climatological_ensembles,
    fit_amortised,
    grid_observations_of,
    training_summary,
)
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.networks import IdentityObs
from hybrida.observations.rotating import RotatingEveryKthObs
from hybrida.observations.system import ObservationSystem
from hybrida.plots import plot_rmse_series, save_figure

DESCRIPTION = (
    "Amortised ensemble filter (McCabe & Brown 2021): L96 n=40, every 4th variable (rotating) every 0.1, "
    "sigma=1; m=5 self-supervised through the forecast vs a tuned LETKF (bar rmse <= 0.75)"
)

#: climatological mean and std of Lorenz-96 F=8 (standardise the network inputs)
L96_LOC, L96_SCALE = 2.35, 3.6


class AmortisedConfig(_Strict):
    """Everything the amortised-filter pipeline needs; every field has a default."""

    members: int = Field(5, ge=2, description="ensemble size m of the learned filter")
    observations: Literal["rotating", "identity"] = Field(
        "rotating", description="'rotating': every 4th variable, offset +1 each cycle; 'identity': all 40"
    )
    obs_std: float = Field(1.0, gt=0, description="observation error std σ")
    steps_per_cycle: int = Field(2, ge=1, description="model steps (dt 0.05) between observations")
    train_trajectories: int = Field(64, ge=1, description="independent training trajectories")
    train_cycles: int = Field(500, ge=10, description="observation cycles per training trajectory")
    valid_trajectories: int = Field(8, ge=1, description="validation trajectories (early stopping)")
    valid_cycles: int = Field(300, ge=10, description="cycles per validation trajectory")
    valid_burn_in: int = Field(50, ge=0, description="validation cycles ignored while the filter spins up")
    test_cycles: int = Field(10000, ge=10, description="test cycles (one trajectory never used in training)")
    test_burn_in: int = Field(500, ge=0, description="test cycles left out of the time-mean rmse")
    tune_cycles: int = Field(800, ge=10, description="cycles of the separate trajectory the LETKF is tuned on")
    channels: int = Field(32, ge=1, description="hidden channels of the network")
    depth: int = Field(4, ge=1, description="equivariant residual blocks")
    kernel: int = Field(5, ge=1, description="width of the circular convolutions")
    bilinear: bool = Field(True, description="add bilinear (cross-covariance) pooling across members")
    window: int = Field(10, ge=2, description="cycles per training window (truncated BPTT)")
    batch: int = Field(16, ge=1, description="trajectories per training step")
    lr: float = Field(2e-3, gt=0, description="initial Adam learning rate")
    lr_final: float = Field(1e-4, gt=0, description="learning rate at max_steps (cosine decay)")
    max_steps: int = Field(600, ge=1, description="training steps at most")
    max_minutes: float = Field(40.0, gt=0, description="training wall-time budget (minutes)")
    valid_every: int = Field(50, ge=1, description="steps between validations")
    patience: int = Field(6, ge=1, description="validations without improvement before stopping")
    loss: Literal["nll", "crps"] = Field("nll", description="score of the forecast ensemble on the next observations")
    letkf_loc: list[float] = Field([2.0, 3.0, 4.0], description="LETKF localisation radii tried")
    letkf_infl: list[float] = Field([1.05, 1.1, 1.2, 1.3], description="LETKF inflation factors tried")
    letkf_sizes: list[int] = Field([], description="LETKF ensemble sizes (empty: m and 2m)")
    bar: float = Field(0.75, gt=0, description="test rmse the learned filter must reach")


QUICK = {
    "train_trajectories": 32, "train_cycles": 200, "valid_trajectories": 4, "valid_cycles": 200,
    "test_cycles": 1500, "test_burn_in": 200, "tune_cycles": 400, "channels": 16, "depth": 3,
    "max_steps": 250, "max_minutes": 4.0, "valid_every": 50, "letkf_loc": [2.0, 3.0], "letkf_infl": [1.1, 1.2],
    "bar": 1.1,
}


def make_config(quick: bool, overrides: list[str]) -> AmortisedConfig:
    """The validated config: defaults (or the quick variant) with ``--set`` overrides applied."""
    return pipeline_config(AmortisedConfig, QUICK, quick, overrides)


def observation_system(config: AmortisedConfig, n: int = 40) -> ObservationSystem:
    """The observation network of ``config``."""
    if config.observations == "identity":
        return IdentityObs(n, std=config.obs_std, every=config.steps_per_cycle)
    return RotatingEveryKthObs(n, 4, std=config.obs_std, every=config.steps_per_cycle)


def _seeds(seed: int) -> dict[str, int]:
    names = ("train", "valid", "test", "tune", "fit", "init")
    states = np.random.SeedSequence([seed, 12]).generate_state(len(names), dtype=np.uint64)
    return {k: int(s) >> 1 for k, s in zip(names, states)}


def _trajectories(model: Lorenz96, S: int, T: int, gen: torch.Generator, steps: int) -> torch.Tensor:
    x0 = climatological_ensembles(model, S, 1, model.n, gen, torch.float64, spinup=1000)[:, 0]
    return nature_run(model, x0, T, steps).transpose(0, 1).contiguous()


def _twin(model: Lorenz96, obs: ObservationSystem, cycles: int, seed: int) -> Twin:
    gen = torch.Generator().manual_seed(seed)
    x0 = climatological_ensembles(model, 1, 1, model.n, gen, torch.float64, spinup=1000)[0, 0]
    return make_twin(model, obs, x0, cycles, gen)


def cycle_rmse(
    model: Lorenz96, method: AssimilationMethod, twin: Twin, burn_in: int, seed: int
) -> tuple[float, list[float]]:
    """Time-mean analysis rmse after ``burn_in`` cycles (inf if the filter diverges) and the rmse series."""
    gen = torch.Generator().manual_seed(seed)
    state = method.initial_state(twin.truth[0], 1.0, gen)
    series: list[float] = []
    try:
        for rec, _ in run_cycle(
            model, method, state, twin.truth, twin.observations, twin.steps_per_cycle,
            generator=gen, probabilistic_scores=False,
        ):
            series.append(rec.rmse_a)
    except (FilterDiverged, torch.linalg.LinAlgError):  # a diverging LETKF can also break its eigh first
        return math.inf, series
    tail = series[burn_in:]
    value = sum(tail) / len(tail) if tail else math.nan
    return (value if math.isfinite(value) and value < 20 else math.inf), series


def tune_letkf(
    model: Lorenz96, N: int, twin: Twin, config: AmortisedConfig, seed: int
) -> tuple[dict[str, float], float]:
    """Best (loc_rad, infl) of the small grid on the tuning twin, and its tuning rmse."""
    best, best_rmse = {"loc_rad": config.letkf_loc[0], "infl": config.letkf_infl[0]}, math.inf
    burn = min(config.test_burn_in, len(twin.observations) // 4)
    for loc in config.letkf_loc:
        for infl in config.letkf_infl:
            r, _ = cycle_rmse(model, LETKF(N, loc, infl=infl), twin, burn, seed)
            if r < best_rmse:
                best, best_rmse = {"loc_rad": loc, "infl": infl}, r
    return best, best_rmse


def _plots(out: Path, fit_history: list[dict[str, float]], series: dict[str, list[float]], burn_in: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [h["step"] for h in fit_history]
    ax[0].plot(steps, [h["train"] for h in fit_history], label="train (window score)")
    ax[0].plot(steps, [h["valid"] for h in fit_history], label="validation score")
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("forecast score of next obs")
    ax[0].legend()
    ax[1].plot(steps, [h["valid_rmse"] for h in fit_history], color="C2")
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("validation rmse (diagnostic only)")
    fig.tight_layout()
    save_figure(fig, out / "training.png")
    plot_rmse_series(series, out / "rmse.png", burn_in, window=100)


def train(config: AmortisedConfig, out: Path, seed: int, resume: bool, progress: bool) -> tuple[AmortisedFilter, AmortisedFit]:
    """Make the training/validation data, train the network and save ``out/analysis.pt``."""
    seeds = _seeds(seed)
    model = Lorenz96(40, 8.0, 0.05)
    obs = observation_system(config)
    g_train, g_valid = torch.Generator().manual_seed(seeds["train"]), torch.Generator().manual_seed(seeds["valid"])
    truth_tr = _trajectories(model, config.train_trajectories, config.train_cycles, g_train, config.steps_per_cycle)
    y_tr, std = grid_observations_of(truth_tr, obs, g_train)
    truth_va = _trajectories(model, config.valid_trajectories, config.valid_cycles, g_valid, config.steps_per_cycle)
    y_va, _ = grid_observations_of(truth_va, obs, g_valid)
    torch.manual_seed(seeds["init"])
    net = EnsembleSetConv(config.channels, config.depth, config.kernel, bilinear=config.bilinear).float()
    fit = fit_amortised(
        net, model, y_tr, y_va, std, m=config.members, steps_per_cycle=config.steps_per_cycle,
        loc=L96_LOC, scale=L96_SCALE, window=config.window, batch=config.batch, lr=config.lr,
        lr_final=config.lr_final, max_steps=config.max_steps, max_seconds=60.0 * config.max_minutes,
        valid_every=config.valid_every, patience=config.patience, loss=config.loss,
        valid_burn_in=min(config.valid_burn_in, config.valid_cycles // 2), truth_valid=truth_va,
        generator=torch.Generator().manual_seed(seeds["fit"]), progress=progress,
        checkpoint=out / "train_checkpoint.pt", resume=resume,
    )
    info = {"config": config.model_dump(), "seed": seed, **training_summary(fit)}
    method = AmortisedFilter(
        fit.net, N=config.members, n=40, p=obs.network(1).p, loc=L96_LOC, scale=L96_SCALE, info=info
    )
    save_learned_analysis(method, out / "analysis.pt")
    write_json(out / "training.json", {"history": fit.history, **training_summary(fit)})
    return method, fit


def run(
    out: Path,
    *,
    seed: int = 1,
    quick: bool = False,
    overrides: list[str] | None = None,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train (or, with ``resume`` after a finished training, reload), test and compare; returns the summary."""
    config = make_config(quick, list(overrides or []))
    say = progress or (lambda _msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    done = out / "training.json"
    if resume and done.is_file() and (out / "analysis.pt").is_file():
        say("training finished before: reloading analysis.pt")
        method = load_learned_analysis(out / "analysis.pt")
        train_info = json.loads(done.read_text())
    else:
        say(f"training the amortised filter (m={config.members}, {config.observations} observations)")
        method, fit = train(config, out, seed, resume, progress is not None)
        train_info = {"history": fit.history, **training_summary(fit)}
    model = Lorenz96(40, 8.0, 0.05)
    obs = observation_system(config)
    seeds = _seeds(seed)
    say(f"cycling the test period ({config.test_cycles} cycles)")
    test = _twin(model, obs, config.test_cycles, seeds["test"])
    rmse, learned_series = cycle_rmse(model, method, test, config.test_burn_in, seeds["test"] + 1)
    series = {f"amortised m={config.members}": learned_series}
    tune = _twin(model, obs, config.tune_cycles, seeds["tune"])
    baselines, tuned = {}, {}
    for N in config.letkf_sizes or [config.members, 2 * config.members]:
        say(f"tuning LETKF N={N} on {len(config.letkf_loc) * len(config.letkf_infl)} settings")
        params, tune_rmse = tune_letkf(model, N, tune, config, seeds["tune"] + 1)
        r, s = cycle_rmse(model, LETKF(N, params["loc_rad"], infl=params["infl"]), test, config.test_burn_in,
                          seeds["test"] + 1)
        baselines[f"letkf_N{N}"] = r
        tuned[f"letkf_N{N}"] = {**params, "tune_rmse": tune_rmse}
        series[f"LETKF N={N}"] = s
    summary = {
        "method": "amortised",
        "rmse": rmse,
        "baselines": baselines,
        "baseline_params": tuned,
        "train_s": float(train_info.get("train_s", math.nan)),
        "training": {k: v for k, v in train_info.items() if k != "history"},
        "bar": config.bar,
        "met": bool(rmse <= config.bar),
        "quick": quick,
        "seed": seed,
        "members": config.members,
        "observations": config.observations,
        "test_cycles": config.test_cycles,
        "test_burn_in": config.test_burn_in,
        "wall_s": time.perf_counter() - t0,
        "config": config.model_dump(),
    }
    _plots(out, train_info["history"], series, config.test_burn_in)
    write_json(out / "summary.json", summary)
    say(f"amortised m={config.members}: test rmse {rmse:.3f} (bar {config.bar}); baselines {baselines}")
    return summary
