"""Training of learned models on trajectories or reanalysis archives with a multi-step rollout loss.

Loss (K-step rollout, observation-weighted MSE):

    L = sum_{b,k,i} w_{b,k,i} (Phi^{k s}(x_b)_i - x_{b,k,i})^2 / sum_{b,k,i} w_{b,k,i}

where Phi is one model step, s = ``steps_between`` model steps separate two
archive rows and w marks trustworthy target entries (1 by default, 0 where
the target is NaN). Rollout training stabilises learned emulators (Brajard
et al. 2020 train on a few steps; Keisler 2022 and Lam et al. 2023 use
multi-step fine-tuning). Adam (Kingma & Ba 2015), early stopping on the
validation loss restoring the best weights (Prechelt 1998).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from hybrida.models.base import Model

LR_SCHEDULES = ("none", "plateau", "cosine")


def _as_list(x: Tensor | Sequence[Tensor], name: str) -> list[Tensor]:
    items = [x] if isinstance(x, Tensor) else list(x)
    if not items:
        raise ValueError(f"{name} must hold at least one trajectory")
    out = []
    for t in items:
        t = torch.as_tensor(t)
        if t.ndim != 2:
            raise ValueError(
                f"{name}: each trajectory must have shape (T, n), got {tuple(t.shape)}"
            )
        out.append(t)
    if len({t.shape[-1] for t in out}) != 1:
        raise ValueError(f"{name}: trajectories must share the state size n")
    return out


class TrajectoryDataset(torch.utils.data.Dataset):
    """Samples (x_t, [x_{t+s}, ..., x_{t+K s}], weights) from one or several trajectories (T, n).

    ``trajectories``: a (T, n) tensor or a list of them (a truth run, an
    analysis archive, ...); rows are ``steps_between`` = s model steps apart.
    ``weights``: optional tensor(s) of the same shape(s), >= 0, how much each
    target entry counts (e.g. a 0/1 mask of observed or trustworthy
    variables). ``targets``: optional tensor(s) of the same shape(s) to take
    the targets from instead of the trajectories themselves, e.g. the
    observations (NaN where unobserved) of the cycles an analysis archive
    covers: inputs x_t from ``trajectories``, targets y_{t+s..t+Ks} from
    ``targets``. NaN targets get weight 0; a start is kept only when its input
    state is finite and some target weight is positive. Samples never
    straddle two trajectories.
    """

    def __init__(
        self,
        trajectories: Tensor | Sequence[Tensor],
        rollout: int = 1,
        steps_between: int = 1,
        weights: Tensor | Sequence[Tensor] | None = None,
        targets: Tensor | Sequence[Tensor] | None = None,
    ) -> None:
        if isinstance(rollout, bool) or int(rollout) != rollout or rollout < 1:
            raise ValueError(f"rollout must be an integer >= 1, got {rollout}")
        if (
            isinstance(steps_between, bool)
            or int(steps_between) != steps_between
            or steps_between < 1
        ):
            raise ValueError(f"steps_between must be an integer >= 1, got {steps_between}")
        self.rollout = int(rollout)
        self.steps_between = int(steps_between)
        trajs = _as_list(trajectories, "trajectories")
        if weights is None:
            ws = [torch.ones_like(t) for t in trajs]
        else:
            ws = _as_list(weights, "weights")
            if len(ws) != len(trajs) or any(w.shape != t.shape for w, t in zip(ws, trajs)):
                raise ValueError("weights must match the trajectories' number and shapes")
            if any(bool((w < 0).any()) or not bool(torch.isfinite(w).all()) for w in ws):
                raise ValueError("weights must be finite and >= 0")
        data = torch.cat(trajs).detach()
        if targets is None:
            target = data
        else:
            tgts = _as_list(targets, "targets")
            if len(tgts) != len(trajs) or any(y.shape != t.shape for y, t in zip(tgts, trajs)):
                raise ValueError("targets must match the trajectories' number and shapes")
            target = torch.cat(tgts).detach().to(data.dtype)
        w = torch.cat(ws).detach().to(data.dtype)
        w = torch.where(torch.isfinite(target), w, torch.zeros_like(w))
        self.n = data.shape[-1]
        self.data = torch.nan_to_num(data, nan=0.0)
        self.target = self.data if targets is None else torch.nan_to_num(target, nan=0.0)
        self.weights = w
        offsets = torch.arange(1, self.rollout + 1) * self.steps_between
        starts, base = [], 0
        for t in trajs:
            T = t.shape[0]
            idx = torch.arange(max(T - self.rollout * self.steps_between, 0)) + base
            starts.append(idx)
            base += T
        idx = torch.cat(starts)
        finite_in = torch.isfinite(data[idx]).all(-1)
        has_w = (w[idx.unsqueeze(-1) + offsets] > 0).flatten(1).any(-1)
        self.starts = idx[finite_in & has_w]
        self._offsets = offsets
        if len(self.starts) == 0:
            raise ValueError(
                f"no usable samples: trajectories too short for rollout={rollout} x "
                f"steps_between={steps_between}, or no finite inputs / positive weights"
            )

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Inputs (B, n), targets (B, K, n) and weights (B, K, n) of samples ``index``."""
        i = self.starts[index]
        j = i.unsqueeze(-1) + self._offsets
        return self.data[i], self.target[j], self.weights[j]

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor, Tensor]:
        x, y, w = self.batch(torch.as_tensor([k]))
        return x[0], y[0], w[0]


def split_trajectory(trajectory: Tensor, valid_fraction: float = 0.2) -> tuple[Tensor, Tensor]:
    """Split a trajectory (T, n) in time into a training head and a validation tail (no overlap)."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    T = trajectory.shape[0]
    cut = T - max(1, round(valid_fraction * T))
    if cut < 1:
        raise ValueError(f"trajectory of length {T} too short to split")
    return trajectory[:cut], trajectory[cut:]


def auto_loss_scale(trajectory: Tensor, low: float = 1e-3, high: float = 1e3) -> float:
    """The mean variance of a trajectory's variables (T, n) when it lies outside [low, high], else 1.

    For :func:`fit`'s ``loss_scale``: O(1) states (Lorenz models) keep the plain loss,
    states many orders of magnitude away (QG potential vorticity ~1e-5) get their
    variance, so that Adam's steps do not stall on its eps.
    """
    traj = torch.as_tensor(trajectory, dtype=torch.float64)
    var = float(torch.nan_to_num(traj - traj.nanmean(0), nan=0.0).square().mean())
    return var if var > 0 and math.isfinite(var) and not low <= var <= high else 1.0


def rollout_loss(
    step: Callable[[Tensor], Tensor],
    x0: Tensor,
    targets: Tensor,
    weights: Tensor,
    steps_between: int = 1,
) -> Tensor:
    """Weighted mean squared error of a K-step rollout from ``x0`` (B, n) against ``targets`` (B, K, n)."""
    x = x0
    num = x0.new_zeros(())
    for k in range(targets.shape[-2]):
        for _ in range(steps_between):
            x = step(x)
        num = num + (weights[..., k, :] * (x - targets[..., k, :]) ** 2).sum()
    return num / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)


@dataclass
class FitResult:
    """Outcome of :func:`fit`: loss history per epoch and where training stopped."""

    #: per-epoch lists: "train", "valid" (NaN without validation data), "lr"
    history: dict[str, list[float]] = field(default_factory=dict)
    #: index into the history of the epoch whose weights were kept
    best_epoch: int = -1
    #: validation loss (or training loss without validation) of the kept weights
    best_loss: float = math.inf
    epochs_run: int = 0
    #: "patience", "max_epochs", "time_limit" or "nonfinite"
    stopped: str = "max_epochs"
    wall_s: float = 0.0


def _dataset(
    data: TrajectoryDataset | Tensor | Sequence[Tensor],
    rollout: int,
    steps_between: int,
    weights: Tensor | Sequence[Tensor] | None,
) -> TrajectoryDataset:
    if isinstance(data, TrajectoryDataset):
        return data
    return TrajectoryDataset(data, rollout=rollout, steps_between=steps_between, weights=weights)


def _param_dtype(module: nn.Module) -> torch.dtype:
    p = next(module.parameters(), None)
    return p.dtype if p is not None else torch.get_default_dtype()


@torch.no_grad()
def _evaluate(step, ds: TrajectoryDataset, batch_size: int, dtype: torch.dtype, device) -> float:
    num, den = 0.0, 0.0
    for a in range(0, len(ds), batch_size):
        x, y, w = (
            v.to(dtype=dtype, device=device)
            for v in ds.batch(torch.arange(a, min(a + batch_size, len(ds))))
        )
        wsum = float(w.sum())
        num += float(rollout_loss(step, x, y, w, ds.steps_between)) * wsum
        den += wsum
    return num / max(den, 1e-300)


def fit(
    model: nn.Module,
    train: TrajectoryDataset | Tensor | Sequence[Tensor],
    valid: TrajectoryDataset | Tensor | Sequence[Tensor] | None = None,
    *,
    rollout: int = 1,
    steps_between: int = 1,
    weights: Tensor | Sequence[Tensor] | None = None,
    valid_weights: Tensor | Sequence[Tensor] | None = None,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    lr_schedule: str = "none",
    patience: int = 10,
    min_delta: float = 0.0,
    grad_clip: float | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    time_limit_s: float | None = None,
    progress: bool = True,
    description: str = "fit",
    loss_scale: float = 1.0,
) -> FitResult:
    """Train ``model`` (in place) by minimising the K-step rollout loss with Adam; return the history.

    ``model``: a :class:`~hybrida.models.surrogate.SurrogateModel` (any
    ``nn.Module`` that is also a :class:`~hybrida.models.base.Model`; its
    ``step`` is rolled out) or a bare ``nn.Module`` mapping states (B, n) to
    the next states. ``train``/``valid``: datasets, or trajectories (T, n)
    (single tensor or list), turned into :class:`TrajectoryDataset` with
    ``rollout``, ``steps_between`` and ``weights``/``valid_weights`` (masks of
    trustworthy entries, e.g. observed variables of an analysis archive).

    Early stopping: after ``patience`` epochs whose validation loss does not
    improve on the best by a relative ``min_delta``, training stops and the
    best weights are restored (also after a non-finite loss). Without
    ``valid`` it runs ``epochs`` epochs and keeps the last weights. Never
    more than ``epochs`` epochs; ``time_limit_s`` stops after the epoch that
    passes it (then results depend on speed, not only on the seed).

    Reproducible: mini-batch shuffling draws from ``generator`` (default
    ``torch.Generator().manual_seed(seed)``); with seeded initial weights
    (network ``seed=``) the same seed gives identical weights on one machine.
    ``lr_schedule``: "none", "plateau" (halve the rate after ``max(1,
    patience // 3)`` stalled epochs) or "cosine" (to 0 over ``epochs``).
    Data are cast to the dtype/device of the model's parameters.
    ``loss_scale``: gradients are taken of loss / loss_scale (the reported losses
    stay in state units). States of size ~1e-5 (QG potential vorticity) give
    gradients far below Adam's eps = 1e-8, which then barely moves the weights;
    the state variance as ``loss_scale`` (see :func:`auto_loss_scale`) brings them to O(1).
    """
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr}")
    if weight_decay < 0 or min_delta < 0:
        raise ValueError(
            f"weight_decay and min_delta must be >= 0, got {weight_decay}, {min_delta}"
        )
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be > 0 or None, got {grad_clip}")
    if not (math.isfinite(loss_scale) and loss_scale > 0):
        raise ValueError(f"loss_scale must be a finite number > 0, got {loss_scale}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    train_ds = _dataset(train, rollout, steps_between, weights)
    valid_ds = None if valid is None else _dataset(valid, rollout, steps_between, valid_weights)
    step = model.step if isinstance(model, Model) else model
    dtype, device = params[0].dtype, params[0].device
    gen = generator if generator is not None else torch.Generator().manual_seed(int(seed))

    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = None
    if lr_schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=0.5, patience=max(1, patience // 3)
        )
    elif lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(epochs))

    result = FitResult(history={"train": [], "valid": [], "lr": []})
    best_state = copy.deepcopy(model.state_dict())
    wait, t_start = 0, time.perf_counter()
    bar = tqdm(range(int(epochs)), desc=description, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        perm = torch.randperm(len(train_ds), generator=gen)
        num, den, finite = 0.0, 0.0, True
        for a in range(0, len(perm), int(batch_size)):
            x, y, w = (
                v.to(dtype=dtype, device=device)
                for v in train_ds.batch(perm[a : a + int(batch_size)])
            )
            loss = rollout_loss(step, x, y, w, train_ds.steps_between)
            if not torch.isfinite(loss):
                finite = False
                break
            opt.zero_grad(set_to_none=True)
            (loss / loss_scale if loss_scale != 1.0 else loss).backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            wsum = float(w.sum())
            num += float(loss.detach()) * wsum
            den += wsum
        model.eval()
        train_loss = num / max(den, 1e-300) if finite else math.nan
        valid_loss = (
            _evaluate(step, valid_ds, 4 * int(batch_size), dtype, device)
            if valid_ds is not None and finite
            else math.nan
        )
        result.history["train"].append(train_loss)
        result.history["valid"].append(valid_loss)
        result.history["lr"].append(opt.param_groups[0]["lr"])
        result.epochs_run = epoch + 1
        bar.set_postfix(train=f"{train_loss:.3g}", valid=f"{valid_loss:.3g}")
        monitored = valid_loss if valid_ds is not None else train_loss
        if not (finite and math.isfinite(monitored)):
            result.stopped = "nonfinite"
            break
        if valid_ds is None or monitored < result.best_loss * (1.0 - min_delta):
            result.best_loss, result.best_epoch, wait = monitored, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            wait += 1
        if sched is not None:
            sched.step(monitored) if lr_schedule == "plateau" else sched.step()
        if wait >= patience:
            result.stopped = "patience"
            break
        if time_limit_s is not None and time.perf_counter() - t_start > time_limit_s:
            result.stopped = "time_limit"
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    result.wall_s = time.perf_counter() - t_start
    return result
