"""``hybrida learn analysis aivar``: AI-Var trained on the 3D-Var cost, cycled against the iterative 3D-Var.

Keller & Potthast (2024, arXiv:2406.00390). Lorenz-96 n=40, F=8, dt 0.05,
observed every step (sakov2008: all variables, R = I; or ``obs=radiance``:
the nonlinear :class:`~hybrida.observations.networks.RadianceObs`). B = xB x
the climatological covariance of a free run, exactly the B of our iterative
:class:`~hybrida.assimilation.variational.threedvar.ThreeDVar` (tuned xB 0.02).

Training cases (x_b, y): the backgrounds of the iterative 3D-Var cycled over
the first ``seed_cycles`` of the training stretch (and the validation
stretch), then ``refine_rounds`` times the backgrounds of the AI-Var itself
cycled over the whole training stretch added and the network refitted. The
loss is the mean 3D-Var cost of the network's analyses (no truth, no
analyses as targets), with random observation masks. The test stretch (never
used in training) is cycled by the AI-Var and the baselines from the same
initial state; score = time-mean analysis rmse after ``burn_in`` cycles.

``krylov=k`` feeds the network the first k Krylov vectors of the Gauss-Newton
problem at the background (k = 1: the cost's steepest-descent direction
B^1/2 H'(x_b)^T R^-1 d; :func:`~hybrida.assimilation.learned.aivar.krylov_vectors`);
``schedule=cosine`` anneals each fit's learning rate to 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from hybrida.assimilation.base import AssimilationMethod
from hybrida.assimilation.ensemble.etkf import ETKF
from hybrida.assimilation.learned import save_learned_analysis
from hybrida.assimilation.learned.aivar import AIVar, AIVarNet, error_covariance
from hybrida.assimilation.variational.threedvar import ThreeDVar
from hybrida.cycle import FilterDiverged, run_cycle
from hybrida.experiment.builder import derive_seeds
from hybrida.experiment.config import ConfigError, _Strict
from hybrida.experiment.learned_analysis import pipeline_config, write_json
from hybrida.experiment.twin import Twin, climatology, make_twin
from hybrida.io.checkpoint import atomic_torch_save
from hybrida.learn.aivar import fit_aivar
from hybrida.models.lorenz96 import Lorenz96
from hybrida.nn.common import seeded
from hybrida.observations.networks import IdentityObs, RadianceObs
from hybrida.plots import plot_rmse_series, save_figure

DESCRIPTION = "AI-Var (Keller & Potthast 2024): a network trained on the 3D-Var cost; L96 sakov2008 vs iterative 3D-Var"
OBS = ("identity", "radiance")


class AIVarConfig(_Strict):
    """Everything the AI-Var pipeline does; every field has a default (the headline run)."""

    obs: str = Field("identity", description="observations: identity (sakov2008, all observed) or radiance")
    obs_std: float = Field(1.0, gt=0, description="observation-error std")
    radiance_width: float = Field(0.5, gt=0, description="radiance channel width (grid points)")
    radiance_scale: float = Field(10.0, gt=0, description="radiance tanh scale")
    xB: float = Field(0.02, gt=0, description="3D-Var background scaling of the climatological B (TUNED sakov2008)")
    clim_steps: int = Field(20000, ge=100, description="model steps of the free run giving the climatological B")
    threedvar_tol: float = Field(1e-10, gt=0, description="relative gradient tolerance of the iterative 3D-Var")
    threedvar_max_outer: int = Field(10, ge=1, description="Gauss-Newton outer loops of the iterative 3D-Var")
    spinup: int = Field(500, ge=0, description="model steps of the nature run dropped before the training stretch")
    train_cycles: int = Field(6000, ge=100, description="cycles of the training stretch")
    seed_cycles: int = Field(6000, ge=50, description="training cycles whose backgrounds come from the 3D-Var cycle")
    valid_cycles: int = Field(1000, ge=50, description="cycles of the validation stretch")
    test_cycles: int = Field(3000, ge=50, description="cycles of the test stretch")
    burn_in: int = Field(400, ge=0, description="cycles dropped from each cycled stretch and from the test score")
    cycle_burn_in: int = Field(50, ge=0, description="cycles dropped from the training/validation backgrounds")
    test_initial_std: float = Field(1.0, gt=0, description="std of the initial error of every cycled test method")
    hidden: int = Field(128, ge=1, description="MLP width")
    depth: int = Field(2, ge=1, description="MLP hidden layers")
    activation: str = Field("tanh", description="MLP activation: tanh, gelu, silu")
    krylov: int = Field(0, ge=0, description="Krylov vectors of the Gauss-Newton problem at x_b fed to the net "
                        "(1: the cost's descent direction B^1/2 H'^T R^-1 d; 0: none)")
    epochs: int = Field(80, ge=1, description="epochs of the first fit")
    refine_rounds: int = Field(1, ge=0, description="rounds of cycling the AI-Var on the training stretch and refitting")
    refine_epochs: int = Field(40, ge=1, description="epochs of each refit")
    batch_size: int = Field(256, ge=1, description="minibatch size")
    lr: float = Field(1e-3, ge=0, description="Adam learning rate (start of each fit; see schedule)")
    patience: int = Field(15, ge=1, description="epochs without validation improvement before a fit stops")
    schedule: str = Field("plateau", description="learning rate: plateau (halved on plateaus) or cosine (annealed)")
    full_fraction: float = Field(0.5, ge=0, le=1, description="fraction of training cases keeping all observations")
    drop_max: float = Field(0.5, ge=0, lt=1, description="largest random drop-out rate of the other cases")
    time_limit_s: float = Field(360.0, gt=0, description="wall-clock budget of all fits together (s)")
    bar_ratio: float = Field(1.05, gt=0, description="met when rmse <= bar_ratio x rmse of the iterative 3D-Var")
    baselines: list[str] = Field(default_factory=lambda: ["3dvar"], description="baselines: 3dvar, etkf")
    threads: int = Field(1, ge=1, description="torch threads")


#: fields that decide the twin, B, the 3D-Var training backgrounds and the baselines' test scores
DATA_FIELDS = ("obs", "obs_std", "radiance_width", "radiance_scale", "xB", "clim_steps", "threedvar_tol",
               "threedvar_max_outer", "spinup", "train_cycles", "seed_cycles", "valid_cycles", "test_cycles",
               "burn_in", "test_initial_std", "threads")

QUICK: dict[str, Any] = {
    "train_cycles": 1500, "seed_cycles": 1500, "valid_cycles": 300, "test_cycles": 800, "burn_in": 200,
    "clim_steps": 5000, "epochs": 25, "refine_rounds": 0, "hidden": 128, "patience": 8, "bar_ratio": 1.10,
    "time_limit_s": 120.0,
}


def make_config(quick: bool, overrides: list[str]) -> AIVarConfig:
    """The (quick) config with ``--set`` overrides applied, or a ConfigError naming the field."""
    cfg = pipeline_config(AIVarConfig, QUICK, quick, overrides)
    if cfg.obs not in OBS:
        raise ConfigError(f"obs: {cfg.obs!r} not allowed; choose one of {list(OBS)}")
    if cfg.schedule not in ("plateau", "cosine"):
        raise ConfigError(f"schedule: {cfg.schedule!r} not allowed; choose one of plateau, cosine")
    if cfg.activation not in ("tanh", "gelu", "silu"):
        raise ConfigError(f"activation: {cfg.activation!r} not allowed; choose one of tanh, gelu, silu")
    bad = sorted(set(cfg.baselines) - {"3dvar", "etkf"})
    if bad:
        raise ConfigError(f"baselines: {bad} not allowed; choose among ['3dvar', 'etkf']")
    if cfg.seed_cycles > cfg.train_cycles:
        raise ConfigError(f"seed_cycles: {cfg.seed_cycles} must be <= train_cycles {cfg.train_cycles}")
    for name, length in (("seed_cycles", cfg.seed_cycles), ("valid_cycles", cfg.valid_cycles)):
        if length <= cfg.cycle_burn_in:
            raise ConfigError(f"{name}: {length} must be > cycle_burn_in {cfg.cycle_burn_in}")
    if cfg.burn_in >= cfg.test_cycles:
        raise ConfigError(f"burn_in: {cfg.burn_in} must be < test_cycles {cfg.test_cycles}")
    return cfg


def obs_system(cfg: AIVarConfig):
    """The observation network of ``cfg`` (n = 40, every step)."""
    if cfg.obs == "radiance":
        return RadianceObs(40, 40, cfg.radiance_width, "tanh", scale=cfg.radiance_scale, std=cfg.obs_std)
    return IdentityObs(40, std=cfg.obs_std)


def make_data(cfg: AIVarConfig, seed: int) -> dict[str, Any]:
    """Model, climatology, and the training / validation / test twins (consecutive, disjoint stretches)."""
    seeds = derive_seeds(seed)
    gen = torch.Generator().manual_seed(seeds["truth"])
    model = Lorenz96(40, 8.0, 0.05)
    system = obs_system(cfg)
    x0 = model.initial_state() + 0.01 * torch.randn(40, generator=gen, dtype=torch.float64)
    x0 = model.forecast(x0, cfg.spinup) if cfg.spinup else x0
    clim = climatology(model, model.initial_state(), cfg.clim_steps, spinup=1000)
    train = make_twin(model, system, x0, cfg.train_cycles, gen)
    valid = make_twin(model, system, train.truth[-1], cfg.valid_cycles, gen)
    test = make_twin(model, system, valid.truth[-1], cfg.test_cycles, gen)
    return {"model": model, "clim": clim, "train": train, "valid": valid, "test": test}


def threedvar(cfg: AIVarConfig, clim: tuple[torch.Tensor, torch.Tensor]) -> ThreeDVar:
    """The iterative 3D-Var with the B the AI-Var is trained with."""
    return ThreeDVar(clim, xB=cfg.xB, tol=cfg.threedvar_tol, max_outer=cfg.threedvar_max_outer)


def cycle(
    method: AssimilationMethod, model: Lorenz96, twin: Twin, n: int, x0: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, list[float]]:
    """Cycle ``method`` over the first ``n`` cycles of ``twin`` from ``x0``: background means (n, 40) and rmse_a.

    After a divergence the backgrounds stop and the rmse is NaN.
    """
    priors, rmse = [], []
    obs = twin.observations[:n]
    try:
        with torch.no_grad():
            for rec, _ in run_cycle(model, method, x0.clone(), twin.truth[: n + 1], obs, 1, generator=gen,
                                    probabilistic_scores=False):
                priors.append(rec.prior_mean)
                rmse.append(rec.rmse_a)
    except FilterDiverged:
        pass
    rmse += [math.nan] * (n - len(rmse))
    return (torch.stack(priors) if priors else torch.zeros(0, 40, dtype=torch.float64)), rmse


def _y(twin: Twin, n: int | None = None) -> torch.Tensor:
    return torch.stack([o.y for o in twin.observations[:n]])


def _start(twin: Twin, std: float, gen: torch.Generator) -> torch.Tensor:
    return twin.truth[0] + std * torch.randn(40, generator=gen, dtype=torch.float64)


def _cases(cfg: AIVarConfig, xb: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the cycle's spin-up and any cycle after a divergence."""
    b = cfg.cycle_burn_in
    k = xb.shape[0]
    return xb[b:k], y[b:k]


def _fit(cfg: AIVarConfig, net: AIVarNet, data: dict, train: tuple, valid: tuple, epochs: int, first: bool,
         gen: torch.Generator, progress: bool, budget: float) -> dict:
    obs0 = data["train"].observations[0]
    R = error_covariance(obs0.error)
    B = cfg.xB * data["clim"][1]
    res = fit_aivar(net, *train, operator=obs0.operator, B=B, R=R, valid=valid, full_fraction=cfg.full_fraction,
                    drop_max=cfg.drop_max, epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                    patience=cfg.patience, schedule=cfg.schedule, time_limit=budget, normalise=first, generator=gen,
                    progress=progress)
    return {"train": res.history["train"], "valid": res.history["valid"], "best_epoch": res.best_epoch,
            "stopped": res.stopped, "wall_s": res.wall_s, "epochs": res.epochs_run}


def _plots(out: Path, fits: list[dict], series: dict[str, list[float]], burn_in: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    start = 0
    for r, f in enumerate(fits):
        ep = range(start, start + len(f["train"]))
        ax.plot(ep, f["train"], color="C0", label="train" if r == 0 else None)
        ax.plot(ep, f["valid"], "--", color="C1", label="validation" if r == 0 else None)
        start += len(f["train"])
        ax.axvline(start - 0.5, color="gray", lw=0.4)
    ax.set_xlabel("epoch (all fits; gray: refit with AI-Var backgrounds)")
    ax.set_ylabel("mean 3D-Var cost J of the analyses")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
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
    """Make the twin, train the AI-Var, save ``out/analysis.pt``, score it against 3D-Var; write summary.json.

    ``resume=True`` reuses the 3D-Var training backgrounds and every finished
    fit from ``out/checkpoint.pt`` (written after the backgrounds and after each fit).
    """
    cfg = make_config(quick, list(overrides or []))
    say = progress or (lambda _msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, out, seed, quick, resume, say, progress is not None)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: AIVarConfig, out: Path, seed: int, quick: bool, resume: bool, say: Callable[[str], None],
         bars: bool) -> dict[str, Any]:
    ckpt_path = out / "checkpoint.pt"
    key = {"config": cfg.model_dump(), "seed": seed}
    data_key = {"config": {k: v for k, v in key["config"].items() if k in DATA_FIELDS}, "seed": seed}
    ckpt: dict[str, Any] = {}
    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt.get("data_key") != data_key:
            raise ConfigError(f"{ckpt_path}: written for other data (twin, B, 3D-Var) or seed; run without --resume")
        if ckpt.get("key") != key:  # same data, other training settings: keep the 3D-Var cycles, refit
            say("resuming with other training settings: reusing the 3D-Var backgrounds and baselines, refitting")
            ckpt.update(key=key, fits=[], net=None)
        say(f"resuming from {ckpt_path}: {len(ckpt.get('fits', []))} fit(s) done")
    seeds = derive_seeds(seed)
    gen_init = torch.Generator().manual_seed(seeds["initial"])
    gen_da = torch.Generator().manual_seed(seeds["analysis"])
    gen_fit = torch.Generator().manual_seed(seeds["torch_global"])
    data = make_data(cfg, seed)  # deterministic: rebuilt on resume, cheap next to the 3D-Var cycles
    model, tr, va = data["model"], data["train"], data["valid"]
    x_tr, x_va = _start(tr, cfg.test_initial_std, gen_init), _start(va, cfg.test_initial_std, gen_init)
    t0 = time.perf_counter()
    if "seed_xb" not in ckpt:
        say(f"cycling the iterative 3D-Var over {cfg.seed_cycles} training and {cfg.valid_cycles} validation cycles ...")
        m3 = threedvar(cfg, data["clim"])
        xb_tr, r_tr = cycle(m3, model, tr, cfg.seed_cycles, x_tr, gen_da)
        xb_va, _ = cycle(m3, model, va, cfg.valid_cycles, x_va, gen_da)
        ckpt = {"key": key, "data_key": data_key, "seed_xb": (xb_tr, xb_va), "fits": [], "net": None,
                "baselines": {}, "data_s": time.perf_counter() - t0,
                "threedvar_train_rmse": float(torch.tensor(r_tr[cfg.cycle_burn_in :]).mean())}
        atomic_torch_save(ckpt, ckpt_path)
    xb_tr, xb_va = ckpt["seed_xb"]
    say(f"3D-Var training-background rmse_a {ckpt['threedvar_train_rmse']:.3f}")
    train = _cases(cfg, xb_tr, _y(tr, cfg.seed_cycles))
    valid = _cases(cfg, xb_va, _y(va))
    with seeded(seeds["torch_global"]):  # the layers' initial weights: the same seed, the same network
        net = AIVarNet(40, 40, hidden=cfg.hidden, depth=cfg.depth, activation=cfg.activation,
                       krylov=cfg.krylov).double()
    if ckpt["net"] is not None:
        net.load_state_dict(ckpt["net"])
    for r in range(len(ckpt["fits"]), cfg.refine_rounds + 1):
        if r > 0:  # the AI-Var's own cycled backgrounds join the training cases
            say(f"round {r}: cycling the AI-Var over {cfg.train_cycles} training cycles ...")
            ai = AIVar(net)
            own_tr, _ = cycle(ai, model, tr, cfg.train_cycles, x_tr, gen_da)
            own_va, _ = cycle(ai, model, va, cfg.valid_cycles, x_va, gen_da)
            own_tr, y_tr = _cases(cfg, own_tr, _y(tr, own_tr.shape[0]))
            own_va, y_va = _cases(cfg, own_va, _y(va, own_va.shape[0]))
            train = (torch.cat((train[0], own_tr)), torch.cat((train[1], y_tr)))
            valid = (own_va, y_va)
        say(f"fit {r}: {train[0].shape[0]} training cases ...")
        budget = max(cfg.time_limit_s - sum(f["wall_s"] for f in ckpt["fits"]), 5.0)
        fit = _fit(cfg, net, data, train, valid, cfg.epochs if r == 0 else cfg.refine_epochs, r == 0, gen_fit, bars,
                   budget)
        ckpt["fits"].append(fit)
        ckpt["net"] = {k: v.clone() for k, v in net.state_dict().items()}
        atomic_torch_save(ckpt, ckpt_path)
    train_s = sum(f["wall_s"] for f in ckpt["fits"])
    info = {"xB": cfg.xB, "obs": cfg.obs, "obs_std": cfg.obs_std, "seed": seed, "train_s": train_s,
            "paper": "Keller & Potthast 2024, arXiv:2406.00390"}
    method = AIVar(net, info=info)
    save_learned_analysis(method, out / "analysis.pt")
    say("cycling the AI-Var and the baselines on the test stretch ...")
    methods: dict[str, AssimilationMethod] = {"aivar": method}
    if "3dvar" in cfg.baselines:
        methods["3dvar"] = threedvar(cfg, data["clim"])
    if "etkf" in cfg.baselines:
        methods["etkf"] = ETKF(N=28, infl=1.02)
    te = data["test"]
    x_te = _start(te, cfg.test_initial_std, gen_init)
    series, rmse, s_per_cycle = {}, {}, {}
    for name, m in methods.items():
        if name in ckpt["baselines"]:  # a baseline does not change with the training settings
            series[name], s_per_cycle[name] = ckpt["baselines"][name]
        else:
            g = torch.Generator().manual_seed(seeds["analysis"])
            x = m.initial_state(x_te, cfg.test_initial_std, generator=g)
            t1 = time.perf_counter()
            _, series[name] = cycle(m, model, te, cfg.test_cycles, x, g)
            s_per_cycle[name] = (time.perf_counter() - t1) / cfg.test_cycles
            if name != "aivar":
                ckpt["baselines"][name] = (series[name], s_per_cycle[name])
                atomic_torch_save(ckpt, ckpt_path)
        tail = torch.tensor(series[name][cfg.burn_in :])
        rmse[name] = float(tail.mean()) if bool(torch.isfinite(tail).all()) else math.inf
    ref = rmse.get("3dvar", math.nan)
    bar = cfg.bar_ratio * ref
    summary: dict[str, Any] = {
        "method": "aivar",
        "quick": quick,
        "seed": seed,
        "config": cfg.model_dump(),
        "rmse": rmse["aivar"],
        "baselines": {k: v for k, v in rmse.items() if k != "aivar"},
        "ratio_to_3dvar": rmse["aivar"] / ref if math.isfinite(ref) else math.nan,
        "bar": bar,
        "bar_ratio": cfg.bar_ratio,
        "met": bool(rmse["aivar"] <= bar),
        "train_s": train_s,
        "data_s": ckpt.get("data_s", math.nan),
        "threedvar_train_rmse": ckpt["threedvar_train_rmse"],
        "s_per_cycle": s_per_cycle,
        "fits": [{k: f[k] for k in ("best_epoch", "stopped", "wall_s", "epochs")} for f in ckpt["fits"]],
        "best_valid_cost": [min(f["valid"]) for f in ckpt["fits"]],
    }
    write_json(out / "summary.json", summary)
    _plots(out, ckpt["fits"], series, cfg.burn_in)
    say(f"test rmse_a: {', '.join(f'{k} {v:.4f}' for k, v in rmse.items())}; bar {bar:.4f} met={summary['met']}")
    return summary

