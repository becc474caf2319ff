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
from hybrida.experiment.surrogate_report import (  # re-exported
    summary_rows,
    table_markdown,
    write_outputs,
)
from hybrida.learn import diagnostics as dg
from hybrida.learn.train import fit
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


def _cycle_forecast(model: Any, x0: torch.Tensor, n_cycles: int, every: int) -> torch.Tensor:
    """States (n_cycles + 1, *x0.shape) of ``model`` run ``every`` steps per cycle."""
    xs = [x0]
    with torch.no_grad():
        for _ in range(n_cycles):
            xs.append(model.forecast(xs[-1], every))
    return torch.stack(xs)


def _finite(v: float) -> float:
    return float(v) if math.isfinite(float(v)) else math.nan


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


def _run(config, exp_cfg, out_dir, progress, plots) -> dict[str, Any]:
    say = progress if callable(progress) else (lambda _msg: None)
    bars = bool(progress)
    walls: dict[str, float] = {}
    t_all = time.perf_counter()
    tr, ev = config.training, config.evaluation
    sigma_m = float(ev.model_noise) if isinstance(ev.model_noise, (int, float)) else 0.0

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

        settings = LoopSettings(
            max_iterations=config.loop.max_iterations,
            patience=config.loop.patience,
            valid_fraction=tr.valid_fraction,
            initial_std=config.loop.initial_std,
            burn_in=burn,
            score_lead=config.loop.score_lead,
            model_noise=config.loop.model_noise,
            weight_by_spread=config.loop.weight_by_spread,
            first_fit_kwargs={"epochs": config.loop.first_epochs} if config.loop.first_epochs else {},
            fit_kwargs=fit_kwargs,
            seed=tr.seed,
        )
        res = da_ml_loop(
            make_surrogate,
            lambda: _make_method(loop_method, first_guess, "loop.method.params"),
            train_obs,
            model.n,
            settings,
            truth=train_truth,
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
        spread = None
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
            spread = None if rea.std is None else rea.std[burn:]
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
        if ev.model_noise == "validation":
            sigma_m = validation_model_noise(
                surrogate, archive[cut:], None if spread is None else spread[cut:]
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
    # an imperfect surrogate as a stochastic model: x_{k+1} = Phi(x_k) + sigma_m eta_k (Brajard et al. 2020)
    forecaster: Model = surrogate
    if sigma_m > 0:
        forecaster = NoisyModel(
            surrogate, sigma_m, torch.Generator().manual_seed(analysis_seed + 2)
        )
    summary["model_noise"] = sigma_m
    for label, m, spc in (("surrogate", forecaster, 1), ("model", model, every)):
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
