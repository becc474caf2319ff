"""Fine-tuning of the single-state CNN analysis through the cycle (Bocquet et al. 2024 train through the cycle).

Loss over windows of W cycles started from the network's own cycled analyses:

    L = Σ_k w_k mean_i (x^a_k,i − x_target,k,i)² / Σ_k w_k,

with x^a_k = A_θ(M(x^a_{k−1}), y_k), backpropagated through the forecast model
M (optionally truncated), Adam with cosine decay and gradient clipping, and the
weights of the lowest cycled validation rmse kept.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from hybrida.assimilation.learned.cnn_analysis import CNNAnalysisNet, grid_inputs
from hybrida.learn.cnn_analysis import Segments, cycled_rmse
from hybrida.learn.train import FitResult
from hybrida.models.base import Model


def unrolled_loss(
    net: nn.Module,
    model: Model,
    x0: Tensor,
    y: Tensor,
    target: Tensor,
    index: Tensor,
    steps_per_cycle: int,
    *,
    weights: Tensor | None = None,
    truncate: int | None = None,
) -> Tensor:
    """Weighted mean analysis MSE over W cycles of the learned filter from ``x0``, differentiable through the model.

    L = sum_{j=1..W} w_j mean_{b,i} (x^a_j - x^target_j)^2 / sum_j w_j with x^f_j = M(x^a_{j-1}),
    x^a_j = A_theta(x^f_j, y_j), x^a_0 = ``x0`` ``(B, n)``; ``y`` ``(W, B, p)``,
    ``target`` ``(W, B, n)``; ``weights`` ``(W,)`` (default: all 1). Backpropagation
    through the W cycles trains the analysis for what it does to the next forecasts
    too (training through the DA cycle, Bocquet et al. 2024). ``truncate`` = T:
    truncated backpropagation through time, the state is detached every T cycles
    (the loss still covers all W cycles).
    """
    W = y.shape[0]
    if weights is None:
        weights = torch.ones(W, dtype=x0.dtype)
    if weights.shape != (W,) or not bool((weights >= 0).all()) or not float(weights.sum()) > 0:
        raise ValueError(f"unrolled_loss: weights must be ({W},), >= 0 and not all 0; got {tuple(weights.shape)}")
    if truncate is not None and truncate < 1:
        raise ValueError(f"unrolled_loss: truncate must be >= 1 or None, got {truncate}")
    x = x0
    total = x0.new_zeros(())
    for j in range(W):
        if truncate is not None and j > 0 and j % truncate == 0:
            x = x.detach()
        xf = model.forecast(x, steps_per_cycle)
        d, mask = grid_inputs(xf, y[j].to(xf.dtype), index)
        x = net(xf, d, mask)
        total = total + float(weights[j]) * ((x - target[j].to(x.dtype)) ** 2).mean()
    return total / float(weights.sum())


def cycle_weights(window: int, late: float) -> Tensor:
    """Loss weights of the W cycles of a window, rising linearly from 1 (first) to ``late`` (last)."""
    if window < 1 or not late > 0:
        raise ValueError(f"cycle_weights: need window >= 1 and late > 0, got {window}, {late}")
    return torch.linspace(1.0, late, window, dtype=torch.float64) if window > 1 else torch.ones(1, dtype=torch.float64)


def fit_unrolled(
    net: CNNAnalysisNet,
    model: Model,
    train: Segments,
    valid: Segments,
    index: Tensor,
    steps_per_cycle: int,
    *,
    window: int | list[int] = 5,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 5e-4,
    lr_min: float | None = None,
    late_weight: float = 1.0,
    truncate: int | None = None,
    clip_grad: float | None = 1.0,
    steps_per_epoch: int | None = None,
    patience: int = 3,
    skip: int = 10,
    time_limit_s: float | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> FitResult:
    """Fine-tune ``net`` through the cycle: :func:`unrolled_loss` over ``window``-cycle stretches of the segments.

    Each epoch first cycles the current network over the training segments; its
    analyses start the windows (so the forecasts are those the learned filter
    meets), then Adam steps over randomly drawn windows. ``window`` may be a
    list: a curriculum, epoch e uses ``window[min(e, len - 1)]``. The loss
    weights rise linearly over each window from 1 to ``late_weight``; ``truncate``
    is passed to :func:`unrolled_loss`; the learning rate decays by a cosine
    from ``lr`` to ``lr_min`` (default: constant) over ``epochs``; gradients are
    clipped to norm ``clip_grad``. Early stopping on the cycled validation rmse
    (after ``skip`` cycles of each segment), best weights restored. History:
    "train" (mean unrolled loss), "valid" (cycled validation rmse, squared), "lr".
    """
    K, B, _ = train.target.shape
    windows = [window] if isinstance(window, int) else list(window)
    if not windows or any(w < 1 or w >= K for w in windows):
        raise ValueError(f"fit_unrolled: every window must be in [1, {K - 1}] (segment length {K}), got {window}")
    if epochs < 1 or batch_size < 1 or not lr >= 0:
        raise ValueError(f"fit_unrolled: need epochs >= 1, batch_size >= 1, lr >= 0; got {epochs}, {batch_size}, {lr}")
    dtype = next(net.parameters()).dtype
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = None
    if lr_min is not None:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr_min)
    res = FitResult(history={"train": [], "valid": [], "lr": []})
    _, av = valid.cycle(net, model, index, steps_per_cycle)
    best = cycled_rmse(av, valid.target, skip)
    best_state = copy.deepcopy(net.state_dict())
    res.best_loss = best**2
    t0 = time.perf_counter()
    bad = 0
    y, target = train.y.to(dtype), train.target.to(dtype)
    bar = tqdm(range(epochs), desc="cnn analysis (unrolled)", disable=not progress, leave=False)
    for epoch in bar:
        w = windows[min(epoch, len(windows) - 1)]
        weights = cycle_weights(w, late_weight)
        _, A = train.cycle(net, model, index, steps_per_cycle)
        starts = torch.cat((train.starts.unsqueeze(0), A), 0).to(dtype)  # row k: the analysis before cycle k+1
        net.train()
        total, count = 0.0, 0
        n_steps = steps_per_epoch or max(1, B * (K - w) // batch_size)
        for _ in range(n_steps):
            b = torch.randint(0, B, (batch_size,), generator=gen)
            k = torch.randint(0, K - w + 1, (batch_size,), generator=gen)
            keep = torch.isfinite(starts[k, b]).all(-1)
            if not bool(keep.any()):
                continue
            b, k = b[keep], k[keep]
            steps = k.unsqueeze(0) + torch.arange(w).unsqueeze(1)  # (W, batch)
            loss = unrolled_loss(net, model, starts[k, b], y[steps, b], target[steps, b], index, steps_per_cycle,
                                 weights=weights, truncate=truncate)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad is not None:
                nn.utils.clip_grad_norm_(net.parameters(), clip_grad)
            opt.step()
            total += float(loss.detach())
            count += 1
        res.history["lr"].append(opt.param_groups[0]["lr"])
        if sched is not None:
            sched.step()
        net.eval()
        _, av = valid.cycle(net, model, index, steps_per_cycle)
        score = cycled_rmse(av, valid.target, skip)
        res.history["train"].append(total / max(count, 1))
        res.history["valid"].append(score**2)
        res.epochs_run = epoch + 1
        bar.set_postfix(valid=f"{score:.4f}")
        if log is not None:
            log(f"unrolled epoch {epoch + 1} (window {w}): cycled validation rmse_a {score:.4f}")
        if score < best:
            best, bad, res.best_epoch, res.best_loss = score, 0, epoch, score**2
            best_state = copy.deepcopy(net.state_dict())
        else:
            bad += 1
            if bad >= patience:
                res.stopped = "patience"
                break
        if time_limit_s is not None and time.perf_counter() - t0 > time_limit_s:
            res.stopped = "time_limit"
            break
    net.load_state_dict(best_state)
    net.eval()
    res.wall_s = time.perf_counter() - t0
    return res
