"""The DA–ML pipeline: twin → training archive → surrogate → diagnostics and DA with the surrogate.

One config (:class:`~hybrida.experiment.surrogate_config.SurrogateExperimentConfig`) describes the whole
experiment of Brajard et al. (2020): a twin (truth and sparse noisy
observations), a training archive taken from the truth (upper bound), from a
classical reanalysis with the true model, or from the iterative DA–ML loop
that never sees the physical model; a network trained on it; and an
evaluation on a later, independent test period: forecast valid time (also in
Lyapunov times), leading Lyapunov exponent, spatial power spectrum, tangent-
linear/adjoint checks, and the analysis RMSE of the same DA method run with
the surrogate and with the true model on the same new observations — optionally
with additive model noise on the surrogate's forecasts (``evaluation.model_noise``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hybrida import metrics, registry
from hybrida.experiment.builder import build, instantiate, resolve
from hybrida.experiment.config import MethodConfig
from hybrida.experiment.loop import LoopSettings, da_ml_loop, interpolate_observations
from hybrida.experiment.reanalysis import assimilate
from hybrida.experiment.runner import torch_threads
from hybrida.experiment.surrogate_config import (
    DESCRIPTIONS,
    PRESETS,
    SurrogateExperimentConfig,
    load_surrogate_config,
    read_surrogate_source,
)
from hybrida.experiment.surrogate_evaluation import diagnose
from hybrida.experiment.surrogate_report import (  # re-exported
    summary_rows,
    table_markdown,
    write_outputs,
)
from hybrida.learn.train import FitResult, auto_loss_scale, fit
from hybrida.models.base import Model
from hybrida.models.noisy import NoisyModel
from hybrida.models.surrogate import SurrogateModel

__all__ = [
    "DESCRIPTIONS",
    "PRESETS",
    "SurrogateExperimentConfig",
    "load_surrogate_config",
    "read_surrogate_source",
    "run_surrogate_experiment",
    "summary_rows",
    "table_markdown",
    "validation_model_noise",
    "write_outputs",
]


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


def validation_model_noise(
    model: Model, archive: torch.Tensor, spread: torch.Tensor | None = None
) -> float:
    """A truth-free model-noise std: one-step RMS error on archive pairs minus the analysis spread.

    sigma_m^2 = max(0, mean_{k,i} (M(a_k) - a_{k+1})_i^2 - mean_{k,i} s_{k+1,i}^2) over the
    consecutive rows of ``archive`` ``(T, n)`` (held-out analyses, one model step apart), ``s``
    = ``spread`` ``(T, n)`` the analysis ensemble std (None: 0, e.g. a true trajectory). The
    pairs' differences hold the analysis errors as well as the model error; subtracting the
    spread removes the (estimated) error of the verifying analysis.
    """
    if archive.ndim != 2 or archive.shape[0] < 2:
        raise ValueError(
            f"validation_model_noise: archive must be (T >= 2, n), got {tuple(archive.shape)}"
        )
    if spread is not None and spread.shape != archive.shape:
        raise ValueError("validation_model_noise: spread must have the archive's shape")
    with torch.no_grad():
        err = model.step(archive[:-1]) - archive[1:]
    var = float((err.double() ** 2).mean())
    if spread is not None:
        var -= float((spread[1:].double() ** 2).mean())
    return math.sqrt(max(var, 0.0))


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


@dataclass
class _Twin:
    """The twin of one experiment, split into its training and test periods."""

    model: Model
    every: int
    truth: torch.Tensor
    train_truth: torch.Tensor
    train_obs: list
    test_truth: torch.Tensor
    test_obs: list
    burn: int
    x_start: torch.Tensor
    analysis_seed: int

    @property
    def dt_cycle(self) -> float:
        return self.model.dt * self.every


@dataclass
class _Trained:
    """A trained surrogate, the archive it learned from and what the training reports."""

    surrogate: SurrogateModel
    fit: FitResult
    archive: torch.Tensor
    model_noise: float
    summary: dict[str, Any] = field(default_factory=dict)


def _run(config, exp_cfg, out_dir, progress, plots) -> dict[str, Any]:
    """Twin, training, DA on the test period, diagnostics, outputs: the named steps below, timed."""
    say = progress if callable(progress) else (lambda _msg: None)
    walls: dict[str, float] = {}
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    say("twin: truth and observations")
    tw = _make_twin(config, exp_cfg)
    walls["twin"] = time.perf_counter() - t0
    summary = _summary_header(config, exp_cfg, tw)

    t0 = time.perf_counter()
    fit_kwargs = _fit_kwargs(config, bool(progress))
    if config.source == "loop":
        trained = _train_by_loop(config, exp_cfg, tw, fit_kwargs, say)
    else:
        archive, spread, archive_summary = _training_archive(config, exp_cfg, tw, say)
        walls["archive"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        trained = _train_on_archive(config, tw, archive, spread, fit_kwargs, say)
        trained.summary |= archive_summary
    walls["train"] = time.perf_counter() - t0
    summary |= trained.summary
    art: dict[str, Any] = {"config": config, "fit": trained.fit, "dt_cycle": tw.dt_cycle}

    t0 = time.perf_counter()
    say(f"evaluation: {exp_cfg.method.name} with the surrogate and with the true model, "
        f"{config.evaluation.test_cycles} cycles")
    runs, da_summary = _assimilate_test_period(config, exp_cfg, tw, trained, art)
    summary |= da_summary
    walls["da_test"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("evaluation: valid time, Lyapunov exponents, spectra, TL/adjoint")
    summary |= diagnose(config.evaluation, trained.surrogate, tw, runs["model"].mean, art)
    walls["diagnostics"] = time.perf_counter() - t0
    walls["total"] = time.perf_counter() - t_all
    summary["wall_s"] = walls
    if out_dir is not None:
        write_outputs(config, trained.surrogate, summary, art, Path(out_dir), plots)
    return summary


def _make_twin(config: SurrogateExperimentConfig, exp_cfg) -> _Twin:
    """Truth and observations over the training and test periods (one twin, split at K cycles)."""
    exp = build(exp_cfg)
    model, every = exp.model, exp.twin.steps_per_cycle
    truth, obs = exp.twin.truth, exp.twin.observations
    K = config.training.train_cycles
    burn = min(round(exp_cfg.burn_in / (model.dt * every)), K // 2)
    x_start = (
        truth[0] if exp_cfg.initial.center == "truth" else model.initial_state(truth.dtype)
    )
    return _Twin(
        model, every, truth, truth[: K + 1], obs[:K], truth[K:], obs[K:], burn, x_start,
        exp.seeds["analysis"],
    )


def _summary_header(config: SurrogateExperimentConfig, exp_cfg, tw: _Twin) -> dict[str, Any]:
    return {
        "name": config.name,
        "source": config.source,
        "network": config.network.name,
        "scheme": config.network.scheme,
        "seed": exp_cfg.seed,
        "training_seed": config.training.seed,
        "method": exp_cfg.method.name,
        "n": tw.model.n,
        "dt_cycle": tw.dt_cycle,
        "train_cycles": config.training.train_cycles,
        "test_cycles": config.evaluation.test_cycles,
    }


def _fit_kwargs(config: SurrogateExperimentConfig, bars: bool) -> dict[str, Any]:
    tr = config.training
    return {
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


def _fixed_model_noise(config: SurrogateExperimentConfig) -> float:
    noise = config.evaluation.model_noise
    return float(noise) if isinstance(noise, (int, float)) else 0.0


def _train_by_loop(config, exp_cfg, tw: _Twin, fit_kwargs, say) -> _Trained:
    """The DA–ML loop (Brajard et al. 2020): the surrogate never sees the physical model."""
    tr, lp = config.training, config.loop
    say(f"DA-ML loop: up to {lp.max_iterations} iterations on {tr.train_cycles} cycles")
    n = tw.model.n

    def make_surrogate(archive: torch.Tensor) -> SurrogateModel:
        return SurrogateModel.from_trajectory(
            config.make_network(n), archive, tw.dt_cycle, config.network.scheme
        )

    # a climatology for methods that need one comes from the observations alone
    def first_guess() -> torch.Tensor:
        return interpolate_observations(tw.train_obs, n)

    settings = LoopSettings(
        max_iterations=lp.max_iterations,
        patience=lp.patience,
        valid_fraction=tr.valid_fraction,
        initial_std=lp.initial_std,
        burn_in=tw.burn,
        score_lead=lp.score_lead,
        model_noise=lp.model_noise,
        weight_by_spread=lp.weight_by_spread,
        first_fit_kwargs={"epochs": lp.first_epochs} if lp.first_epochs else {},
        fit_kwargs=fit_kwargs,
        seed=tr.seed,
    )
    loop_method = lp.method or exp_cfg.method
    res = da_ml_loop(
        make_surrogate,
        lambda: _make_method(loop_method, first_guess, "loop.method.params"),
        tw.train_obs,
        n,
        settings,
        truth=tw.train_truth,
    )
    best = res.steps[res.best_iteration]
    summary = {
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
    return _Trained(
        res.surrogate, best.fit, res.analyses, _fixed_model_noise(config),
        summary | _fit_summary(res.surrogate, best.fit),
    )


def _training_archive(config, exp_cfg, tw: _Twin, say):
    """The states to learn from: the truth (upper bound) or a reanalysis with the true model."""
    if config.source == "truth":
        return tw.train_truth[tw.burn :], None, {}
    K = config.training.train_cycles
    say(f"reanalysis: {exp_cfg.method.name} with the true model on {K} cycles")
    rea = assimilate(
        tw.model,
        _make_method(exp_cfg.method, tw.train_truth, "experiment.method.params"),
        tw.x_start,
        tw.train_obs,
        steps_per_cycle=tw.every,
        initial_std=exp_cfg.initial.std,
        truth=tw.train_truth,
        burn_in=tw.burn,
        generator=torch.Generator().manual_seed(tw.analysis_seed),
    )
    spread = None if rea.std is None else rea.std[tw.burn :]
    info = {"reanalysis_rmse_a": rea.rmse_a, "reanalysis_diverged_at": rea.diverged_at}
    return rea.mean[tw.burn :], spread, info


def _train_on_archive(config, tw: _Twin, archive, spread, fit_kwargs, say) -> _Trained:
    """Fit a fresh network on the archive; its last ``valid_fraction`` validates."""
    tr = config.training
    say(f"training {config.network.name} on {archive.shape[0]} states ({config.source})")
    cut = archive.shape[0] - max(2, round(tr.valid_fraction * archive.shape[0]))
    surrogate = SurrogateModel.from_trajectory(
        config.make_network(tw.model.n), archive[:cut], tw.dt_cycle, config.network.scheme
    )
    fit_kwargs = {"loss_scale": auto_loss_scale(archive[:cut]), **fit_kwargs}
    fitres = fit(surrogate, archive[:cut], archive[cut:], seed=tr.seed, description="fit", **fit_kwargs)
    sigma_m = _fixed_model_noise(config)
    if config.evaluation.model_noise == "validation":
        sigma_m = validation_model_noise(
            surrogate, archive[cut:], None if spread is None else spread[cut:]
        )
    return _Trained(surrogate, fitres, archive, sigma_m, _fit_summary(surrogate, fitres))


def _fit_summary(surrogate: SurrogateModel, fitres: FitResult) -> dict[str, Any]:
    return {
        "n_parameters": sum(p.numel() for p in surrogate.net.parameters()),
        "fit_epochs": fitres.epochs_run,
        "fit_stopped": fitres.stopped,
        "fit_best_valid": fitres.best_loss,
    }


def _assimilate_test_period(config, exp_cfg, tw: _Twin, trained: _Trained, art):
    """The same DA method with the surrogate and with the true model, on the same new observations."""
    ev = config.evaluation
    # an imperfect surrogate as a stochastic model: x_{k+1} = Phi(x_k) + sigma_m eta_k (Brajard et al. 2020)
    forecaster: Model = trained.surrogate
    if trained.model_noise > 0:
        forecaster = NoisyModel(
            trained.surrogate, trained.model_noise,
            torch.Generator().manual_seed(tw.analysis_seed + 2),
        )
    runs = {}
    for label, m, spc in (("surrogate", forecaster, 1), ("model", tw.model, tw.every)):
        runs[label] = assimilate(
            m,
            _make_method(exp_cfg.method, trained.archive, "experiment.method.params"),
            tw.test_truth[0],
            tw.test_obs,
            steps_per_cycle=spc,
            initial_std=ev.initial_std,
            truth=tw.test_truth,
            burn_in=ev.burn_in_cycles,
            generator=torch.Generator().manual_seed(tw.analysis_seed + 1),
        )
        art[f"da_{label}"] = metrics.rmse(runs[label].mean, tw.test_truth)
    ratio = runs["surrogate"].rmse_a / runs["model"].rmse_a
    after = slice(1 + ev.burn_in_cycles, None)
    return runs, {
        "model_noise": trained.model_noise,
        "rmse_a_surrogate": runs["surrogate"].rmse_a,
        "rmse_a_model": runs["model"].rmse_a,
        "rmse_ratio": ratio,
        # time medians: robust to a few cycles where one filter lost track
        "rmse_ratio_median": float(
            art["da_surrogate"][after].median() / art["da_model"][after].median()
        ),
        "within_15pct": bool(math.isfinite(ratio) and ratio <= 1.15),
        "surrogate_da_diverged_at": runs["surrogate"].diverged_at,
    }
