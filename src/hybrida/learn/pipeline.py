"""The DA–ML pipeline: twin → training archive → surrogate → diagnostics and DA with the surrogate.

One config (:class:`SurrogateExperimentConfig`) describes the whole
experiment of Brajard et al. (2020): a twin (truth and sparse noisy
observations), a training archive taken from the truth (upper bound), from a
classical reanalysis with the true model, or from the iterative DA–ML loop
that never sees the physical model; a network trained on it; and an
evaluation on a later, independent test period: forecast valid time (also in
Lyapunov times), leading Lyapunov exponent, spatial power spectrum, tangent-
linear/adjoint checks, and the analysis RMSE of the same DA method run with
the surrogate and with the true model on the same new observations.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from hybrida import metrics, registry
from hybrida.experiment.builder import build, build_model, check_params, instantiate, resolve
from hybrida.experiment.config import (
    ConfigError,
    ExperimentConfig,
    MethodConfig,
    _Strict,
    apply_overrides,
    deep_merge,
    format_validation_error,
    read_source,
    validate_config,
)
from hybrida.experiment.runner import torch_threads
from hybrida.io.atomic import atomic_write
from hybrida.io.results import write_summary
from hybrida.learn import diagnostics as dg
from hybrida.learn.loop import assimilate, da_ml_loop, interpolate_observations
from hybrida.learn.persist import save_surrogate
from hybrida.learn.surrogate import NETWORKS, SCHEMES, SurrogateModel
from hybrida.learn.train import LR_SCHEDULES, fit

#: the twin of Brajard et al. (2020): L96 n=40, half the grid observed at random each step, sigma_o = 1
DEFAULT_EXPERIMENT: dict[str, Any] = {
    "name": "l96-random-subset",
    "seed": 3000,
    "model": {"name": "lorenz96", "params": {"n": 40, "F": 8.0, "dt": 0.05}},
    "observations": {"name": "random_subset", "params": {"p": 0.5, "std": 1.0}, "every": 1},
    "method": {"name": "etkf", "params": {"N": 20, "adaptive": True}},
    "burn_in": 2.5,
    "initial": {"std": 1.0, "center": "truth"},
}


class NetworkConfig(_Strict):
    """Which network learns the dynamics, and how it is turned into a model step."""

    name: str = Field(
        "BrajardCNN", description="network class registered in hybrida.learn.NETWORKS"
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="constructor keyword arguments (seed and n are filled in when accepted)",
    )
    scheme: str = Field("rk4", description="rk4 / euler: learn the tendency; increment: x + f(x)")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in NETWORKS:
            raise ValueError(
                f"network.name: unknown network '{v}'; choose one of: {', '.join(sorted(NETWORKS))}"
            )
        return v

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if v not in SCHEMES:
            raise ValueError(
                f"network.scheme: unknown scheme '{v}'; choose one of: {', '.join(SCHEMES)}"
            )
        return v


class TrainingConfig(_Strict):
    """The training archive's length and the optimiser (Adam, rollout loss, early stopping)."""

    train_cycles: int = Field(4000, ge=20, description="analysis cycles of the training period")
    valid_fraction: float = Field(0.2, gt=0, lt=1, description="last share of the archive held out")
    epochs: int = Field(30, ge=1, description="maximum epochs per fit")
    rollout: int = Field(1, ge=1, description="steps of the rollout loss")
    batch_size: int = Field(128, ge=1, description="mini-batch size")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    lr_schedule: str = Field("plateau", description=f"one of {', '.join(LR_SCHEDULES)}")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")
    patience: int = Field(
        5, ge=1, description="epochs without validation improvement before stopping"
    )
    time_limit_s: float | None = Field(None, gt=0, description="stop a fit after this many seconds")
    seed: int = Field(0, ge=0, description="network initialisation, shuffling and DA seeds")

    @field_validator("lr_schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        if v not in LR_SCHEDULES:
            raise ValueError(
                f"training.lr_schedule: unknown schedule '{v}'; choose one of: {', '.join(LR_SCHEDULES)}"
            )
        return v


class LoopConfig(_Strict):
    """The iterative DA–ML scheme (source "loop"), after Brajard et al. (2020)."""

    max_iterations: int = Field(4, ge=1, description="DA–ML iterations at most")
    patience: int = Field(
        1, ge=1, description="iterations without a better observation score before stopping"
    )
    initial_std: float = Field(1.0, gt=0, description="std of the initial ensemble of each DA run")
    score_lead: int = Field(
        4, ge=1, description="forecast lead (cycles) of the truth-free observation score"
    )
    method: MethodConfig | None = Field(
        None, description="DA method run with the surrogate (default: experiment.method)"
    )


class EvaluationConfig(_Strict):
    """Diagnostics on a test period after the training period (new truth, new observations)."""

    test_cycles: int = Field(1000, ge=10, description="analysis cycles of the test period")
    burn_in_cycles: int = Field(50, ge=0, description="test cycles excluded from the DA scores")
    initial_std: float = Field(
        1.0, gt=0, description="std of the initial ensemble of the test DA runs"
    )
    lead: float = Field(4.0, gt=0, description="forecast lead (model time) of the valid-time curve")
    n_starts: int = Field(
        50, ge=1, description="forecast starts (test truth states) for the valid time"
    )
    threshold: float = Field(
        0.5,
        gt=0,
        description="normalised-RMSE threshold of the valid time (Brajard 2020's exact value is "
        "not confirmed; 0.5 of the climatological std is our convention)",
    )
    reference_perturbation: float = Field(
        0.2,
        ge=0,
        description="std of the initial error of the true-model reference forecasts (0: skip)",
    )
    lyapunov_steps: int = Field(
        500,
        ge=10,
        description="surrogate steps of the Lyapunov estimate (the true model runs 4x longer)",
    )
    lyapunov_transient: int = Field(100, ge=0, description="discarded steps before it")
    lyapunov_starts: int = Field(2, ge=1, description="independent trajectories averaged")
    free_run_cycles: int | None = Field(
        None, ge=10, description="free-run length for spectra (default test_cycles)"
    )


class SurrogateExperimentConfig(_Strict):
    """A DA–ML experiment: twin, training source, network, training, loop and evaluation."""

    name: str = Field("surrogate", description="experiment name (output folder)")
    experiment: dict[str, Any] | str = Field(
        default_factory=lambda: copy.deepcopy(DEFAULT_EXPERIMENT),
        description="the twin: an ExperimentConfig dict or a preset name/YAML path (cycles are set here)",
    )
    source: Literal["truth", "reanalysis", "loop"] = Field(
        "reanalysis",
        description="training archive: true trajectory (upper bound), classical DA with the true model, "
        "or the DA–ML loop (no physical model)",
    )
    network: NetworkConfig = Field(default_factory=NetworkConfig, description="network")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="training")
    loop: LoopConfig = Field(default_factory=LoopConfig, description="DA–ML loop (source loop)")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="evaluation")

    @field_validator("experiment")
    @classmethod
    def _resolve(cls, v: dict[str, Any] | str) -> dict[str, Any]:
        try:
            return read_source(v)
        except ConfigError as err:
            raise ValueError(f"experiment: {err}") from None

    @model_validator(mode="after")
    def _semantics(self) -> SurrogateExperimentConfig:
        exp = self.twin_config()  # raises with experiment.* field names
        dt = build_model(exp).dt * exp.observations.every
        lead = round(self.evaluation.lead / dt)
        if lead < 1 or lead + 1 >= self.evaluation.test_cycles:
            raise ValueError(
                f"evaluation.lead: {self.evaluation.lead} is {lead} cycles of {dt:g}; need 1 <= lead "
                f"cycles < test_cycles - 1 = {self.evaluation.test_cycles - 1}"
            )
        if self.evaluation.burn_in_cycles >= self.evaluation.test_cycles:
            raise ValueError("evaluation.burn_in_cycles: must be < evaluation.test_cycles")
        self.make_network(build_model(exp).n)
        return self

    def twin_config(self) -> ExperimentConfig:
        """The ExperimentConfig of the twin, run over the training and test periods."""
        data = dict(self.experiment)  # type: ignore[arg-type]
        data["cycles"] = self.training.train_cycles + self.evaluation.test_cycles
        try:
            return validate_config(data)
        except ConfigError as err:
            # each problem starts with its dotted field name: put it under "experiment."
            raise ValueError(
                re.sub(r"(^|; )([A-Za-z_][\w.]*):", r"\1experiment.\2:", str(err))
            ) from None

    def make_network(self, n: int) -> torch.nn.Module:
        """A fresh network (seeded by ``training.seed`` unless ``network.params.seed`` is set)."""
        cls = NETWORKS[self.network.name]
        params = dict(self.network.params)
        try:
            check_params(cls, params, "network.params")
        except ConfigError as err:
            raise ValueError(str(err)) from None
        accepted = inspect.signature(cls.__init__).parameters
        if "seed" in accepted and "seed" not in params:
            params["seed"] = self.training.seed
        if "n" in accepted and "n" not in params:
            params["n"] = n
        try:
            return cls(**params)
        except (TypeError, ValueError) as err:
            raise ValueError(f"network.params: {cls.__name__}: {err}") from None

    def to_yaml(self) -> str:
        """The config as YAML text."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


#: built-in surrogate experiments (``hybrida learn presets``)
PRESETS: dict[str, dict[str, Any]] = {
    # Brajard, Carrassi, Bocquet & Bertino 2020: L96 n=40, 50% observed at random each step,
    # sigma_o=1, CNN with a bilinear layer in an RK4 step, trained by the DA–ML loop. Their
    # EnKF is stood in for by an ETKF with adaptive inflation; the archive is shorter than theirs.
    "brajard2020": {
        "name": "brajard2020",
        "source": "loop",
        "network": {
            "name": "BrajardCNN",
            "params": {"filters": 24, "hidden": 37, "kernel_size": 5},
        },
        "training": {"train_cycles": 8000, "epochs": 40, "patience": 5, "time_limit_s": 240},
        "loop": {"max_iterations": 6, "patience": 2},
        "evaluation": {"test_cycles": 1000, "lead": 4.0, "n_starts": 50},
    },
    # `hybrida run` without arguments: reanalysis -> surrogate -> DA with it, in a few minutes
    "demo": {
        "name": "demo",
        "source": "reanalysis",
        "training": {"train_cycles": 6000, "epochs": 30, "patience": 4, "time_limit_s": 150},
        "evaluation": {"test_cycles": 1000, "lead": 4.0, "n_starts": 40},
    },
}

DESCRIPTIONS: dict[str, str] = {
    "brajard2020": "L96 n=40, 50% random obs, sigma_o=1; BrajardCNN trained by the DA-ML loop (no physical model)",
    "demo": "L96 n=40, 50% random obs; ETKF reanalysis -> BrajardCNN -> ETKF with the surrogate (3-5 min)",
}


def read_surrogate_source(source: str | Path | dict[str, Any] | None) -> dict[str, Any]:
    """The raw config dict of a surrogate preset name, a YAML path, or a dict (may hold ``preset:``)."""
    if source is None:
        return {}
    if isinstance(source, dict):
        data = copy.deepcopy(source)
    elif str(source) in PRESETS:
        return copy.deepcopy(PRESETS[str(source)])
    else:
        path = Path(str(source))
        if path.suffix not in (".yaml", ".yml", ".json") and not path.exists():
            allowed = ", ".join(sorted(PRESETS))
            raise ConfigError(
                f"unknown surrogate preset '{source}'; choose one of: {allowed} (or a .yaml path)"
            )
        if not path.is_file():
            raise ConfigError(f"config file not found: {source}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(
                f"{source}: invalid YAML{where}: {getattr(err, 'problem', err)}"
            ) from None
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(
                f"{source}: expected a mapping at the top level, got {type(data).__name__}"
            )
    if "preset" in data:
        base = data.pop("preset")
        if str(base) not in PRESETS:
            raise ConfigError(
                f"preset: unknown surrogate preset '{base}'; choose one of: {', '.join(sorted(PRESETS))}"
            )
        data = deep_merge(PRESETS[str(base)], data)
    return data


def load_surrogate_config(
    source: str | Path | dict[str, Any] | None = None, overrides: list[str] | None = None
) -> SurrogateExperimentConfig:
    """Load a preset / YAML path / dict, apply ``KEY=VALUE`` overrides, validate (raises ConfigError)."""
    data = read_surrogate_source(source)
    if overrides:
        if any(o.split("=", 1)[0].strip().startswith("experiment.") for o in overrides):
            if isinstance(data.get("experiment"), str):
                data["experiment"] = read_source(data["experiment"])
            data.setdefault("experiment", copy.deepcopy(DEFAULT_EXPERIMENT))
        data = apply_overrides(data, list(overrides))
    try:
        return SurrogateExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, SurrogateExperimentConfig)) from None


# ---------------------------------------------------------------------------------------------


def _make_method(
    method: MethodConfig, archive: torch.Tensor | Callable[[], torch.Tensor], field: str
) -> Any:
    """A fresh DA method; a climatology it needs is estimated from ``archive`` (no physical model)."""
    cls = resolve(registry.METHODS, method.name, "method")
    params = dict(method.params)
    if getattr(cls, "needs_climatology", False):
        archive = archive() if callable(archive) else archive
        mean = archive.mean(0)
        anom = archive - mean
        params["climatology"] = (mean, anom.T @ anom / (archive.shape[0] - 1))
    return instantiate(cls, params, field)


def _cycle_forecast(model: Any, x0: torch.Tensor, n_cycles: int, every: int) -> torch.Tensor:
    """States (n_cycles + 1, *x0.shape) of ``model`` run ``every`` steps per cycle."""
    xs = [x0]
    with torch.no_grad():
        for _ in range(n_cycles):
            xs.append(model.forecast(xs[-1], every))
    return torch.stack(xs)


def _finite(v: float) -> float:
    return float(v) if math.isfinite(float(v)) else math.nan


def run_surrogate_experiment(
    config: SurrogateExperimentConfig,
    out_dir: str | Path | None = None,
    progress: bool | Callable[[str], None] = False,
    plots: bool = True,
) -> dict[str, Any]:
    """Run the whole DA–ML experiment of ``config``; write surrogate.pt, summary.json, table.md, PNGs.

    ``progress``: a callable receiving one line per stage (also enables the
    training progress bars), or True for bars only. Returns the summary dict
    (also under ``summary.json``); arrays for the plots are not included.
    """
    exp_cfg = config.twin_config()
    with torch_threads(exp_cfg.threads, exp_cfg.model):
        return _run(config, exp_cfg, out_dir, progress, plots)


def _run(config, exp_cfg, out_dir, progress, plots) -> dict[str, Any]:
    say = progress if callable(progress) else (lambda _msg: None)
    bars = bool(progress)
    walls: dict[str, float] = {}
    t_all = time.perf_counter()
    tr, ev = config.training, config.evaluation

    # 1. twin over training + test periods
    t0 = time.perf_counter()
    say("twin: truth and observations")
    exp = build(exp_cfg)
    model, every = exp.model, exp.twin.steps_per_cycle
    truth, obs = exp.twin.truth, exp.twin.observations
    K = tr.train_cycles
    dt_cycle = model.dt * every
    burn = min(round(exp_cfg.burn_in / dt_cycle), K // 2)
    train_truth, train_obs = truth[: K + 1], obs[:K]
    test_truth, test_obs = truth[K:], obs[K:]
    x_start = (
        train_truth[0] if exp_cfg.initial.center == "truth" else model.initial_state(truth.dtype)
    )
    analysis_seed = exp.seeds["analysis"]
    walls["twin"] = time.perf_counter() - t0

    fit_kwargs = {
        "epochs": tr.epochs,
        "rollout": tr.rollout,
        "batch_size": tr.batch_size,
        "lr": tr.lr,
        "lr_schedule": tr.lr_schedule,
        "weight_decay": tr.weight_decay,
        "patience": tr.patience,
        "time_limit_s": tr.time_limit_s,
        "progress": bars,
    }
    summary: dict[str, Any] = {
        "name": config.name,
        "source": config.source,
        "network": config.network.name,
        "scheme": config.network.scheme,
        "seed": exp_cfg.seed,
        "training_seed": tr.seed,
        "method": exp_cfg.method.name,
        "n": model.n,
        "dt_cycle": dt_cycle,
        "train_cycles": K,
        "test_cycles": ev.test_cycles,
    }
    art: dict[str, Any] = {"config": config}

    # 2. training archive and training
    t0 = time.perf_counter()
    loop_method = config.loop.method or exp_cfg.method
    if config.source == "loop":
        say(f"DA-ML loop: up to {config.loop.max_iterations} iterations on {K} cycles")

        def make_surrogate(archive: torch.Tensor) -> SurrogateModel:
            return SurrogateModel.from_trajectory(
                config.make_network(model.n), archive, dt_cycle, config.network.scheme
            )

        # a climatology for methods that need one comes from the observations alone
        def first_guess() -> torch.Tensor:
            return interpolate_observations(train_obs, model.n)

        res = da_ml_loop(
            make_surrogate,
            lambda: _make_method(loop_method, first_guess, "loop.method.params"),
            train_obs,
            model.n,
            truth=train_truth,
            max_iterations=config.loop.max_iterations,
            patience=config.loop.patience,
            valid_fraction=tr.valid_fraction,
            initial_std=config.loop.initial_std,
            burn_in=burn,
            score_lead=config.loop.score_lead,
            fit_kwargs=fit_kwargs,
            seed=tr.seed,
        )
        surrogate, best = res.surrogate, res.steps[res.best_iteration]
        summary |= {
            "first_guess_rmse": res.first_guess_rmse,
            "reanalysis_rmse_a": best.rmse_a,
            "loop_best_iteration": res.best_iteration,
            "loop": [
                {
                    "iteration": s.iteration,
                    "obs_score": s.obs_score,
                    "rmse_a": s.rmse_a,
                    "epochs": s.fit.epochs_run,
                    "best_valid": s.fit.best_loss,
                    "diverged_at": s.diverged_at,
                }
                for s in res.steps
            ],
        }
        fitres = best.fit
        archive = res.analyses
    else:
        if config.source == "truth":
            archive = train_truth[burn:]
        else:
            say(f"reanalysis: {exp_cfg.method.name} with the true model on {K} cycles")
            rea = assimilate(
                model,
                _make_method(exp_cfg.method, train_truth, "experiment.method.params"),
                x_start,
                train_obs,
                steps_per_cycle=every,
                initial_std=exp_cfg.initial.std,
                truth=train_truth,
                burn_in=burn,
                generator=torch.Generator().manual_seed(analysis_seed),
            )
            summary["reanalysis_rmse_a"] = rea.rmse_a
            summary["reanalysis_diverged_at"] = rea.diverged_at
            archive = rea.mean[burn:]
        walls["archive"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        say(f"training {config.network.name} on {archive.shape[0]} states ({config.source})")
        cut = archive.shape[0] - max(2, round(tr.valid_fraction * archive.shape[0]))
        surrogate = SurrogateModel.from_trajectory(
            config.make_network(model.n), archive[:cut], dt_cycle, config.network.scheme
        )
        fitres = fit(
            surrogate, archive[:cut], archive[cut:], seed=tr.seed, description="fit", **fit_kwargs
        )
    walls["train"] = time.perf_counter() - t0
    summary |= {
        "n_parameters": sum(p.numel() for p in surrogate.net.parameters()),
        "fit_epochs": fitres.epochs_run,
        "fit_stopped": fitres.stopped,
        "fit_best_valid": fitres.best_loss,
    }
    art["fit"] = fitres

    # 3. evaluation on the test period
    t0 = time.perf_counter()
    say("evaluation: valid time, Lyapunov exponents, spectra, TL/adjoint")
    summary |= _diagnose(config, surrogate, model, every, truth, test_truth, art)
    walls["diagnostics"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    say(
        f"evaluation: {exp_cfg.method.name} with the surrogate and with the true model, {ev.test_cycles} cycles"
    )
    runs = {}
    for label, m, spc in (("surrogate", surrogate, 1), ("model", model, every)):
        runs[label] = assimilate(
            m,
            _make_method(exp_cfg.method, archive, "experiment.method.params"),
            test_truth[0],
            test_obs,
            steps_per_cycle=spc,
            initial_std=ev.initial_std,
            truth=test_truth,
            burn_in=ev.burn_in_cycles,
            generator=torch.Generator().manual_seed(analysis_seed + 1),
        )
        art[f"da_{label}"] = metrics.rmse(runs[label].mean, test_truth)
    ratio = runs["surrogate"].rmse_a / runs["model"].rmse_a
    summary |= {
        "rmse_a_surrogate": runs["surrogate"].rmse_a,
        "rmse_a_model": runs["model"].rmse_a,
        "rmse_ratio": ratio,
        # time medians: robust to a few cycles where one filter lost track
        "rmse_ratio_median": float(
            art["da_surrogate"][1 + ev.burn_in_cycles :].median()
            / art["da_model"][1 + ev.burn_in_cycles :].median()
        ),
        "within_15pct": bool(math.isfinite(ratio) and ratio <= 1.15),
        "surrogate_da_diverged_at": runs["surrogate"].diverged_at,
    }
    walls["da_test"] = time.perf_counter() - t0
    walls["total"] = time.perf_counter() - t_all
    summary["wall_s"] = walls
    art["dt_cycle"] = dt_cycle
    if out_dir is not None:
        write_outputs(config, surrogate, summary, art, Path(out_dir), plots)
    return summary


def _diagnose(config, surrogate, model, every, truth, test_truth, art) -> dict[str, Any]:
    """Valid time, Lyapunov exponents, spectra and TL/adjoint checks of the surrogate on test states."""
    ev = config.evaluation
    dt_cycle = model.dt * every
    clim = dg.climatological_std(truth)
    L = round(ev.lead / dt_cycle)
    S = min(ev.n_starts, test_truth.shape[0] - L - 1)
    starts = torch.linspace(0, test_truth.shape[0] - L - 1, S).round().long()
    curve = dg.forecast_skill(surrogate, test_truth, starts, L, clim_std=clim)
    x_lyap = test_truth[starts[: ev.lyapunov_starts]]
    # the physical model is cheap: a 4x longer run gives a steadier Lyapunov-time unit
    lam_true = dg.leading_lyapunov(
        model,
        x_lyap,
        n_steps=4 * ev.lyapunov_steps * every,
        transient=ev.lyapunov_transient * every,
    )
    try:
        lam_sur = dg.leading_lyapunov(
            surrogate, x_lyap, n_steps=ev.lyapunov_steps, transient=ev.lyapunov_transient
        )
    except (RuntimeError, ValueError):  # a blown-up free run
        lam_sur = math.nan
    lam_ref = lam_true if math.isfinite(lam_true) and lam_true > 0 else None
    vt = dg.valid_time(curve, ev.threshold, lam_ref)
    out: dict[str, Any] = {
        "clim_std": clim,
        "threshold": ev.threshold,
        "lead": L * dt_cycle,
        "valid_time": vt.time,
        "valid_time_lyapunov": vt.lyapunov_times,
        "valid_time_median": float(vt.time_starts.median()),
        "lyapunov_surrogate": _finite(lam_sur),
        "lyapunov_truth": lam_true,
    }
    art |= {"skill": curve, "lyapunov": lam_ref}
    if ev.reference_perturbation > 0:
        g = torch.Generator().manual_seed(config.training.seed + 7)
        x0 = test_truth[starts]
        x0 = x0 + ev.reference_perturbation * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
        fc = _cycle_forecast(model, x0, L, every)
        ref = test_truth[starts.unsqueeze(0) + torch.arange(L + 1).unsqueeze(-1)]
        nr = ((fc - ref) ** 2).mean(-1).sqrt().T / clim
        ref_curve = dg.SkillCurve(curve.times, nr.mean(0), nr, clim)
        rvt = dg.valid_time(ref_curve, ev.threshold, lam_ref)
        out |= {
            "valid_time_reference": rvt.time,
            "valid_time_reference_lyapunov": rvt.lyapunov_times,
        }
        art["skill_reference"] = ref_curve
    # spectra of long free runs from a few test states
    T = ev.free_run_cycles or test_truth.shape[0] - 1
    x0 = test_truth[starts[: min(4, S)]]
    free = dg.free_run(surrogate, x0, T)
    finite = bool(torch.isfinite(free).all())
    spec_truth = dg.power_spectrum(test_truth)
    spec_sur = dg.power_spectrum(free) if finite else torch.full_like(spec_truth, math.nan)
    out |= {
        "free_run_finite": finite,
        "spectrum_log_distance": dg.spectrum_log_distance(spec_sur, spec_truth)
        if finite
        else math.nan,
    }
    art |= {"spectrum_truth": spec_truth, "spectrum_surrogate": spec_sur}
    x = test_truth[0].to(torch.float64)
    out["taylor_slope"] = dg.taylor_test(surrogate, x).slope
    out["adjoint_error"] = dg.adjoint_test(surrogate, x)
    if every == 1:
        tl = dg.tl_comparison(surrogate, model, x, n_steps=1, k=1)
        out["tl_rel_frobenius"] = tl.rel_frobenius
        out["tl_angle_leading"] = float(tl.angle_initial[0])
    return out


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(quantity, surrogate, true model) rows shared by table.md and the CLI table."""

    def f(v: Any, digits: int = 3) -> str:
        if v is None:
            return "—"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.{digits}g}"
        return str(v)

    s = summary
    rows = [
        ("training source", f(s.get("source")), ""),
        ("valid time (model time)", f(s.get("valid_time")), f(s.get("valid_time_reference"))),
        (
            "valid time (Lyapunov times)",
            f(s.get("valid_time_lyapunov")),
            f(s.get("valid_time_reference_lyapunov")),
        ),
        ("leading Lyapunov exponent", f(s.get("lyapunov_surrogate")), f(s.get("lyapunov_truth"))),
        ("spectrum log10 distance", f(s.get("spectrum_log_distance")), "0"),
        ("DA rmse_a, test period", f(s.get("rmse_a_surrogate")), f(s.get("rmse_a_model"))),
        ("rmse_a ratio (target <= 1.15)", f(s.get("rmse_ratio")), ""),
        ("ratio of time-median rmse_a", f(s.get("rmse_ratio_median")), ""),
        (
            "TL Taylor slope / adjoint error",
            f"{f(s.get('taylor_slope'))} / {f(s.get('adjoint_error'), 2)}",
            "",
        ),
    ]
    if "reanalysis_rmse_a" in s:
        rows.append(("training reanalysis rmse_a", f(s.get("reanalysis_rmse_a")), ""))
    if "loop" in s:
        rows.append(
            ("loop iterations (best)", f"{len(s['loop'])} ({s['loop_best_iteration']})", "")
        )
        rows.append(("first-guess rmse (interpolation)", f(s.get("first_guess_rmse")), ""))
    rows.append(("fit epochs / stopped", f"{s.get('fit_epochs')} / {s.get('fit_stopped')}", ""))
    walls = s.get("wall_s", {})
    rows.append(("wall time [s]", " ".join(f"{k} {v:.0f}" for k, v in walls.items()), ""))
    return rows


def table_markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table: surrogate vs true model (reference forecasts: perturbed truth)."""
    lines = [
        f"# {summary.get('name')} ({summary.get('source')}, {summary.get('network')})",
        "",
        "| quantity | surrogate | true model |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in summary_rows(summary)]
    lines += [
        "",
        f"Valid time: first lead where RMSE / clim_std > {summary.get('threshold')} (mean over "
        + "starts); the true-model column starts from the truth plus "
        + "`evaluation.reference_perturbation` noise.",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(
    config: SurrogateExperimentConfig,
    surrogate: SurrogateModel,
    summary: dict[str, Any],
    art: dict[str, Any],
    out: Path,
    plots: bool = True,
) -> list[Path]:
    """surrogate.pt, config.yaml, table.md, PNGs and (last) summary.json, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    files = [save_surrogate(out / "surrogate.pt", surrogate, config.model_dump(mode="json"))]
    files.append(
        atomic_write(out / "config.yaml", lambda tmp: Path(tmp).write_text(config.to_yaml()))
    )
    files.append(
        atomic_write(out / "table.md", lambda tmp: Path(tmp).write_text(table_markdown(summary)))
    )
    if plots:
        from hybrida.learn.plots import plot_surrogate_experiment

        files += plot_surrogate_experiment(summary, art, out)
    summary["files"] = [p.name for p in files] + ["summary.json"]
    files.append(write_summary(summary, out / "summary.json"))
    return files
