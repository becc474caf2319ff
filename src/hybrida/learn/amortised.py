"""Training the amortised ensemble filter through the differentiable forecast (McCabe & Brown 2021).

Self-supervised: no truth enters the loss. Ensembles of ``m`` members are
cycled (forecast, learned analysis) along ``S`` observed trajectories; over a
window of ``K`` cycles the loss scores each forecast ensemble against the
next observations, and the gradient flows back through the analyses and the
model (truncated back-propagation through time: the ensembles are carried from
one window to the next, detached). Observations live on the grid, ``y``
``(S, T, n)`` with NaN where a variable is not observed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hybrida.assimilation.learned.amortised import amortised_update
from hybrida.io.checkpoint import atomic_torch_save
from hybrida.models.base import Model
from hybrida.observations.system import ObservationSystem

__all__ = [
    "AmortisedFit",
    "climatological_ensembles",
    "fit_amortised",
    "forecast_score",
    "grid_observations_of",
    "run_filter",
    "window_loss",
]

LOSSES = ("nll", "crps")


def grid_observations_of(
    truth: Tensor, obs_system: ObservationSystem, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Observations of truths ``(S, T+1, n)`` on the grid: y ``(S, T, n)`` (NaN unobserved) and σ ``(n,)``.

    Cycle k (1..T) observes ``obs_system.network(k)`` (point observations,
    diagonal R) of ``truth[:, k]`` with noise drawn from ``generator``.
    """
    S, T1, n = truth.shape
    y = torch.full((S, T1 - 1, n), math.nan, dtype=truth.dtype, device=truth.device)
    std = torch.full((n,), math.nan, dtype=truth.dtype, device=truth.device)
    for k in range(1, T1):
        net = obs_system.network(k, generator)
        if net.matrix is None:
            raise ValueError("grid_observations_of: the network must observe state components (obs.matrix set)")
        idx = net.matrix.argmax(-1).to(truth.device)
        s = net.error.cov.diagonal().sqrt().to(truth)
        noise = torch.randn(S, idx.numel(), generator=generator, dtype=truth.dtype).to(truth.device)
        y[:, k - 1, idx] = truth[:, k, idx] + s * noise
        std[idx] = s
    if bool(torch.isnan(std).any()):
        std = torch.where(torch.isnan(std), torch.ones_like(std), std)
    return y, std


def climatological_ensembles(
    model: Model, count: int, m: int, n: int, generator: torch.Generator, dtype: torch.dtype, spinup: int = 500
) -> Tensor:
    """``count`` ensembles ``(count, m, n)`` of independent states on the attractor (free runs, no truth)."""
    x = 8.0 * torch.ones(count, m, n, dtype=dtype) + torch.randn(count, m, n, generator=generator, dtype=dtype)
    with torch.no_grad():
        return model.forecast(x, spinup)


def forecast_score(E: Tensor, y: Tensor, std: Tensor, kind: str = "nll") -> Tensor:
    """Mean score of forecast ensembles ``(B, m, n)`` against observations ``y`` ``(B, n)`` (NaN skipped).

    The predictive law of an observation is N(x̄_j, s_j² + σ_j²) with the
    ensemble mean and (unbiased) variance: ``"nll"`` its negative log density
    ½((y-x̄)²/v + log 2πv), ``"crps"`` its CRPS (Gneiting & Raftery 2007).
    """
    mask = torch.isfinite(y)
    yz = torch.where(mask, y, torch.zeros((), dtype=y.dtype))
    mu = E.mean(-2)
    v = E.var(-2, unbiased=True) + std.to(E) ** 2
    if kind == "nll":
        s = 0.5 * ((yz - mu) ** 2 / v + torch.log(2 * math.pi * v))
    elif kind == "crps":
        sd = v.sqrt()
        z = (yz - mu) / sd
        pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
        s = sd * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))
    else:
        raise ValueError(f"unknown loss {kind!r}; choose one of: {', '.join(LOSSES)}")
    return (s * mask).sum() / mask.sum().clamp_min(1)


def run_filter(
    net: nn.Module,
    model: Model,
    E0: Tensor,
    y: Tensor,
    std: Tensor,
    steps_per_cycle: int,
    loc: float,
    scale: float,
    truth: Tensor | None = None,
    loss: str = "nll",
    burn_in: int = 0,
) -> dict[str, float]:
    """Cycle the learned filter (no gradient) over y ``(S, T, n)``: mean forecast score, and rmse vs truth.

    ``truth`` ``(S, T+1, n)`` (optional, diagnostics only). Scores are means
    over cycles ``burn_in+1 .. T``; a filter that overflows scores ``inf``.
    """
    E = E0.to(dtype=next(net.parameters()).dtype)
    scores, errs = [], []
    with torch.no_grad():
        for k in range(y.shape[1]):
            E = model.forecast(E, steps_per_cycle)
            if not bool(torch.isfinite(E).all()):
                return {"score": math.inf, "rmse": math.inf}
            yk = y[:, k].to(E)
            if k >= burn_in:
                scores.append(float(forecast_score(E, yk, std, loss)))
            E = amortised_update(net, E, yk, _inv_std(yk, std), loc, scale)
            if truth is not None and k >= burn_in:
                d = E.mean(-2) - truth[:, k + 1].to(E)
                errs.append(float(d.pow(2).mean(-1).sqrt().mean()))
    out = {"score": sum(scores) / max(len(scores), 1)}
    out["rmse"] = sum(errs) / len(errs) if errs else math.nan
    return out


def _inv_std(y: Tensor, std: Tensor) -> Tensor:
    return torch.isfinite(y).to(y.dtype) / std.to(y)


def window_loss(
    net: nn.Module,
    model: Model,
    E: Tensor,
    y: Tensor,
    std: Tensor,
    steps_per_cycle: int,
    loc: float,
    scale: float,
    loss: str = "nll",
) -> tuple[Tensor, Tensor]:
    """Mean forecast score over a window of K cycles, and the final analysis ensembles.

    ``E`` ``(B, m, n)`` analyses at the window start, ``y`` ``(B, K, n)`` the
    grid observations of the K cycles. Cycle k forecasts, scores the forecast
    against y_k (k ≥ 2: the first forecast does not depend on θ) and
    analyses y_k: L = 1/(K-1) Σ_{k=2..K} score(M(x^a_{k-1}), y_k), differentiable
    through the analyses and the model (McCabe & Brown 2021).
    """
    K = y.shape[1]
    total = torch.zeros((), dtype=E.dtype, device=E.device)
    for k in range(K):
        E = model.forecast(E, steps_per_cycle)
        yk = y[:, k]
        if k > 0:
            total = total + forecast_score(E, yk, std, loss)
        E = amortised_update(net, E, yk, _inv_std(yk, std), loc, scale)
    return total / max(K - 1, 1), E


@dataclass
class AmortisedFit:
    """Training outcome: the best network (by the validation score), history, steps and wall time."""

    net: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = math.inf
    best_step: int = 0
    steps: int = 0
    train_s: float = 0.0
    train_cpu_s: float = 0.0
    stopped: str = ""


def fit_amortised(
    net: nn.Module,
    model: Model,
    y_train: Tensor,
    y_valid: Tensor,
    std: Tensor,
    *,
    m: int,
    steps_per_cycle: int,
    loc: float,
    scale: float,
    window: int = 10,
    batch: int = 16,
    lr: float = 1e-3,
    lr_final: float = 1e-4,
    max_steps: int = 2000,
    max_seconds: float = math.inf,
    valid_every: int = 100,
    patience: int = 5,
    loss: str = "nll",
    grad_clip: float = 1.0,
    valid_burn_in: int = 50,
    truth_valid: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    on_validate: Callable[[dict[str, float]], None] | None = None,
) -> AmortisedFit:
    """Train ``net`` so that the filter's forecasts score best on the next observations (no truth).

    ``y_train`` ``(S, T, n)`` and ``y_valid`` ``(Sv, Tv, n)`` are grid
    observations (NaN unobserved) of independent trajectories, ``std`` ``(n,)``
    their error std. Each step takes ``batch`` of the S trajectories, cycles
    their carried ensembles for ``window`` cycles and minimises the mean
    :func:`forecast_score` of the forecasts 2..window (the first forecast
    does not depend on θ) with Adam (cosine decay ``lr`` → ``lr_final`` over
    ``max_steps``), gradient-norm clipping ``grad_clip``. A trajectory whose
    end is reached restarts at a random cycle with a climatological ensemble.
    Every ``valid_every`` steps the filter is cycled over ``y_valid`` from
    climatological ensembles; training stops after ``patience`` validations
    without improvement, at ``max_steps`` or after ``max_seconds``, keeping the
    best weights. ``checkpoint``: a file written at every validation; with
    ``resume=True`` training continues from it.
    """
    if loss not in LOSSES:
        raise ValueError(f"fit_amortised: unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    for name, y in (("y_train", y_train), ("y_valid", y_valid)):
        if y.ndim != 3 or y.shape[-1] != std.shape[-1]:
            raise ValueError(f"fit_amortised: {name} must have shape (S, T, n={std.shape[-1]}), got {tuple(y.shape)}")
    if window < 2:
        raise ValueError(f"fit_amortised: window must be >= 2 cycles, got {window}")
    S, T, n = y_train.shape
    if T < window + 1:
        raise ValueError(f"fit_amortised: y_train has {T} cycles; need more than window={window}")
    batch = min(batch, S)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    dtype = next(net.parameters()).dtype
    y_train, y_valid, std = y_train.to(dtype), y_valid.to(dtype), std.to(dtype)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (lr_final + 0.5 * (lr - lr_final) * (1 + math.cos(math.pi * min(s, max_steps) / max_steps))) / lr
    )
    pool = climatological_ensembles(model, S, m, n, gen, dtype)
    ptr = torch.randint(0, T - window, (S,), generator=gen)
    E0_valid = climatological_ensembles(model, y_valid.shape[0], m, n, gen, dtype)
    fit = AmortisedFit(net=net)
    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    bad, step, elapsed, cpu_used = 0, 0, 0.0, 0.0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt is not None and ckpt.is_file():
        c = torch.load(ckpt, map_location="cpu", weights_only=False)
        net.load_state_dict(c["net"])
        opt.load_state_dict(c["opt"])
        sched.load_state_dict(c["sched"])
        pool, ptr, gen_state = c["pool"], c["ptr"], c["gen"]
        gen.set_state(gen_state)
        best_state, bad, step, elapsed, cpu_used = c["best"], c["bad"], c["step"], c["elapsed"], c["cpu"]
        fit.history, fit.best_score, fit.best_step = c["history"], c["best_score"], c["best_step"]
    from tqdm.auto import tqdm

    bar = tqdm(total=max_steps, initial=step, desc="amortised filter", disable=not progress, leave=False)
    t_start = time.perf_counter() - elapsed
    cpu_start = time.process_time() - cpu_used
    running, count = 0.0, 0
    net.train()
    while step < max_steps:
        b = torch.randperm(S, generator=gen)[:batch]
        t0 = ptr[b]
        y_win = y_train[b.unsqueeze(-1), t0.unsqueeze(-1) + torch.arange(window)]
        total, E = window_loss(net, model, pool[b], y_win, std, steps_per_cycle, loc, scale, loss)
        ok = bool(torch.isfinite(total)) and bool(torch.isfinite(E).all())
        opt.zero_grad(set_to_none=True)
        if ok:
            total.backward()
            nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
            opt.step()
            running, count = running + float(total.detach()), count + 1
        sched.step()
        step += 1
        with torch.no_grad():
            fresh = climatological_ensembles(model, batch, m, n, gen, dtype, spinup=100)
            new_ptr = t0 + window
            restart = (new_ptr + window > T) | ~torch.isfinite(E).all(-1).all(-1) | (E.abs().amax((-1, -2)) > 50)
            if not ok:
                restart[:] = True
            E = torch.where(restart[:, None, None], fresh, E.detach())
            new_ptr = torch.where(restart, torch.randint(0, T - window, (batch,), generator=gen), new_ptr)
            pool[b], ptr[b] = E, new_ptr
        bar.update(1)
        if step % valid_every == 0 or step == max_steps:
            net.eval()
            v = run_filter(net, model, E0_valid, y_valid, std, steps_per_cycle, loc, scale, truth_valid, loss, valid_burn_in)
            net.train()
            row = {
                "step": step,
                "train": running / max(count, 1),
                "valid": v["score"],
                "valid_rmse": v["rmse"],
                "lr": float(opt.param_groups[0]["lr"]),
                "wall_s": time.perf_counter() - t_start,
            }
            running, count = 0.0, 0
            fit.history.append(row)
            if on_validate is not None:
                on_validate(row)
            bar.set_postfix(train=f"{row['train']:.3f}", valid=f"{row['valid']:.3f}", rmse=f"{row['valid_rmse']:.3f}")
            if v["score"] < fit.best_score:
                fit.best_score, fit.best_step, bad = v["score"], step, 0
                best_state = {k: t.detach().clone() for k, t in net.state_dict().items()}
            else:
                bad += 1
            if ckpt is not None:
                atomic_torch_save(
                    {
                        "net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "pool": pool, "ptr": ptr, "gen": gen.get_state(), "best": best_state, "bad": bad,
                        "step": step, "elapsed": time.perf_counter() - t_start, "cpu": time.process_time() - cpu_start,
                        "history": fit.history,
                        "best_score": fit.best_score, "best_step": fit.best_step,
                    },
                    ckpt,
                )
            if bad >= patience:
                fit.stopped = f"early stop: no validation improvement in {patience} checks"
                break
            if time.perf_counter() - t_start > max_seconds:
                fit.stopped = f"time budget {max_seconds:.0f} s reached"
                break
    bar.close()
    fit.stopped = fit.stopped or f"max_steps {max_steps} reached"
    net.load_state_dict(best_state)
    net.eval()
    fit.steps = step
    fit.train_s = time.perf_counter() - t_start
    fit.train_cpu_s = time.process_time() - cpu_start
    return fit


def training_summary(fit: AmortisedFit) -> dict[str, Any]:
    """Plain-value summary of a fit (for summary.json)."""
    return {
        "steps": fit.steps,
        "best_step": fit.best_step,
        "best_valid": fit.best_score,
        "train_s": fit.train_s,
        "train_cpu_s": fit.train_cpu_s,
        "stopped": fit.stopped,
    }
