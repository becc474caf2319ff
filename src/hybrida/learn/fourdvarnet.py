"""Training and baselines of 4DVarNet on windows of a twin (Fablet et al. 2021, JAMES).

Windows: truth (W, T, n); observations every ``every`` steps (at t = every-1, 2 every-1,
... so the last step of a window of a multiple of ``every`` steps is observed) of a random
``frac`` of the variables drawn anew at each observation time, noise N(0, sigma^2).
Training (supervised, their sec. 3.3): random crops of ``crop`` steps of the training
windows with fresh observations each batch; loss

    L = |x_hat - x|^2 + w (|x - Phi(x)|^2 + |x_hat - Phi(x_hat)|^2)     (means, normalised units)

Adam, early stopping on the validation normalised error of the full windows (fixed
observations), best weights restored. Baselines on the same windows: per-variable linear
interpolation and fixed-step gradient descent on U with a given (e.g. the true) prior.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from hybrida.assimilation.learned.fourdvarnet import FourDVarNetSolver, interpolate_window
from hybrida.models.base import Model

__all__ = [
    "FitResult4DVarNet",
    "fit_fourdvarnet",
    "gradient_descent_4dvar",
    "make_windows",
    "normalise",
    "observe_windows",
    "reconstruct",
]


def make_windows(model: Model, x0: Tensor, n_windows: int, length: int, spinup: int = 0) -> Tensor:
    """Consecutive non-overlapping windows (n_windows, length, n) of one free run of ``model`` from x0."""
    with torch.no_grad():
        x = model.forecast(x0, spinup) if spinup else x0
        traj = model.forecast(x, n_windows * length - 1, trajectory=True)
    return traj.reshape(n_windows, length, -1)


def observe_windows(
    truth: Tensor, every: int, frac: float, sigma: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Observations (y with NaN where missing, mask 0/1) of windows ``truth`` (..., T, n)."""
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"observe_windows: frac must lie in (0, 1], got {frac}")
    *lead, T, n = truth.shape
    p = max(1, round(frac * n))
    times = torch.arange(every - 1, T, every, device=truth.device)
    # drawn on the generator's device (the CPU), then moved: the same windows on every device
    keys = torch.rand((*lead, len(times), n), generator=generator, dtype=truth.dtype).to(truth.device)
    picked = keys.argsort(-1)[..., :p]
    sub = torch.zeros_like(keys).scatter_(-1, picked, 1.0)
    mask = torch.zeros_like(truth)
    mask[..., times, :] = sub
    noise = sigma * torch.randn(truth.shape, generator=generator, dtype=truth.dtype).to(truth.device)
    y = torch.where(mask > 0, truth + noise, torch.full_like(truth, math.nan))
    return y, mask


def normalise(y: Tensor, mean: float, std: float) -> tuple[Tensor, Tensor]:
    """(y - mean) / std with NaN replaced by 0, and the mask isfinite(y)."""
    mask = torch.isfinite(y).to(y.dtype)
    return torch.nan_to_num((y - mean) / std, nan=0.0), mask


def reconstruct(solver: FourDVarNetSolver, y: Tensor, mean: float, std: float, batch: int = 64) -> Tensor:
    """The solver's reconstruction (physical units) of windows with observations y (..., T, n), NaN = missing."""
    out = []
    dtype = next(solver.parameters()).dtype
    flat = y.reshape(-1, *y.shape[-2:])
    with torch.no_grad():
        for chunk in flat.split(batch):
            z, m = normalise(chunk.to(dtype), mean, std)
            out.append(mean + std * solver(interpolate_window(z, m), z, m).to(y.dtype))
    return torch.cat(out).reshape(y.shape)


def gradient_descent_4dvar(
    prior: Callable[[Tensor], Tensor],
    y: Tensor,
    mean: float,
    std: float,
    lam_obs: float,
    lam_prior: float,
    n_iter: int,
    step: float,
) -> Tensor:
    """Fixed-step gradient descent on U(z) = lam_obs |y - z|^2_Omega + lam_prior |z - Phi(z)|^2.

    Starts from the interpolation; ``prior`` maps normalised windows (B, T, n) to Phi(z).
    Returns the reconstruction in physical units (Fablet et al. 2021's 4D-Var baseline).
    """
    z_obs, m = normalise(y, mean, std)
    z = interpolate_window(z_obs, m)
    for _ in range(n_iter):
        z = z.detach().requires_grad_(True)
        cost = lam_obs * (m * (z - z_obs) ** 2).sum() + lam_prior * ((z - prior(z)) ** 2).sum()
        (g,) = torch.autograd.grad(cost, z)
        z = z - step * g
    return (mean + std * z).detach()


@dataclass
class FitResult4DVarNet:
    """Training history: loss per step, validation score per evaluation, best score and wall time."""

    train_loss: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_score: list[float] = field(default_factory=list)
    best_score: float = math.inf
    best_step: int = 0
    wall_s: float = 0.0
    steps_done: int = 0
    stopped_early: bool = False
    prior_loss: list[float] = field(default_factory=list)


def _crops(train: Tensor, batch: int, crop: int, every: int, gen: torch.Generator) -> Tensor:
    w = torch.randint(train.shape[0], (batch,), generator=gen)
    start = torch.randint(0, train.shape[1] - crop + 1, (batch,), generator=gen) // every * every
    return train[w.view(-1, 1), start.view(-1, 1) + torch.arange(crop)]


def _fit_prior(
    solver: FourDVarNetSolver, train: Tensor, mean: float, std: float, steps: int, batch: int, crop: int,
    every: int, lr: float, gen: torch.Generator, res: FitResult4DVarNet,
) -> None:
    """Warm start: Adam on the prior loss |x - Phi(x)|^2 of truth crops (4x the batch) alone."""
    opt = torch.optim.Adam(solver.prior.parameters(), lr=lr)
    for _ in range(steps):
        zt = (_crops(train, 4 * batch, crop, every, gen) - mean) / std
        loss = ((zt - solver.prior(zt)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        res.prior_loss.append(float(loss.detach()))


def fit_fourdvarnet(
    solver: FourDVarNetSolver,
    train: Tensor,
    val: Tensor,
    *,
    mean: float,
    std: float,
    every: int = 4,
    frac: float = 0.5,
    sigma: float = math.sqrt(2.0),
    steps: int = 400,
    batch: int = 4,
    crop: int = 64,
    lr: float = 3e-3,
    prior_weight: float = 0.5,
    eval_every: int = 25,
    patience: int = 6,
    schedule: str = "plateau",
    prior_steps: int = 0,
    max_seconds: float = math.inf,
    generator: torch.Generator | None = None,
    progress: bool = False,
    result: FitResult4DVarNet | None = None,
    optimizer_state: dict | None = None,
    best_state: dict | None = None,
    on_eval: Callable[[FitResult4DVarNet, dict, dict], None] | None = None,
) -> FitResult4DVarNet:
    """Train ``solver`` (prior, lambdas and ConvLSTM) end to end on windows ``train`` (W, T, n).

    First ``prior_steps`` Adam steps fit the prior alone on the truth crops (the prior loss
    |x - Phi(x)|^2 only; a warm start, not in the paper, that saves most of the end-to-end
    steps on a CPU budget), then the joint loss trains everything.

    ``val`` (V, T, n) gets fixed observations drawn with seed 0 of a generator of its own.
    Every ``eval_every`` steps the validation normalised error MSE/std^2 is computed; the
    best weights are kept; with ``schedule="plateau"`` the learning rate is halved after an
    evaluation without improvement, with ``schedule="cosine"`` it follows
    lr (1 + cos(pi p)) / 2 (no halving), p = the larger of step / steps and elapsed / max_seconds
    (annealed over whichever budget runs out first). Training stops after ``patience``
    evaluations without improvement, after ``steps`` steps or ``max_seconds``. ``result``/``optimizer_state``/
    ``best_state`` continue an interrupted run (the solver holding its latest weights); ``on_eval(result, best_state, optimizer_state)`` is called
    after each evaluation (checkpointing).
    """
    if train.ndim != 3 or val.ndim != 3 or train.shape[-1] != val.shape[-1]:
        raise ValueError(f"fit_fourdvarnet: train and val must be (W, T, n) windows, got {tuple(train.shape)}, {tuple(val.shape)}")
    if crop % every or crop > train.shape[1]:
        raise ValueError(f"fit_fourdvarnet: crop ({crop}) must be a multiple of every ({every}) and <= {train.shape[1]}")
    if schedule not in ("plateau", "cosine"):
        raise ValueError(f"fit_fourdvarnet: schedule must be 'plateau' or 'cosine', got {schedule!r}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    dtype = next(solver.parameters()).dtype
    train, val = train.to(dtype), val.to(dtype)
    y_val, _ = observe_windows(val, every, frac, sigma, torch.Generator().manual_seed(0))
    res = result if result is not None else FitResult4DVarNet()
    opt = torch.optim.Adam(solver.parameters(), lr=lr)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    best = copy.deepcopy(best_state if best_state is not None else solver.state_dict())
    bad = 0
    if res.val_score:
        bad = len(res.val_score) - 1 - res.val_score.index(min(res.val_score))
    t0 = time.perf_counter() - res.wall_s
    if res.steps_done == 0 and not res.prior_loss:
        _fit_prior(solver, train, mean, std, prior_steps, batch, crop, every, lr, gen, res)
    todo = range(res.steps_done, res.steps_done if res.stopped_early else steps)
    bar = tqdm(todo, disable=not progress, desc="4dvarnet", initial=res.steps_done, total=steps)
    for step in bar:
        solver.train()
        if schedule == "cosine":
            for group in opt.param_groups:
                done = max(step / steps, (time.perf_counter() - t0) / max_seconds)
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))
        x = _crops(train, batch, crop, every, gen)
        y, _ = observe_windows(x, every, frac, sigma, gen)
        zt = (x - mean) / std
        zy, m = normalise(y, mean, std)
        zh = solver(interpolate_window(zy, m), zy, m)
        rec = ((zh - zt) ** 2).mean()
        prior = ((zt - solver.prior(zt)) ** 2).mean() + ((zh - solver.prior(zh)) ** 2).mean()
        loss = rec + prior_weight * prior
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(solver.parameters(), 1.0)
        opt.step()
        res.train_loss.append(float(rec.detach()))
        res.steps_done = step + 1
        last = step + 1 == steps or time.perf_counter() - t0 > max_seconds
        if (step + 1) % eval_every == 0 or last:
            solver.eval()
            score = float(((reconstruct(solver, y_val, mean, std) - val) ** 2).mean() / std**2)
            res.val_steps.append(step + 1)
            res.val_score.append(score)
            if score < res.best_score:
                res.best_score, res.best_step, bad = score, step + 1, 0
                best = copy.deepcopy(solver.state_dict())
            else:
                bad += 1
                if schedule == "plateau":
                    for group in opt.param_groups:  # halve the step on each evaluation without improvement
                        group["lr"] *= 0.5
            res.wall_s = time.perf_counter() - t0
            bar.set_postfix(loss=f"{res.train_loss[-1]:.4f}", val=f"{score:.4f}", best=f"{res.best_score:.4f}")
            if on_eval is not None:
                on_eval(res, best, opt.state_dict())
            if bad >= patience:
                res.stopped_early = True
                break
        if last:
            break
    res.wall_s = time.perf_counter() - t0
    if res.val_score and res.best_score < math.inf:
        solver.load_state_dict(best)
    solver.eval()
    return res
