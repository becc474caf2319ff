"""``hybrida learn analysis cnn_analysis``: train the single-state CNN analysis on a sakov2008 twin and compare it.

Bocquet et al. (2024, Chaos): Lorenz-96 n=40, F=8, dt=0.05, every variable observed each
step with sigma=1 (the ``lorenz96/sakov2008`` preset). One long nature run is cut into a
training, a validation and a test stretch (the test stretch is never used in training).
An ETKF (N=28, infl 1.02) runs over the training and validation stretches: its forecasts
give the first training pairs, and its analyses are the reanalysis. Two variants of the
analysis network are trained, each first on the ETKF forecasts, then online: the current
network is cycled over many training segments at once and refitted on the forecasts it
met (:func:`hybrida.learn.cnn_analysis.fit_online`):

* ``truth``: targets are the true states;
* ``reanalysis``: targets (and the validation score) are the ETKF analyses: no truth is
  used in training.

The truth variant (``unroll_variants``) is then fine-tuned through the cycle
(:func:`hybrida.learn.cnn_unroll.fit_unrolled`): windows of 20 cycles started from
its own cycled analyses, the analysis error of every cycle backpropagated through the
model, cosine learning-rate decay, early stopping on the cycled validation rmse. On
seed 1 one such epoch moved the cycled validation rmse_a from 0.299 to 0.259 (5-cycle
windows had given 0.314 -> 0.290 on a quick run): the one-step online refits do not
see what an analysis does to the later forecasts. ``--resume`` reuses the online
training of a checkpoint when only the ``unroll_*`` fields changed.

Both are then cycled by :func:`~hybrida.cycle.run_cycle` on the test truth and
observations next to 3D-Var (climatological B, xB=0.02) and the ETKF, all from the
same initial state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hybrida.assimilation.base import AssimilationMethod
from hybrida.assimilation.ensemble.etkf import ETKF
from hybrida.assimilation.learned import save_learned_analysis
from hybrida.assimilation.learned.cnn_analysis import CNNAnalysis, CNNAnalysisNet
from hybrida.assimilation.variational.threedvar import ThreeDVar
from hybrida.cycle import FilterDiverged, run_cycle
from hybrida.experiment.builder import derive_seeds
from hybrida.experiment.config import ConfigError
from hybrida.experiment.learned_analysis import write_json
from hybrida.experiment.learned_cnn_config import (
    BARS,
    QUICK_BARS,
    CNNAnalysisConfig,
    make_config,
    same_run,
    unroll_key,
)
from hybrida.experiment.reanalysis import assimilate
from hybrida.experiment.twin import climatology, make_twin
from hybrida.io.checkpoint import atomic_torch_save
from hybrida.learn.cnn_analysis import AnalysisPairs, Segments, fit_online
from hybrida.learn.cnn_unroll import fit_unrolled
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.networks import IdentityObs
from hybrida.plots import plot_rmse_series, save_figure

DESCRIPTION = (
    "single-state CNN analysis (Bocquet et al. 2024) on L96 sakov2008, trained online on truth and on an "
    "ETKF reanalysis, vs 3D-Var and ETKF N=28"
)
def make_data(cfg: CNNAnalysisConfig, seed: int) -> dict[str, Any]:
    """Nature run, observations, ETKF reanalysis of the training + validation stretches, climatology."""
    seeds = derive_seeds(seed)
    gen_truth = torch.Generator().manual_seed(seeds["truth"])
    gen_da = torch.Generator().manual_seed(seeds["analysis"])
    model = Lorenz96(40, 8.0, 0.05)
    obs_system = IdentityObs(model.n, std=cfg.obs_std)
    x0 = model.initial_state() + 0.01 * torch.randn(model.n, generator=gen_truth, dtype=torch.float64)
    x0 = model.forecast(x0, cfg.spinup) if cfg.spinup else x0
    total = cfg.train_cycles + cfg.valid_cycles + cfg.test_cycles + 2 * cfg.gap
    twin = make_twin(model, obs_system, x0, total, gen_truth)
    y = torch.stack([o.y for o in twin.observations])  # y[k - 1]: cycle k
    n_da = cfg.train_cycles + cfg.gap + cfg.valid_cycles
    re = assimilate(
        model, ETKF(N=cfg.etkf_N, infl=cfg.etkf_infl), twin.truth[0], twin.observations[:n_da],
        initial_std=1.0, truth=twin.truth[: n_da + 1], burn_in=cfg.burn_in, generator=gen_da,
    )
    if re.diverged_at is not None:
        raise RuntimeError(f"the ETKF reanalysis diverged at cycle {re.diverged_at}")
    clim = climatology(model, twin.truth[0], cfg.clim_steps, spinup=0)
    return {"truth": twin.truth, "y": y, "reanalysis": re.mean, "reanalysis_rmse": re.rmse_a, "clim": clim,
            "test_start": n_da + cfg.gap, "valid_start": cfg.train_cycles + cfg.gap}


def _pairs(model: Lorenz96, data: dict[str, Any], target: torch.Tensor, a: int, b: int) -> AnalysisPairs:
    """ETKF forecasts of cycles a+1..b with their observations and targets."""
    with torch.no_grad():
        xf = model.forecast(data["reanalysis"][a:b], 1)
    return AnalysisPairs(xf, data["y"][a:b], target[a + 1 : b + 1])


def _segments(data: dict[str, Any], target: torch.Tensor, a: int, b: int, length: int) -> Segments:
    """Segments of ``length`` cycles between cycles a and b, started from the ETKF analyses."""
    B = (b - a) // length
    y = data["y"][a : a + B * length].reshape(B, length, -1).transpose(0, 1)
    t = target[a + 1 : a + 1 + B * length].reshape(B, length, -1).transpose(0, 1)
    return Segments(data["reanalysis"][a : a + B * length : length].clone(), y.contiguous(), t.contiguous())


def _target(data: dict[str, Any], variant: str) -> torch.Tensor:
    """The training targets of a variant, indexed by cycle like the truth (row k: cycle k)."""
    return data["truth"] if variant == "truth" else data["reanalysis"]


def train_variant(
    cfg: CNNAnalysisConfig, data: dict[str, Any], variant: str, seed: int, say: Callable[[str], None]
) -> tuple[CNNAnalysis, dict[str, Any]]:
    """Train one variant online (targets: the truth or the reanalysis); the method and its history."""
    model = Lorenz96(40, 8.0, 0.05)
    truth = data["truth"]
    target = _target(data, variant)
    b0, v0 = cfg.burn_in, data["valid_start"] + cfg.burn_in
    v1 = data["valid_start"] + cfg.valid_cycles
    first, first_valid = _pairs(model, data, target, b0, cfg.train_cycles), _pairs(model, data, target, v0, v1)
    train_seg = _segments(data, target, b0, cfg.train_cycles, cfg.segment)
    valid_seg = _segments(data, target, v0, v1, cfg.valid_segment)
    mean, std = float(truth[: cfg.train_cycles].mean()), float(truth[: cfg.train_cycles].std())
    if variant == "reanalysis":  # no truth at all in this variant
        mean, std = float(target[b0 : cfg.train_cycles].mean()), float(target[b0 : cfg.train_cycles].std())
    torch.manual_seed(seed)  # network initialisation
    net = CNNAnalysisNet(cfg.channels, cfg.blocks, cfg.kernel, cfg.radius, mean, std, cfg.obs_std).float()
    index = torch.arange(40)
    t0, c0 = time.perf_counter(), time.process_time()
    fits, scores = fit_online(
        net, model, first, first_valid, train_seg, valid_seg, index, 1,
        rounds=cfg.rounds, epochs=cfg.epochs, epochs_online=cfg.epochs_online, max_pairs=cfg.max_pairs,
        skip=min(10, cfg.valid_segment // 2), log=lambda m: say(f"[{variant}] {m}"),
        batch_size=cfg.batch_size, lr=cfg.lr, lr_online=cfg.lr_online, patience=cfg.patience,
        generator=torch.Generator().manual_seed(seed + 7),
    )
    train_s = time.perf_counter() - t0
    history = {
        "train_s": train_s,
        "online_s": train_s,
        "online_cpu_s": time.process_time() - c0,
        "fits": [{"train": f.history["train"], "valid": f.history["valid"], "epochs": f.epochs_run} for f in fits],
        "cycled_valid_rmse": scores,
        "unrolled_valid_rmse": [],
    }
    method = CNNAnalysis(net, index, 40, torch.float64, target=variant, info={"train_s": train_s, "seed": seed})
    return method, history


def fine_tune_variant(
    cfg: CNNAnalysisConfig, data: dict[str, Any], online: CNNAnalysis, history: dict[str, Any], seed: int,
    say: Callable[[str], None],
) -> tuple[CNNAnalysis, dict[str, Any]]:
    """Fine-tune an online-trained variant through the cycle (:func:`fit_unrolled`); a new method and history.

    Windows of ``unroll_window`` cycles start from the network's own cycled analyses on
    ``unroll_segment``-cycle training segments; the loss is the (weighted) analysis MSE
    against the variant's targets over every cycle of the window, backpropagated
    through the model; cosine learning-rate decay; early stopping on the cycled
    validation rmse.
    """
    variant = online.target
    model = Lorenz96(40, 8.0, 0.05)
    target = _target(data, variant)
    b0, v0 = cfg.burn_in, data["valid_start"] + cfg.burn_in
    v1 = data["valid_start"] + cfg.valid_cycles
    train_seg = _segments(data, target, b0, cfg.train_cycles, cfg.unroll_segment)
    valid_seg = _segments(data, target, v0, v1, cfg.valid_segment)
    net = CNNAnalysis.from_payload(online.to_payload()).net  # a copy: the online weights stay as they were
    t0, c0 = time.perf_counter(), time.process_time()
    fit = fit_unrolled(
        net, model, train_seg, valid_seg, online.index, 1, window=list(cfg.unroll_window), epochs=cfg.unroll_epochs,
        batch_size=cfg.unroll_batch, lr=cfg.unroll_lr, lr_min=cfg.unroll_lr_min, late_weight=cfg.unroll_late,
        truncate=cfg.unroll_truncate or None, steps_per_epoch=cfg.unroll_steps, patience=cfg.unroll_patience,
        skip=min(10, cfg.valid_segment // 2), generator=torch.Generator().manual_seed(seed + 8),
        log=lambda m: say(f"[{variant}] {m}"),
    )
    unroll_s = time.perf_counter() - t0
    train_s = history["online_s"] + unroll_s
    new = {
        **history, "train_s": train_s, "unroll_s": unroll_s, "unroll_cpu_s": time.process_time() - c0,
        "unrolled_valid_rmse": [math.sqrt(v) for v in fit.history["valid"]],
    }
    method = CNNAnalysis(net, online.index, 40, torch.float64, target=variant, info={"train_s": train_s, "seed": seed})
    return method, new


def _cycle(method: AssimilationMethod, model: Lorenz96, truth: torch.Tensor, obs: list, x0: torch.Tensor,
           std: float, gen: torch.Generator) -> list[float]:
    """rmse_a per test cycle (NaN after a divergence)."""
    state = method.initial_state(x0, std, generator=gen)
    out: list[float] = []
    try:
        with torch.no_grad():
            for record, _ in run_cycle(model, method, state, truth, obs, 1, generator=gen, probabilistic_scores=False):
                out.append(record.rmse_a)
    except FilterDiverged:
        pass
    return out + [math.nan] * (len(obs) - len(out))


def evaluate(cfg: CNNAnalysisConfig, data: dict[str, Any], methods: dict[str, AssimilationMethod], seed: int) -> dict:
    """Cycle every method on the test stretch from the same initial state; rmse_a per cycle and time mean."""
    model = Lorenz96(40, 8.0, 0.05)
    s = data["test_start"]
    truth = data["truth"][s : s + cfg.test_cycles + 1]
    obs_system = IdentityObs(40, std=cfg.obs_std)
    obs = []
    for k in range(1, cfg.test_cycles + 1):
        o = obs_system.network(k)
        o.y = data["y"][s + k - 1].clone()
        obs.append(o)
    gen = torch.Generator().manual_seed(derive_seeds(seed)["initial"])
    x0 = truth[0] + cfg.test_initial_std * torch.randn(40, generator=gen, dtype=torch.float64)
    series, means = {}, {}
    for name, method in methods.items():
        g = torch.Generator().manual_seed(derive_seeds(seed)["analysis"])
        t0 = time.perf_counter()
        series[name] = _cycle(method, model, truth, obs, x0, cfg.test_initial_std, g)
        tail = torch.tensor(series[name][cfg.burn_in :])
        means[name] = float(tail.mean()) if bool(torch.isfinite(tail).all()) else math.inf
        means[name + "_s_per_cycle"] = (time.perf_counter() - t0) / cfg.test_cycles
    return {"series": series, "rmse": means}


def _plots(out: Path, histories: dict[str, dict], series: dict[str, list[float]], burn_in: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for variant, h in histories.items():
        tr = [v for f in h["fits"] for v in f["train"]]
        va = [v for f in h["fits"] for v in f["valid"]]
        axes[0].plot([math.sqrt(v) for v in tr], label=f"{variant}: train")
        axes[0].plot([math.sqrt(v) for v in va], "--", label=f"{variant}: valid pairs")
        scores = h["cycled_valid_rmse"] + h.get("unrolled_valid_rmse", [])
        axes[1].plot(scores, "o-", label=variant)
    axes[0].set_xlabel("epoch (all fits)")
    axes[0].set_ylabel("analysis rmse of the pairs")
    axes[1].set_xlabel("online round, then unrolled epoch")
    axes[1].set_ylabel("cycled validation rmse_a")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "training.png")
    plot_rmse_series(series, out / "rmse.png", burn_in)


def run(
    out: Path,
    *,
    seed: int = 1,
    quick: bool = False,
    overrides: list[str] | None = None,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train both variants, save ``out/analysis.pt`` (truth) and ``out/analysis_reanalysis.pt``; score; summary.

    ``resume=True`` reuses the data, every variant already trained and the test scores in
    ``out/checkpoint.pt`` (written after the data, after each variant and after the test).
    """
    cfg = make_config(quick, list(overrides or []))
    say = progress or (lambda _msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, out, seed, quick, resume, say)
    finally:
        torch.set_num_threads(threads)


def _migrate(ckpt: dict[str, Any]) -> None:
    """Give the variants of a checkpoint written before the online/fine-tuned split their online weights."""
    legacy_ok = ckpt["key"]["config"].get("unroll_epochs", 0) == 0  # never fine-tuned: payload = online weights
    for v, done in list(ckpt.get("variants", {}).items()):
        if "online_payload" in done:
            continue
        if legacy_ok:
            done.update(online_payload=done["payload"], online_history=done["history"], unroll=None)
        else:  # fine-tuned with settings not recorded: train again
            del ckpt["variants"][v]


def _run(cfg: CNNAnalysisConfig, out: Path, seed: int, quick: bool, resume: bool, say: Callable[[str], None]) -> dict:
    ckpt_path = out / "checkpoint.pt"
    key = {"config": cfg.model_dump(), "seed": seed}
    ckpt: dict[str, Any] = {}
    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if not same_run(ckpt.get("key"), key):
            raise ConfigError(f"{ckpt_path}: written for another config or seed; run without --resume")
        _migrate(ckpt)
        say(f"resuming: data and {sorted(ckpt.get('variants', {}))} from {ckpt_path}")
    t0 = time.perf_counter()
    if "data" not in ckpt:
        say("nature run and ETKF reanalysis of the training and validation stretches ...")
        ckpt = {"key": key, "data": make_data(cfg, seed), "variants": {}, "data_s": time.perf_counter() - t0}
        atomic_torch_save(ckpt, ckpt_path)
    data = ckpt["data"]
    say(f"ETKF reanalysis rmse_a {data['reanalysis_rmse']:.3f}")
    methods: dict[str, CNNAnalysis] = {}
    histories: dict[str, dict] = {}
    for variant in cfg.variants:
        done = ckpt["variants"].get(variant)
        wanted = unroll_key(cfg, variant)
        if done is not None and done["unroll"] == wanted:
            methods[variant] = CNNAnalysis.from_payload(done["payload"])
            histories[variant] = done["history"]
            continue
        if done is None:
            say(f"training the {variant}-target variant online ...")
            online, online_history = train_variant(cfg, data, variant, seed, say)
        else:
            online, online_history = CNNAnalysis.from_payload(done["online_payload"]), done["online_history"]
            online_history.setdefault("online_s", online_history["train_s"])
        method, history = online, online_history
        if wanted is not None:
            say(f"fine-tuning the {variant}-target variant through the cycle ...")
            method, history = fine_tune_variant(cfg, data, online, online_history, seed, say)
        methods[variant], histories[variant] = method, history
        ckpt["variants"][variant] = {
            "payload": method.to_payload(), "history": history, "unroll": wanted,
            "online_payload": online.to_payload(), "online_history": online_history,
        }
        ckpt["key"] = key
        for name in (f"cnn_{variant}", f"cnn_{variant}_online"):  # scored with other weights: score again
            for part in ("rmse", "series"):
                for k in (name, name + "_s_per_cycle"):
                    ckpt.get("evaluation", {}).get(part, {}).pop(k, None)
        atomic_torch_save(ckpt, ckpt_path)
    for variant, method in methods.items():
        save_learned_analysis(method, out / ("analysis.pt" if variant == "truth" else f"analysis_{variant}.pt"))
    baselines: dict[str, AssimilationMethod] = {
        "3dvar": ThreeDVar(data["clim"], xB=cfg.xB),
        "etkf": ETKF(N=cfg.etkf_N, infl=cfg.etkf_infl),
    }
    names: dict[str, AssimilationMethod] = {f"cnn_{v}": m for v, m in methods.items()}
    for v in methods:  # the online weights before the fine-tuning, scored too
        if ckpt["variants"][v].get("unroll") is not None:
            names[f"cnn_{v}_online"] = CNNAnalysis.from_payload(ckpt["variants"][v]["online_payload"])
    result = ckpt.get("evaluation") or {"series": {}, "rmse": {}}
    todo = {k: m for k, m in {**names, **baselines}.items() if k not in result["rmse"]}
    if todo:
        say(f"cycling {', '.join(todo)} on the test stretch ...")
        new = evaluate(cfg, data, todo, seed)
        result = {part: {**result[part], **new[part]} for part in ("series", "rmse")}
        ckpt["evaluation"] = result
        atomic_torch_save(ckpt, ckpt_path)
    rmse = result["rmse"]
    bars = QUICK_BARS if quick else BARS
    summary: dict[str, Any] = {
        "method": "cnn_analysis",
        "quick": quick,
        "seed": seed,
        "config": cfg.model_dump(),
        "baselines": {k: rmse[k] for k in baselines},
        "reanalysis_rmse_a": data["reanalysis_rmse"],
        "s_per_cycle": {k.removesuffix("_s_per_cycle"): v for k, v in rmse.items() if k.endswith("_s_per_cycle")},
        "train_s": sum(h["train_s"] for h in histories.values()),
        "data_s": ckpt.get("data_s", math.nan),
        "bars": {v: bars[v] for v in methods},
        "cycled_valid_rmse": {v: h["cycled_valid_rmse"] for v, h in histories.items()},
        "unrolled_valid_rmse": {v: h.get("unrolled_valid_rmse", []) for v, h in histories.items()},
    }
    for v in methods:
        summary[f"rmse_{v}"] = rmse[f"cnn_{v}"]
        summary[f"train_s_{v}"] = histories[v]["train_s"]
        summary[f"timing_{v}"] = {k: histories[v].get(k, math.nan) for k in
                                  ("online_s", "online_cpu_s", "unroll_s", "unroll_cpu_s")}
        summary[f"online_valid_rmse_{v}"] = min(histories[v]["cycled_valid_rmse"], default=math.nan)
        summary[f"rmse_{v}_online"] = rmse.get(f"cnn_{v}_online", rmse[f"cnn_{v}"])
        summary[f"met_{v}"] = bool(rmse[f"cnn_{v}"] <= bars[v])
    lead = "truth" if "truth" in methods else next(iter(methods))
    summary["rmse"] = rmse[f"cnn_{lead}"]
    summary["bar"] = bars[lead]
    summary["met"] = all(summary[f"met_{v}"] for v in methods)
    if "reanalysis" in methods:
        summary["rmse_reanalysis"] = rmse["cnn_reanalysis"]
        summary["bar_reanalysis"] = bars["reanalysis"]
    write_json(out / "summary.json", summary)
    _plots(out, histories, result["series"], cfg.burn_in)
    say(f"test rmse_a: {', '.join(f'{k} {rmse[k]:.3f}' for k in [*names, *baselines])}")
    return summary
