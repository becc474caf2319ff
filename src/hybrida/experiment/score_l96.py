"""``hybrida learn score score_l96``: a diffusion prior of Lorenz-96 windows, posterior sampling vs the EnKS.

Setup: Lorenz-96 n=40, F=8, dt=0.05; windows of ``window`` states one model step apart;
50% of the variables observed at random (drawn anew each time) with σ=1 every 0.05.
1. Free run → overlapping training windows → ε-network trained by denoising score matching
   (:mod:`hybrida.learn.score`, VP cosine schedule of Rozet & Louppe 2023).
2. Test windows of ``test_length`` states of an independent run: whole-window posterior
   samples (SDA guidance, :func:`~hybrida.assimilation.learned.score.sample_posterior`)
   against the square-root EnKS with the true model and the same N. The EnKS is cycled as a
   filter up to each window and smooths over it (lag = the window); with ``past=True`` the
   score sampler gets the same past information as one pseudo-observation of the state just
   before the window (the EnKS filtered mean, its spread as the error std).
3. GenCast-like generated ensembles: :class:`GeneratedEnsembleETKF` (each member's forecast
   sampled given its own past states, recentred on one model forecast) cycled by
   :func:`~hybrida.cycle.run_cycle` against the ETKF with a model-propagated ensemble of the
   same N on the same truth and observations.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from hybrida import metrics
from hybrida.assimilation.base import AssimilationMethod
from hybrida.assimilation.ensemble.enks import enks
from hybrida.assimilation.ensemble.etkf import ETKF
from hybrida.assimilation.learned import save_learned_analysis
from hybrida.assimilation.learned.score import NetworkPrior, sample_posterior
from hybrida.assimilation.learned.score_ensemble import GeneratedEnsembleETKF
from hybrida.cycle import FilterDiverged, run_cycle
from hybrida.experiment.config import _Strict
from hybrida.experiment.learned_analysis import pipeline_config, write_json
from hybrida.experiment.score_plots import score_plots
from hybrida.experiment.twin import Twin, make_twin
from hybrida.learn.score import fit_score, load_score_prior, save_score_prior, windows_of
from hybrida.models.lorenz96 import Lorenz96
from hybrida.nn.score import ScoreNet
from hybrida.observations.networks import RandomSubsetObs

DESCRIPTION = (
    "Score-based DA (Rozet & Louppe 2023): diffusion prior of L96 n=40 windows, 50% random obs sigma=1 every 0.05; "
    "posterior samples vs EnKS (bars rmse <= 1.3x, spread/rmse 0.8-1.2) and a generated-ensemble ETKF (<= 1.2x)"
)

#: climatological mean and std of Lorenz-96 F=8 (normalisation of the windows)
L96_LOC, L96_SCALE = 2.35, 3.6


class ScoreL96Config(_Strict):
    """Everything the score-based DA pipeline needs; every field has a default."""

    window: int = Field(8, ge=2, description="states per training window (one model step of 0.05 apart)")
    obs_fraction: float = Field(0.5, gt=0, lt=1, description="fraction of the 40 variables observed each time")
    obs_std: float = Field(1.0, gt=0, description="observation error std σ")
    free_run: int = Field(50000, ge=100, description="model steps of the training free run")
    valid_run: int = Field(2000, ge=50, description="model steps of the validation free run")
    channels: int = Field(32, ge=1, description="hidden channels of the score network")
    depth: int = Field(4, ge=1, description="residual blocks of the score network")
    batch: int = Field(64, ge=1, description="windows per training step")
    lr: float = Field(2e-3, ge=0, description="initial Adam learning rate (0 disables training)")
    lr_final: float = Field(1e-4, ge=0, description="learning rate at max_steps (cosine decay)")
    warmup: int = Field(100, ge=0, description="steps of linear learning-rate warm-up before the cosine decay")
    ema: float = Field(0.999, ge=0, lt=1, description="decay of the EMA of the weights (0: no averaging)")
    max_steps: int = Field(4000, ge=1, description="training steps at most")
    max_minutes: float = Field(48.0, gt=0, description="training wall-time budget (minutes)")
    valid_every: int = Field(100, ge=1, description="steps between validations")
    patience: int = Field(10, ge=1, description="validations without improvement before stopping")
    prior: str = Field("", description="path of a trained prior (prior.pt) to use instead of training")
    members: int = Field(20, ge=2, description="posterior samples / ensemble size N of every method")
    test_windows: int = Field(8, ge=1, description="test windows")
    test_length: int = Field(16, ge=2, description="states per test window (composed from training windows)")
    spin_cycles: int = Field(200, ge=1, description="EnKS filter cycles before the first test window")
    gap: int = Field(24, ge=0, description="cycles between two test windows")
    sample_steps: int = Field(64, ge=2, description="DDIM steps of the posterior sampler")
    corrections: int = Field(0, ge=0, description="Langevin corrector steps after each DDIM step")
    gamma: float = Field(0.1, ge=0, description="SDA likelihood covariance factor γ")
    past: bool = Field(True, description="condition the window on the EnKS analysis just before it")
    enks_infl: float = Field(1.02, gt=0, description="multiplicative inflation of the EnKS")
    cycles: int = Field(100, ge=2, description="cycles of the generated-ensemble comparison")
    cycle_burn_in: int = Field(20, ge=0, description="cycles left out of the time-mean rmse_a")
    gen_steps: int = Field(32, ge=2, description="DDIM steps per generated forecast ensemble")
    history_std: float = Field(0.5, gt=0, description="error std of a member's past states when generating")
    gen_infl: float = Field(1.0, gt=0, description="inflation of the generated-ensemble ETKF")
    etkf_infl: float = Field(1.02, gt=0, description="inflation of the model-propagated ETKF")
    bar_rmse: float = Field(1.3, gt=0, description="score posterior-mean rmse / EnKS rmse must be <= this")
    bar_spread: list[float] = Field([0.8, 1.2], description="band the score posterior's spread/rmse must lie in")
    bar_generated: float = Field(1.2, gt=0, description="generated-ensemble ETKF rmse_a / ETKF rmse_a bar")


QUICK = {
    "free_run": 8000, "valid_run": 1000, "max_steps": 250, "warmup": 25, "patience": 5, "max_minutes": 2.5, "valid_every": 50,
    "test_windows": 2, "spin_cycles": 100, "sample_steps": 32, "cycles": 16, "cycle_burn_in": 4,
    "bar_rmse": 2.5, "bar_spread": [0.5, 2.0], "bar_generated": 2.0,
}


def make_config(quick: bool, overrides: list[str]) -> ScoreL96Config:
    """The validated config: defaults (or the quick variant) with ``--set`` overrides applied."""
    return pipeline_config(ScoreL96Config, QUICK, quick, overrides)


def _seeds(seed: int) -> dict[str, int]:
    names = ("train", "valid", "test", "cycle", "fit", "init", "sample")
    states = np.random.SeedSequence([seed, 15]).generate_state(len(names), dtype=np.uint64)
    return {k: int(s) >> 1 for k, s in zip(names, states)}


def _attractor_state(model: Lorenz96, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return model.forecast(8.0 + torch.randn(40, generator=gen, dtype=torch.float64), 1000)


def train_prior(config: ScoreL96Config, out: Path, seed: int, resume: bool,
                progress: Callable[[str], None] | None) -> tuple[NetworkPrior, dict[str, Any]]:
    """Free runs → windows → trained prior saved to ``out/prior.pt``; returns it and the fit summary."""
    seeds = _seeds(seed)
    model = Lorenz96(40, 8.0, 0.05)
    with torch.no_grad():
        run_tr = model.forecast(_attractor_state(model, seeds["train"]), config.free_run - 1, trajectory=True)
        run_va = model.forecast(_attractor_state(model, seeds["valid"]), config.valid_run - 1, trajectory=True)
    train, valid = windows_of(run_tr, config.window, 1), windows_of(run_va, config.window, config.window // 2)
    torch.manual_seed(seeds["init"])
    net = ScoreNet(config.channels, config.depth).float()
    fit = fit_score(
        net, train, valid, loc=L96_LOC, scale=L96_SCALE, batch=config.batch, lr=config.lr,
        lr_final=config.lr_final, max_steps=config.max_steps, max_seconds=60.0 * config.max_minutes,
        valid_every=config.valid_every, patience=config.patience, warmup=config.warmup, ema=config.ema,
        generator=torch.Generator().manual_seed(seeds["fit"]), checkpoint=out / "train_checkpoint.pt",
        resume=resume, progress=progress,
    )
    prior = NetworkPrior(fit.net, config.window, 40, L96_LOC, L96_SCALE, spacing=1)
    info = {**fit.summary(), "history": fit.history, "windows": int(train.shape[0])}
    save_score_prior(prior, out / "prior.pt", info={k: v for k, v in info.items() if k != "history"})
    write_json(out / "training.json", info)
    return prior, info


def _grid(obs: list, n: int) -> torch.Tensor:
    y = torch.full((len(obs), n), math.nan, dtype=torch.float64)
    for k, o in enumerate(obs):
        y[k, o.indices] = o.y
    return y


def posterior_windows(prior: NetworkPrior, config: ScoreL96Config, seed: int,
                      say: Callable[[str], None]) -> dict[str, Any]:
    """Score posterior samples and EnKS smoothers ``(W, T, N, n)`` of the test windows, with the truth."""
    seeds = _seeds(seed)
    model = Lorenz96(40, 8.0, 0.05)
    T, N, W = config.test_length, config.members, config.test_windows
    K = config.spin_cycles + W * (T + config.gap)
    gen = torch.Generator().manual_seed(seeds["test"])
    twin = make_twin(model, RandomSubsetObs(40, config.obs_fraction, std=config.obs_std, every=1),
                     _attractor_state(model, seeds["test"]), K, gen)
    E0 = twin.truth[0] + torch.randn(N, 40, generator=gen, dtype=torch.float64)
    filt = enks(model, E0, twin.observations, 1, lag=0, infl=config.enks_infl).filtered
    truth, score, smooth, ys = [], [], [], []
    sgen = torch.Generator().manual_seed(seeds["sample"])
    for w in range(W):
        a = config.spin_cycles + w * (T + config.gap) + 1  # first cycle of the window
        obs = twin.observations[a - 1:a - 1 + T]
        smooth.append(enks(model, filt[a - 1], obs, 1, lag=T, infl=config.enks_infl).smoothed[1:])
        y, std = _grid(obs, 40), torch.full((T, 40), config.obs_std, dtype=torch.float64)
        if config.past:
            y = torch.cat((filt[a - 1].mean(-2, keepdim=True), y))
            std = torch.cat((filt[a - 1].std(-2, keepdim=True).clamp_min(0.05), std))
        X = sample_posterior(prior, y, std, N, steps=config.sample_steps, corrections=config.corrections,
                             gamma=config.gamma, generator=sgen)
        score.append(X[:, 1:] if config.past else X)
        truth.append(twin.truth[a:a + T])
        ys.append(_grid(obs, 40))
        say(f"test window {w + 1}/{W}: score rmse {float(metrics.rmse(score[-1].mean(0), truth[-1]).mean()):.3f}, "
            f"EnKS {float(metrics.rmse(smooth[-1].mean(-2), truth[-1]).mean()):.3f}")
    return {"truth": torch.stack(truth), "score": torch.stack(score).transpose(1, 2), "enks": torch.stack(smooth),
            "y": torch.stack(ys)}


def ensemble_scores(E: torch.Tensor, truth: torch.Tensor) -> dict[str, Any]:
    """rmse of the mean, spread, spread/rmse, CRPS and rank histogram of ensembles ``(..., N, n)``."""
    rmse = metrics.rmse(E.mean(-2), truth)
    spread = metrics.spread(E)
    ranks = metrics.rank_of_truth(E, truth)
    return {"rmse": float(rmse.mean()), "spread": float(spread.mean()),
            "spread_ratio": float(metrics.spread_skill_ratio(spread, rmse)),
            "crps": float(metrics.crps_ensemble(E, truth).mean()),
            "rank_histogram": metrics.rank_histogram(ranks, E.shape[-2]).tolist()}


def _cycle(model: Lorenz96, method: AssimilationMethod, twin: Twin, burn_in: int, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    state = method.initial_state(twin.truth[0], 1.0, gen)
    series = []
    try:
        for rec, _ in run_cycle(model, method, state, twin.truth, twin.observations, 1, generator=gen,
                                probabilistic_scores=False):
            series.append(rec.rmse_a)
    except (FilterDiverged, torch.linalg.LinAlgError):
        return math.inf
    tail = series[burn_in:]
    value = sum(tail) / len(tail)
    return value if math.isfinite(value) and value < 20 else math.inf


def generated_method(prior: NetworkPrior, config: ScoreL96Config, seed: int) -> GeneratedEnsembleETKF:
    """The generated-ensemble ETKF of ``config`` around ``prior``."""
    return GeneratedEnsembleETKF(prior, config.members, config.gen_infl, steps=config.gen_steps, gamma=config.gamma,
                                 history_std=config.history_std, seed=_seeds(seed)["sample"] + 1)


def generated_ensembles(prior: NetworkPrior, config: ScoreL96Config, seed: int) -> dict[str, float]:
    """Time-mean rmse_a of the generated-ensemble ETKF and the model-propagated ETKF on one twin."""
    seeds = _seeds(seed)
    model = Lorenz96(40, 8.0, 0.05)
    gen = torch.Generator().manual_seed(seeds["cycle"])
    twin = make_twin(model, RandomSubsetObs(40, config.obs_fraction, std=config.obs_std, every=1),
                     _attractor_state(model, seeds["cycle"]), config.cycles, gen)
    burn = min(config.cycle_burn_in, config.cycles // 2)
    generated = generated_method(prior, config, seed)
    t0 = time.process_time()
    r_gen = _cycle(model, generated, twin, burn, seeds["cycle"] + 1)
    cpu_gen = time.process_time() - t0
    r_etkf = _cycle(model, ETKF(config.members, infl=config.etkf_infl), twin, burn, seeds["cycle"] + 1)
    return {"generated_etkf": r_gen, "etkf": r_etkf, "ratio": r_gen / r_etkf, "generated_cpu_s": cpu_gen}


def run(
    out: Path,
    *,
    seed: int = 1,
    quick: bool = False,
    overrides: list[str] | None = None,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train (or reload) the prior, sample the test windows, cycle the generated ensembles; returns the summary."""
    config = make_config(quick, list(overrides or []))
    say = progress or (lambda _msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    done = out / "training.json"
    if config.prior:
        say(f"using the trained prior {config.prior}")
        prior = load_score_prior(config.prior)
        train_info = torch.load(config.prior, map_location="cpu", weights_only=True).get("info", {})
    elif resume and done.is_file() and (out / "prior.pt").is_file():
        say("training finished before: reloading prior.pt")
        prior, train_info = load_score_prior(out / "prior.pt"), json.loads(done.read_text())
    else:
        say(f"training the score prior (windows of {config.window}, {config.max_steps} steps at most)")
        prior, train_info = train_prior(config, out, seed, resume, progress)
    if prior.length != config.window or prior.spacing != 1:
        raise ValueError(f"prior {config.prior}: windows of {prior.length} states {prior.spacing} steps apart; "
                         f"this pipeline needs {config.window} states 1 step apart")
    save_learned_analysis(generated_method(prior, config, seed), out / "score.pt")
    say(f"posterior sampling of {config.test_windows} test windows vs the EnKS")
    sample_cpu0 = time.process_time()
    post = posterior_windows(prior, config, seed, say)
    sample_cpu = time.process_time() - sample_cpu0
    sc, ek = ensemble_scores(post["score"], post["truth"]), ensemble_scores(post["enks"], post["truth"])
    say(f"generated-ensemble ETKF vs ETKF over {config.cycles} cycles")
    gen = generated_ensembles(prior, config, seed)
    ratio = sc["rmse"] / ek["rmse"]
    met = {
        "rmse": bool(ratio <= config.bar_rmse),
        "spread": bool(config.bar_spread[0] <= sc["spread_ratio"] <= config.bar_spread[1]),
        "generated": bool(gen["ratio"] <= config.bar_generated),
    }
    summary = {
        "method": "score", "rmse": sc["rmse"], "rmse_ratio": ratio,
        "baselines": {"enks": ek["rmse"], "etkf_cycled": gen["etkf"]},
        "spread_ratio": sc["spread_ratio"], "crps": {"score": sc["crps"], "enks": ek["crps"]},
        "score": sc, "enks": ek, "generated": gen,
        "bar": {"rmse_ratio": config.bar_rmse, "spread_ratio": config.bar_spread, "generated_ratio": config.bar_generated},
        "met_each": met, "met": all(met.values()),
        "train_s": float(train_info.get("train_s", math.nan)), "train_cpu_s": float(train_info.get("cpu_s", math.nan)),
        "training": {k: v for k, v in train_info.items() if k != "history"},
        "sample_cpu_s": sample_cpu, "quick": quick, "seed": seed,
        "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "config": config.model_dump(),
    }
    score_plots(out, post, sc, ek, train_info.get("history", []))
    write_json(out / "summary.json", summary)
    say(f"score posterior rmse {sc['rmse']:.3f} vs EnKS {ek['rmse']:.3f} (ratio {ratio:.2f}, bar {config.bar_rmse}); "
        f"spread/rmse {sc['spread_ratio']:.2f}; generated ETKF {gen['generated_etkf']:.3f} vs ETKF {gen['etkf']:.3f}")
    return summary
