"""Fitting a learned observation operator H_theta to collocated (state, observation) pairs.

Loss (masked MSE in normalised observation units, NaN observations skipped):

    L(theta) = sum_{t,c} m_tc ((H_theta(x_t)_c - y_tc) / sigma_y,c)^2 / sum_{t,c} m_tc.

With y = H(x) + e and e independent of x, the minimiser is E[y | x] = H(x):
noisy observations are fine targets. The states x_t are the truth (twins,
an upper bound) or analyses (the realistic case: analysis errors in the
inputs attenuate the fitted slopes by ~var(x)/(var(x)+var(x_a - x)), and
analyses that assimilated the same y_t are pulled towards it; both are
small when analysis errors are small against the state's variability).
Adam (Kingma & Ba 2015); validation on the *last* ``valid_fraction`` of the
pairs (a time split: neighbouring cycles are correlated); early stopping on
it restoring the best weights (Prechelt 1998); learning rate halved after
``patience // 3`` epochs without improvement.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hybrida.learn.train import FitResult
from hybrida.observations.base import Observation
from hybrida.observations.learned import LearnedOperator, LocalChannelNet

__all__ = ["collocated_pairs", "fit_obs_operator"]

log = logging.getLogger(__name__)


def collocated_pairs(states: Tensor, observations: Sequence[Observation]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack (x_k, y_k) for cycles k = 1..K: returns states (K, n), observations (K, p), locations (p,).

    ``states``: (K + 1, n) (row 0 = cycle 0, which has no observations, as in
    a :class:`~hybrida.experiment.twin.Twin` truth or a reanalysis mean) or
    (K, n). Pass the truth for truth pairs, analysis means for analysis pairs.
    The network must be the same every cycle (same p and locations).
    """
    K = len(observations)
    if K == 0:
        raise ValueError("collocated_pairs: no observations")
    if states.ndim != 2 or states.shape[0] not in (K, K + 1):
        raise ValueError(
            f"collocated_pairs: states must have shape ({K} or {K + 1}, n), got {tuple(states.shape)}"
        )
    x = states[-K:]
    loc0 = observations[0].locations
    if loc0 is None:
        raise ValueError("collocated_pairs: observations have no locations")
    for k, o in enumerate(observations):
        if o.p != observations[0].p or o.locations is None or not torch.equal(o.locations, loc0):
            raise ValueError(f"collocated_pairs: the network changes at cycle {k + 1}; need a fixed network")
    y = torch.stack([o.y for o in observations]).to(x.dtype)
    return x.detach(), y.detach(), loc0.clone()


def _masked_mse(op: LearnedOperator, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
    r = (op(x) - y) / op.y_std.to(x)
    return (m * r * r).sum() / m.sum().clamp_min(1.0)


def fit_obs_operator(
    states: Tensor,
    observations: Tensor,
    locations: Tensor | Sequence[float],
    *,
    net: nn.Module | None = None,
    half_window: int = 4,
    hidden: int = 32,
    depth: int = 2,
    valid_fraction: float = 0.2,
    epochs: int = 300,
    batch_size: int = 128,
    lr: float = 3e-3,
    patience: int = 20,
    min_delta: float = 1e-4,
    time_limit_s: float | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    meta: dict | None = None,
) -> tuple[LearnedOperator, FitResult]:
    """Train H_theta on pairs ``states`` (T, n) -> ``observations`` (T, p) (NaN = missing); returns (operator, result).

    ``net`` maps a normalised state (..., n) to (..., p); default
    :class:`~hybrida.observations.learned.LocalChannelNet` (``half_window``,
    ``hidden``, ``depth``) at ``locations``. Normalisation: pooled mean/std
    of the training states, per-channel mean/std of the training
    observations. An epoch improves when the validation loss drops by a
    relative ``min_delta``; ``patience`` epochs without one stop training.
    ``seed`` fixes the initialisation and the batch order.
    Weights train in ``dtype`` (float32 default) and serve float64 states
    through a differentiable cast. Progress goes to ``logging`` (INFO). The
    operator comes back in eval mode with its weights frozen (``requires_grad``
    False), as DA needs only derivatives with respect to the state.
    """
    x = torch.as_tensor(states)
    y = torch.as_tensor(observations)
    loc = torch.as_tensor(locations, dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or y.shape[1] != loc.numel():
        raise ValueError(
            f"fit_obs_operator: need states (T, n), observations (T, p), locations (p,); got "
            f"{tuple(x.shape)}, {tuple(y.shape)}, {tuple(loc.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError("fit_obs_operator: states must be finite")
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"fit_obs_operator: valid_fraction must be in (0, 1), got {valid_fraction}")
    T, n = x.shape
    cut = T - max(1, round(valid_fraction * T))
    if cut < 2:
        raise ValueError(f"fit_obs_operator: {T} pairs are too few to split")
    x = x.to(dtype)
    mask = torch.isfinite(y).to(dtype)
    y = torch.nan_to_num(y, nan=0.0).to(dtype)
    xt, yt, mt = x[:cut], y[:cut], mask[:cut]
    cnt = mt.sum(0).clamp_min(1.0)
    y_mean = (yt * mt).sum(0) / cnt
    y_std = (((yt - y_mean) ** 2 * mt).sum(0) / cnt).sqrt().clamp_min(1e-6)
    if net is None:
        net = LocalChannelNet(n, loc.tolist(), half_window, hidden, depth, seed=seed)
    op = LearnedOperator(
        net.to(dtype), n, loc, xt.mean(), xt.std(), y_mean, y_std, meta=meta
    )
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(op.net.parameters(), lr=lr)
    res = FitResult(history={"train": [], "valid": [], "lr": []})
    best = copy.deepcopy(op.net.state_dict())
    since, t0 = 0, time.perf_counter()
    for epoch in range(int(epochs)):
        op.train()
        perm = torch.randperm(cut, generator=gen)
        total = 0.0
        for i in range(0, cut, batch_size):
            b = perm[i : i + batch_size]
            loss = _masked_mse(op, xt[b], yt[b], mt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        op.eval()
        with torch.no_grad():
            valid = float(_masked_mse(op, x[cut:], y[cut:], mask[cut:]))
        res.history["train"].append(total / cut)
        res.history["valid"].append(valid)
        res.history["lr"].append(opt.param_groups[0]["lr"])
        res.epochs_run = epoch + 1
        if not math.isfinite(valid):
            res.stopped = "nonfinite"
            break
        if valid < res.best_loss * (1.0 - min_delta):
            res.best_loss, res.best_epoch, since = valid, epoch, 0
            best = copy.deepcopy(op.net.state_dict())
        else:
            since += 1
            if since % max(1, patience // 3) == 0:
                for group in opt.param_groups:
                    group["lr"] *= 0.5
        if epoch % 10 == 0:
            log.info("fit_obs_operator epoch %d: train %.4g valid %.4g", epoch, total / cut, valid)
        if since >= patience:
            res.stopped = "patience"
            break
        if time_limit_s is not None and time.perf_counter() - t0 > time_limit_s:
            res.stopped = "time_limit"
            break
    op.net.load_state_dict(best)
    res.wall_s = time.perf_counter() - t0
    log.info(
        "fit_obs_operator: %d epochs (%s), best valid %.4g at epoch %d, %.1f s",
        res.epochs_run, res.stopped, res.best_loss, res.best_epoch, res.wall_s,
    )
    # frozen for DA: the analyses differentiate H with respect to x only (op.requires_grad_() to fine-tune)
    return op.eval().requires_grad_(False), res
