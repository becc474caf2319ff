"""Training of the single-state CNN analysis on (forecast, observations) -> target pairs, offline and online.

Loss: the mean squared analysis error against the target (the truth of a twin,
or a reanalysis),

    L = mean_{b,i} (A_theta(x_f,b, y_b)_i - x_target,b,i)^2,

Adam (Kingma & Ba 2015) with early stopping on the validation loss, restoring
the best weights. The forecasts must be those the cycled learned analysis
meets (Bocquet et al. 2024 train through the cycle): :func:`cycle_forecasts`
cycles the current network over many training segments at once, so that
:func:`fit_online` can alternate "regenerate the forecasts with the current
network" and "refit on the growing set of pairs" (a DAgger-like iteration,
Ross et al. 2011), starting from the forecasts of a classical cycle.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from hybrida.assimilation.learned.cnn_analysis import CNNAnalysisNet, grid_inputs
from hybrida.learn.train import FitResult
from hybrida.models.base import Model

__all__ = [
    "AnalysisPairs",
    "Segments",
    "cycle_forecasts",
    "cycled_rmse",
    "fit_cnn_analysis",
    "fit_online",
    "pairs_from_cycle",
]


@dataclass
class AnalysisPairs:
    """Training pairs: forecasts ``xf`` ``(M, n)``, observations ``y`` ``(M, p)`` (NaN missing), targets ``(M, n)``."""

    xf: Tensor
    y: Tensor
    target: Tensor

    def __post_init__(self) -> None:
        if self.xf.ndim != 2 or self.target.shape != self.xf.shape:
            raise ValueError(
                f"AnalysisPairs: xf and target must both be (M, n); got {tuple(self.xf.shape)}, "
                f"{tuple(self.target.shape)}"
            )
        if self.y.ndim != 2 or self.y.shape[0] != self.xf.shape[0]:
            raise ValueError(f"AnalysisPairs: y must be (M, p) with M = {self.xf.shape[0]}, got {tuple(self.y.shape)}")
        if not bool(torch.isfinite(self.xf).all()) or not bool(torch.isfinite(self.target).all()):
            raise ValueError("AnalysisPairs: xf and target must be finite (NaN only in y, for missing values)")

    def __len__(self) -> int:
        return self.xf.shape[0]

    def cat(self, other: AnalysisPairs) -> AnalysisPairs:
        """Both sets of pairs, this one first."""
        return AnalysisPairs(
            torch.cat((self.xf, other.xf)), torch.cat((self.y, other.y)), torch.cat((self.target, other.target))
        )


def _loss(net: nn.Module, pairs: AnalysisPairs, idx: Tensor, index: Tensor, dtype: torch.dtype) -> Tensor:
    xf = pairs.xf[idx].to(dtype)
    d, mask = grid_inputs(xf, pairs.y[idx].to(dtype), index)
    return ((net(xf, d, mask) - pairs.target[idx].to(dtype)) ** 2).mean()


def _evaluate(net: nn.Module, pairs: AnalysisPairs, index: Tensor, dtype: torch.dtype, batch: int = 4096) -> float:
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(pairs), batch):
            idx = torch.arange(start, min(start + batch, len(pairs)))
            total += float(_loss(net, pairs, idx, index, dtype)) * len(idx)
    return total / max(len(pairs), 1)


def fit_cnn_analysis(
    net: CNNAnalysisNet,
    train: AnalysisPairs,
    valid: AnalysisPairs,
    index: Tensor,
    *,
    epochs: int = 50,
    batch_size: int = 256,
    lr: float = 1e-3,
    patience: int = 8,
    time_limit_s: float | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> FitResult:
    """Fit ``net`` to the pairs by Adam on the MSE; early stopping on ``valid``, best weights restored.

    ``index`` ``(p,)``: the grid point each observation sees. The learning
    rate decays by cosine annealing over ``epochs``. Returns the per-epoch
    history (train / valid loss, lr) in a :class:`~hybrida.learn.train.FitResult`.
    """
    if epochs < 1 or batch_size < 1 or not lr >= 0:
        raise ValueError(f"fit_cnn_analysis: need epochs >= 1, batch_size >= 1, lr >= 0; got {epochs}, {batch_size}, {lr}")
    if len(train) == 0 or len(valid) == 0:
        raise ValueError("fit_cnn_analysis: train and valid must hold at least one pair")
    dtype = next(net.parameters()).dtype
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr * 0.02)
    res = FitResult(history={"train": [], "valid": [], "lr": []})
    best_state = copy.deepcopy(net.state_dict())
    res.best_loss = _evaluate(net, valid, index, dtype)
    t0 = time.perf_counter()
    bad = 0
    bar = tqdm(range(epochs), desc="cnn analysis", disable=not progress, leave=False)
    for epoch in bar:
        net.train()
        perm = torch.randperm(len(train), generator=gen)
        total = 0.0
        for start in range(0, len(train), batch_size):
            idx = perm[start : start + batch_size]
            loss = _loss(net, train, idx, index, dtype)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        net.eval()
        v = _evaluate(net, valid, index, dtype)
        res.history["train"].append(total / len(train))
        res.history["valid"].append(v)
        res.history["lr"].append(opt.param_groups[0]["lr"])
        res.epochs_run = epoch + 1
        bar.set_postfix(train=f"{total / len(train):.4f}", valid=f"{v:.4f}")
        if not math.isfinite(v):
            res.stopped = "nonfinite"
            break
        if v < res.best_loss:
            res.best_loss, res.best_epoch, bad = v, epoch, 0
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


def cycle_forecasts(
    net: nn.Module,
    model: Model,
    x0: Tensor,
    y: Tensor,
    index: Tensor,
    steps_per_cycle: int,
) -> tuple[Tensor, Tensor]:
    """Cycle the learned analysis over ``B`` segments at once: forecasts and analyses ``(K, B, n)``.

    ``x0`` ``(B, n)``: the analyses at the segment starts; ``y`` ``(K, B, p)``:
    the observations of cycles 1..K of each segment. A forecast that becomes
    non-finite stops the segment: its remaining rows are NaN (dropped by the
    caller).
    """
    dtype = next(net.parameters()).dtype
    x = x0.clone()
    forecasts, analyses = [], []
    with torch.no_grad():
        for k in range(y.shape[0]):
            xf = model.forecast(x, steps_per_cycle)
            xn = xf.to(dtype)
            d, mask = grid_inputs(xn, y[k].to(dtype), index)
            x = net(xn, d, mask).to(x0.dtype)
            forecasts.append(xf)
            analyses.append(x)
            bad = ~torch.isfinite(x).all(-1)
            if bool(bad.any()):
                x = torch.where(bad.unsqueeze(-1), torch.full_like(x, math.nan), x)
    return torch.stack(forecasts), torch.stack(analyses)


def pairs_from_cycle(forecasts: Tensor, y: Tensor, target: Tensor, clip: float | None = None) -> AnalysisPairs:
    """Flatten ``(K, B, .)`` forecasts, observations and targets into pairs, dropping non-finite forecasts.

    ``clip``: also drop forecasts whose error against the target exceeds it
    (rmse over the state): a diverged segment teaches nothing useful.
    """
    xf, yy, tt = forecasts.flatten(0, 1), y.flatten(0, 1), target.flatten(0, 1)
    keep = torch.isfinite(xf).all(-1)
    if clip is not None:
        keep &= ((xf - tt) ** 2).mean(-1).sqrt() <= clip
    return AnalysisPairs(xf[keep], yy[keep], tt[keep])


@dataclass
class Segments:
    """Training or validation segments cycled in a batch: starts ``(B, n)``, observations ``(K, B, p)``, targets ``(K, B, n)``."""

    starts: Tensor
    y: Tensor
    target: Tensor

    def __post_init__(self) -> None:
        B, n = self.starts.shape
        if self.y.ndim != 3 or self.y.shape[1] != B or self.target.shape != (self.y.shape[0], B, n):
            raise ValueError(
                f"Segments: need starts (B, n), y (K, B, p), target (K, B, n); got {tuple(self.starts.shape)}, "
                f"{tuple(self.y.shape)}, {tuple(self.target.shape)}"
            )

    def cycle(self, net: nn.Module, model: Model, index: Tensor, steps_per_cycle: int) -> tuple[Tensor, Tensor]:
        """Forecasts and analyses ``(K, B, n)`` of ``net`` cycled over the segments."""
        return cycle_forecasts(net, model, self.starts, self.y, index, steps_per_cycle)


def cycled_rmse(analyses: Tensor, target: Tensor, skip: int = 0) -> float:
    """Time- and segment-mean analysis rmse over the state, after ``skip`` cycles of each segment (NaN rows count as inf)."""
    err = ((analyses[skip:] - target[skip:]) ** 2).mean(-1).sqrt()
    return float(torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf)).mean())


def fit_online(
    net: CNNAnalysisNet,
    model: Model,
    first: AnalysisPairs,
    first_valid: AnalysisPairs,
    train: Segments,
    valid: Segments,
    index: Tensor,
    steps_per_cycle: int,
    *,
    rounds: int = 3,
    epochs: int = 30,
    epochs_online: int = 10,
    max_pairs: int | None = None,
    clip: float = 5.0,
    skip: int = 10,
    lr: float = 1e-3,
    lr_online: float | None = None,
    log: Callable[[str], None] | None = None,
    **fit_kwargs: Any,
) -> tuple[list[FitResult], list[float]]:
    """Offline fit on ``first`` (a classical cycle's forecasts), then ``rounds`` of cycle-and-refit.

    Each round cycles ``net`` over the training segments, adds the pairs it
    met to the training set (keeping the newest ``max_pairs``) and refits for
    ``epochs_online`` epochs from the current weights (learning rate
    ``lr_online``, default ``lr``: a smaller one keeps what was learnt), with early stopping on
    the pairs met when cycling the validation segments. The weights kept are
    those of the round with the lowest cycled validation rmse (after ``skip``
    cycles of each segment). Returns the fits and the cycled validation rmse
    after each of them.
    """
    results = [fit_cnn_analysis(net, first, first_valid, index, epochs=epochs, lr=lr, **fit_kwargs)]
    lr_online = lr if lr_online is None else lr_online
    scores: list[float] = []
    best, best_state = math.inf, copy.deepcopy(net.state_dict())
    data = first
    for r in range(rounds + 1):
        fv, av = valid.cycle(net, model, index, steps_per_cycle)
        score = cycled_rmse(av, valid.target, skip)
        scores.append(score)
        if log is not None:
            log(f"round {r}: cycled validation rmse_a {score:.4f}")
        if score < best:
            best, best_state = score, copy.deepcopy(net.state_dict())
        if r == rounds:
            break
        fc, _ = train.cycle(net, model, index, steps_per_cycle)
        data = data.cat(pairs_from_cycle(fc, train.y, train.target, clip))
        if max_pairs is not None and len(data) > max_pairs:
            data = AnalysisPairs(data.xf[-max_pairs:], data.y[-max_pairs:], data.target[-max_pairs:])
        new_valid = pairs_from_cycle(fv, valid.y, valid.target, clip)
        if len(new_valid) == 0:
            new_valid = first_valid
        results.append(
            fit_cnn_analysis(net, data, new_valid, index, epochs=epochs_online, lr=lr_online, **fit_kwargs)
        )
    net.load_state_dict(best_state)
    return results, scores
