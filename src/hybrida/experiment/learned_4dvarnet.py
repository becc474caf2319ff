"""``hybrida learn analysis 4dvarnet``: train 4DVarNet on Lorenz-96 windows and compare it on test windows.

Setup of Fablet et al. 2021 (JAMES, sec. 4.2): L96 n=40, F=8, dt=0.05; windows of 200
steps; observations every 4 steps of a random 50% of the variables, noise variance 2.
Training, validation and test windows come from three disjoint stretches of one run (test
never seen in training). Scores on the test windows: the normalised error MSE/std^2 (std
of the test truth) of 4DVarNet, per-variable linear interpolation, fixed-step gradient
descent on the same cost with the true L96 prior, and hybrida's weak-constraint
:class:`~hybrida.assimilation.variational.fourdvar.FourDVar` on the first windows. The
trained method is then cycled by :func:`~hybrida.cycle.run_cycle` over the same test
observations (analysis at each observation time = the end of the reconstructed window)
next to the cycled weak-constraint FourDVar.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from hybrida.assimilation.learned import save_learned_analysis
from hybrida.assimilation.learned.fourdvarnet import (
    FourDVarNet,
    FourDVarNetSolver,
    ODEPrior,
    interpolate_window,
    l96_ode_coefficients,
    observation_row,
)
from hybrida.assimilation.variational.fourdvar import FourDVar
from hybrida.assimilation.window import Window
from hybrida.cycle import run_cycle
from hybrida.experiment.config import ConfigError, _Strict
from hybrida.experiment.learned_analysis import pipeline_config, write_json
from hybrida.experiment.twin import climatology
from hybrida.io.checkpoint import atomic_torch_save
from hybrida.learn.fourdvarnet import (
    FitResult4DVarNet,
    fit_fourdvarnet,
    gradient_descent_4dvar,
    make_windows,
    normalise,
    reconstruct,
)
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.networks import RandomSubsetObs
from hybrida.plots import plot_rmse_series, save_figure

DESCRIPTION = (
    "4DVarNet (Fablet et al. 2021): learned L96-ODE or CNN prior + ConvLSTM gradient solver on 200-step "
    "L96 windows (obs every 4 steps, 50%, var 2) vs interpolation, gradient-descent 4D-Var, weak FourDVar"
)
#: the bars of issue 12 on the test normalised error (headline) and of --quick
BARS = {"ode": 0.06, "cnn": 0.03}
QUICK_BARS = {"ode": 0.25, "cnn": 0.25}


class FourDVarNetConfig(_Strict):
    """Everything the 4DVarNet pipeline does; every field has a default (the headline run)."""

    prior: Literal["ode", "cnn"] = Field("ode", description="learned prior: 'ode' (L96 as quadratic convolutions) or 'cnn'")
    ode_init: Literal["zero", "random"] = Field("zero", description="initial ODE coefficients")
    window: int = Field(200, ge=8, description="model steps per test window")
    every: int = Field(4, ge=1, description="model steps between observation times")
    frac: float = Field(0.5, gt=0, le=1, description="fraction of variables observed at each observation time")
    sigma2: float = Field(2.0, gt=0, description="observation-error variance")
    train_windows: int = Field(60, ge=1, description="training windows (of `window` steps)")
    val_windows: int = Field(8, ge=1, description="validation windows (early stopping)")
    test_windows: int = Field(10, ge=1, description="test windows")
    hidden: int = Field(8, ge=1, description="ConvLSTM hidden channels")
    kernel: int = Field(3, ge=1, description="ConvLSTM kernel width (time and space)")
    n_iter: int = Field(20, ge=1, description="unrolled solver iterations")
    cnn_channels: int = Field(16, ge=1, description="channels of the CNN prior")
    steps: int = Field(1500, ge=1, description="maximum training steps")
    batch: int = Field(4, ge=1, description="windows per training step")
    crop: int = Field(64, ge=4, description="model steps of the training crops")
    lr: float = Field(1e-2, gt=0, description="Adam learning rate")
    prior_steps: int = Field(300, ge=0, description="warm-start steps fitting the prior alone on truth crops")
    prior_weight: float = Field(0.5, ge=0, description="weight of the prior losses |x - Phi(x)|^2")
    eval_every: int = Field(50, ge=1, description="training steps between validation scores")
    patience: int = Field(12, ge=1, description="validation scores without improvement before stopping")
    schedule: Literal["plateau", "cosine"] = Field(
        "cosine", description="learning rate: 'plateau' (halved after each validation without improvement) or 'cosine' over `steps`"
    )
    max_minutes: float = Field(19.0, gt=0, description="training wall-time limit")
    gd_iter: int = Field(1000, ge=1, description="gradient-descent 4D-Var iterations")
    gd_step: float = Field(0.02, gt=0, description="gradient-descent step (normalised units)")
    gd_lam_prior: float = Field(10.0, gt=0, description="gradient-descent weight of |x - M(x)|^2 (obs weight 1)")
    fourdvar_windows: int = Field(2, ge=0, description="test windows also analysed by weak-constraint FourDVar")
    fourdvar_q: float = Field(0.01, gt=0, description="FourDVar model-error variance per cycle (Q = q I)")
    fourdvar_sub: int = Field(5, ge=1, description="observation times per FourDVar sub-window on the test windows")
    fourdvar_xb: float = Field(0.05, gt=0, description="FourDVar B = xB x climatology when cycled (after the first sub-window)")
    cycles: int = Field(300, ge=10, description="test cycles run by run_cycle (<= test_windows * window / every)")
    burn_in: int = Field(50, ge=0, description="cycles left out of the cycled time-mean rmse")
    cycle_window: int = Field(16, ge=1, description="cycles per window of the cycled 4DVarNet")
    cycle_lag: int = Field(4, ge=1, description="window (cycles) of the cycled weak-constraint FourDVar baseline")
    threads: int = Field(1, ge=1, description="torch threads")


QUICK = {
    "train_windows": 20, "test_windows": 4, "val_windows": 4, "steps": 150, "max_minutes": 2.5, "eval_every": 25,
    "prior_steps": 150, "gd_iter": 300, "schedule": "plateau", "patience": 6, "fourdvar_windows": 1, "cycles": 150, "burn_in": 20,
}


def make_config(quick: bool, overrides: list[str]) -> FourDVarNetConfig:
    """The (quick) config with ``--set`` overrides applied, or a ConfigError naming the field."""
    cfg = pipeline_config(FourDVarNetConfig, QUICK, quick, overrides)
    if cfg.window % cfg.every or cfg.crop % cfg.every or cfg.crop > cfg.window:
        raise ConfigError("window and crop must be multiples of every, crop <= window")
    if cfg.cycles > cfg.test_windows * cfg.window // cfg.every or cfg.burn_in >= cfg.cycles:
        raise ConfigError("cycles must be <= test_windows * window / every and > burn_in")
    return cfg


def _score(x: torch.Tensor, truth: torch.Tensor, std: float) -> float:
    return float(((x - truth) ** 2).mean() / std**2)


def _fourdvar_window(model: Lorenz96, clim, y: torch.Tensor, obs: list, cfg: FourDVarNetConfig) -> torch.Tensor:
    """Weak-constraint FourDVar reconstruction (T, n) of one window, analysed as consecutive sub-windows.

    A single Gauss-Newton 4D-Var over all 200 steps from the interpolated background does not
    converge (chaotic over 10 time units; MSE/std^2 ~ 2 measured), so the window is analysed
    as ``fourdvar_sub`` observation times at a time, each sub-window's background the previous
    one's analysed trajectory propagated by the model (the first: the interpolation at the
    window start): 4D-Var cycling with lag = shift = fourdvar_sub, inside the window only.
    """
    mean, std = float(clim[0].mean()), float(clim[1].diagonal().mean().sqrt())
    z, m = normalise(y, mean, std)
    xb = mean + std * interpolate_window(z, m)[0, 0]
    sub, e = cfg.fourdvar_sub, cfg.every
    out = []
    for s0 in range(0, len(obs), sub):
        part = obs[s0 : s0 + sub]
        method = FourDVar(clim, xB=1.0 if s0 == 0 else cfg.fourdvar_xb, Q=cfg.fourdvar_q, max_outer=5, max_inner=100)
        steps = [e * (i + 1) - 1 for i in range(len(part))]
        win = Window(model, xb, 0.0, part, steps, steps[-1], e)
        x0 = method.analyse_window(win, None)
        forcing = method._forcing[1] if method._forcing is not None else None
        with torch.no_grad():
            traj = replace(win, obs_steps=list(range(e * len(part)))).trajectory(x0, forcing)
            xb = model.step(traj[-1])
        out += traj
    return torch.stack(out)


def run(
    out: Path,
    *,
    seed: int = 1,
    quick: bool = False,
    overrides: list[str] | None = None,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
    cache: dict | None = None,
) -> dict[str, Any]:
    """Train, save ``out/analysis.pt``, score on the test windows, cycle; write ``out/summary.json`` and plots.

    ``cache``: a dict shared by several runs (the benchmark's ODE and CNN runs of one seed)
    that keeps the prior-independent baselines computed for a seed and test config.
    """
    cfg = make_config(quick, list(overrides or []))
    say = progress or (lambda _msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(out, cfg, seed, quick, resume, say, {} if cache is None else cache)
    finally:
        torch.set_num_threads(threads)


def _data(cfg: FourDVarNetConfig, seed: int):
    model = Lorenz96(n=40, F=8.0, dt=0.05)
    gen = torch.Generator().manual_seed(seed)
    x0 = model.initial_state() + 0.1 * torch.randn(40, generator=gen, dtype=torch.float64)
    train = make_windows(model, x0, cfg.train_windows, cfg.window, spinup=500)
    val = make_windows(model, train[-1, -1], cfg.val_windows, cfg.window, spinup=200)
    n_test = cfg.test_windows * cfg.window
    full = make_windows(model, val[-1, -1], 1, n_test + 1, spinup=200)[0]  # step 0 = cycle 0
    net = RandomSubsetObs(40, cfg.frac, std=math.sqrt(cfg.sigma2), every=cfg.every)
    obs = [net.observe(full[cfg.every * k], k, gen) for k in range(1, n_test // cfg.every + 1)]
    grid = torch.full((n_test, 40), math.nan, dtype=torch.float64)
    for k, o in enumerate(obs, start=1):
        grid[cfg.every * k - 1] = observation_row(o, 40)
    return model, train, val, full, obs, grid


#: config fields the prior-independent baselines depend on (with the seed)
BASELINE_FIELDS = (
    "window", "every", "frac", "sigma2", "train_windows", "val_windows", "test_windows", "gd_iter", "gd_step",
    "gd_lam_prior", "fourdvar_windows", "fourdvar_q", "fourdvar_sub", "fourdvar_xb", "cycles", "burn_in", "cycle_lag",
)


def _baselines(cfg, model, full, obs, y_test, test, mean, std, say) -> dict[str, Any]:
    """Interpolation, gradient-descent 4D-Var (true L96) and weak FourDVar on the test windows; cycled FourDVar."""
    test_std = float(test.std())
    W = y_test.shape[0]
    z, m = normalise(y_test, mean, std)
    x_interp = mean + std * interpolate_window(z, m)
    true_prior = ODEPrior(mean=mean, std=std).double()
    true_prior.load_state_dict(l96_ode_coefficients(true_prior))
    say(f"gradient-descent 4D-Var ({cfg.gd_iter} steps) on the test windows")
    t0 = time.perf_counter()
    x_gd = gradient_descent_4dvar(true_prior, y_test, mean, std, 1.0, cfg.gd_lam_prior, cfg.gd_iter, cfg.gd_step)
    gd_s = time.perf_counter() - t0
    window_scores = {"interpolation": _score(x_interp, test, test_std), "gd_4dvar_true_model": _score(x_gd, test, test_std)}
    clim = climatology(model, full[0], 20000, spinup=500)
    fourdvar_part: dict[str, float] = {}
    if cfg.fourdvar_windows:
        k = min(cfg.fourdvar_windows, W)
        say(f"weak-constraint FourDVar on {k} test window(s)")
        per = cfg.window // cfg.every
        x_4d = torch.stack([
            _fourdvar_window(model, clim, y_test[j : j + 1], obs[j * per : (j + 1) * per], cfg) for j in range(k)
        ])
        fourdvar_part = {
            "windows": float(k),
            "fourdvar_weak": _score(x_4d, test[:k], test_std),
            "gd_4dvar_true_model": _score(x_gd[:k], test[:k], test_std),
            "interpolation": _score(x_interp[:k], test[:k], test_std),
        }
    say("cycling weak-constraint FourDVar over the test observations")
    truth = full[:: cfg.every][: cfg.cycles + 1]
    meth = FourDVar(clim, xB=cfg.fourdvar_xb, lag=cfg.cycle_lag, shift=1, Q=cfg.fourdvar_q)
    state = meth.initial_state(clim[0], 1.0)
    rmse = [rec.rmse_a for rec, _ in run_cycle(model, meth, state, truth, obs[: cfg.cycles], cfg.every, probabilistic_scores=False)]
    return {
        "window_scores": window_scores, "fourdvar_part": fourdvar_part, "clim": clim, "gd_s": gd_s,
        "curves": {"fourdvar_weak": rmse}, "cycled": {"fourdvar_weak": float(torch.tensor(rmse[cfg.burn_in :]).mean())},
    }


def _run(out: Path, cfg: FourDVarNetConfig, seed: int, quick: bool, resume: bool, say, cache: dict) -> dict[str, Any]:
    model, train, val, full, obs, grid = _data(cfg, seed)
    mean, std = float(train.mean()), float(train.std())
    W, T = cfg.test_windows, cfg.window
    test = full[1:].reshape(W, T, 40)
    y_test = grid.reshape(W, T, 40)
    test_std = float(test.std())

    prior_config = (
        {"mean": mean, "std": std, "init": cfg.ode_init, "seed": seed}
        if cfg.prior == "ode"
        else {"channels": cfg.cnn_channels, "seed": seed}
    )
    solver = FourDVarNetSolver(cfg.prior, prior_config, hidden=cfg.hidden, kernel=cfg.kernel, n_iter=cfg.n_iter, seed=seed)
    ckpt_path = out / "train_checkpoint.pt"
    cfg_dump = cfg.model_dump()
    result, opt_state, best_state = None, None, None
    gen = torch.Generator().manual_seed(seed + 1)
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck.get("config") != cfg_dump or ck.get("seed") != seed:
            raise ConfigError(f"{ckpt_path}: written for another config or seed; run without --resume or use a fresh --out")
        solver.load_state_dict(ck["solver"])
        result, opt_state, best_state = FitResult4DVarNet(**ck["result"]), ck["optimizer"], ck["best"]
        gen.set_state(ck["generator"])
        say(f"resuming 4DVarNet training at step {result.steps_done}")

    def on_eval(res: FitResult4DVarNet, best: dict, opt: dict) -> None:
        atomic_torch_save(
            {"config": cfg_dump, "seed": seed, "solver": solver.state_dict(), "best": best, "optimizer": opt,
             "result": asdict(res), "generator": gen.get_state()},
            ckpt_path,
        )
        say(f"step {res.steps_done}: validation MSE/std^2 {res.val_score[-1]:.4f} (best {res.best_score:.4f})")

    say(f"training 4DVarNet ({cfg.prior} prior) on {cfg.train_windows} windows")
    fit = fit_fourdvarnet(
        solver, train.float(), val.float(), mean=mean, std=std, every=cfg.every, frac=cfg.frac,
        sigma=math.sqrt(cfg.sigma2), steps=cfg.steps, batch=cfg.batch, crop=cfg.crop, lr=cfg.lr,
        prior_weight=cfg.prior_weight, prior_steps=cfg.prior_steps, eval_every=cfg.eval_every, patience=cfg.patience,
        schedule=cfg.schedule,
        max_seconds=60.0 * cfg.max_minutes, generator=gen, progress=False, result=result,
        optimizer_state=opt_state, best_state=best_state, on_eval=on_eval,
    )
    method = FourDVarNet(solver, n=40, p=obs[0].p, every=cfg.every, mean=mean, std=std, window=cfg.cycle_window)
    save_learned_analysis(method, out / "analysis.pt")

    say("scoring the test windows")
    t0 = time.perf_counter()
    x_net = reconstruct(solver, y_test.float(), mean, std).double()
    net_s = time.perf_counter() - t0
    score = _score(x_net, test, test_std)
    key = (seed, *(getattr(cfg, f) for f in BASELINE_FIELDS))
    if key not in cache:
        cache[key] = _baselines(cfg, model, full, obs, y_test, test, mean, std, say)
    base = cache[key]
    window_scores = base["window_scores"]
    fourdvar_part = dict(base["fourdvar_part"])
    if fourdvar_part:
        fourdvar_part["4dvarnet"] = _score(x_net[: int(fourdvar_part["windows"])], test[: int(fourdvar_part["windows"])], test_std)

    say("cycling 4DVarNet over the test observations")
    truth = full[:: cfg.every][: cfg.cycles + 1]
    state = method.initial_state(base["clim"][0], 1.0)
    rmse = [rec.rmse_a for rec, _ in run_cycle(model, method, state, truth, obs[: cfg.cycles], cfg.every, probabilistic_scores=False)]
    curves = {"4dvarnet": rmse, **base["curves"]}
    cycled = {"4dvarnet": float(torch.tensor(rmse[cfg.burn_in :]).mean()), **base["cycled"]}
    gd_s = base["gd_s"]

    bar = (QUICK_BARS if quick else BARS)[cfg.prior]
    gd = window_scores["gd_4dvar_true_model"]
    met = score <= bar and (cfg.prior != "ode" or quick or score <= gd / 3.0)
    summary = {
        "method": "4dvarnet",
        "prior": cfg.prior,
        "rmse": cycled["4dvarnet"],
        "baselines": {k: v for k, v in cycled.items() if k != "4dvarnet"},
        "window_score": score,
        "window_baselines": window_scores,
        "window_score_std": test_std,
        "fourdvar_windows": fourdvar_part,
        "train_s": fit.wall_s,
        "train_steps": fit.steps_done,
        "best_step": fit.best_step,
        "stopped_early": fit.stopped_early,
        "val_best": fit.best_score,
        "reconstruct_s_per_window": net_s / W,
        "gd_s": gd_s,
        "bar": bar,
        "bar_rule": "window_score <= bar" + (" and <= gd_4dvar_true_model / 3" if cfg.prior == "ode" and not quick else ""),
        "met": bool(met),
        "quick": quick,
        "seed": seed,
        "config": cfg.model_dump(),
    }
    write_json(out / "summary.json", summary)
    _plots(out, fit, curves, cfg)
    return summary


def _plots(out: Path, fit: FitResult4DVarNet, curves: dict[str, list[float]], cfg: FourDVarNetConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.semilogy(range(1, len(fit.train_loss) + 1), fit.train_loss, lw=0.6, alpha=0.6, label="train (crops, MSE/std^2)")
    ax.semilogy(fit.val_steps, fit.val_score, "o-", label="validation windows")
    ax.set_xlabel("step")
    ax.set_ylabel("normalised error")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "training.png")
    plot_rmse_series(curves, out / "rmse.png", cfg.burn_in, window=1)
