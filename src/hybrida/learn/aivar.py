"""Training of AI-Var: minimise the mean 3D-Var cost of the network's analyses over training cases.

Keller & Potthast (2024, arXiv:2406.00390): the loss is the variational cost
itself, L(θ) = mean_k J_k(f_θ(x_b,k, y_k, m_k)) with
J(x) = 1/2|x - x_b|^2_{B^-1} + 1/2|y - H(x)|^2_{R^-1} over the observed
entries, so no truth and no analyses are needed. To serve partial networks of
the same size, each epoch draws new random masks: a fraction ``full_fraction``
of the cases keeps all its (finite) observations, the others drop each with a
rate drawn uniformly in [0, ``drop_max``]. Adam (Kingma & Ba 2015), the
learning rate halved on a validation plateau (``schedule="plateau"``) or
annealed to 0 over the epochs by a half cosine (``schedule="cosine"``,
Loshchilov & Hutter 2017; it runs all its epochs), early stopping on the mean
validation cost (plateau schedule only), restoring the best weights (Prechelt 1998).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from hybrida.assimilation.learned.aivar import AIVarNet, innovation, krylov_vectors, threedvar_cost
from hybrida.assimilation.variational.climatology import psd_sqrt
from hybrida.learn.train import FitResult

__all__ = ["aivar_loss", "fit_aivar", "inverse_sqrt", "random_masks", "set_normalisation"]


def inverse_sqrt(B: Tensor) -> Tensor:
    """Symmetric B^{-1/2} = U diag(λ^{-1/2}) U^T of a positive-definite B (ValueError if it is not)."""
    lam, U = torch.linalg.eigh(B)
    if not bool((lam > 0).all()):
        raise ValueError(f"B must be positive definite for AI-Var's cost; smallest eigenvalue {float(lam.min()):.3g}")
    return (U * lam.rsqrt()) @ U.mT


def random_masks(
    y: Tensor, full_fraction: float, drop_max: float, generator: torch.Generator | None = None
) -> Tensor:
    """Boolean masks (K, p): isfinite(y), and for a random 1 - ``full_fraction`` of the rows a random drop-out.

    A dropped row loses each observation with probability r ~ U(0, ``drop_max``).
    """
    K, p = y.shape
    keep_all = torch.rand(K, 1, generator=generator, dtype=torch.float64) < full_fraction
    rate = torch.rand(K, 1, generator=generator, dtype=torch.float64) * drop_max
    keep = torch.rand(K, p, generator=generator, dtype=torch.float64) >= rate
    return torch.isfinite(y) & (keep | keep_all).to(y.device)


def aivar_loss(net: AIVarNet, xb: Tensor, y: Tensor, mask: Tensor, operator, B_inv_sqrt: Tensor, R: Tensor) -> Tensor:
    """Mean 3D-Var cost J of the network's analyses f_θ(x_b, y, m) over a batch (the AI-Var loss)."""
    d = innovation(y, operator(xb), mask)
    adj = krylov_vectors(xb, d, mask, operator, R, net.B_sqrt @ net.B_sqrt, net.krylov) if net.grad_feature else None
    xa = net(xb, d, mask, adj)
    return threedvar_cost(xa, xb, y, mask, operator, B_inv_sqrt, R).mean()


@torch.no_grad()
def set_normalisation(net: AIVarNet, B: Tensor, xb: Tensor, y: Tensor, operator, R: Tensor | None = None) -> None:
    """Give ``net`` B^{1/2} and the input normalisation from training backgrounds and observations.

    With ``net.krylov >= 1`` the scales of its Krylov vectors g_j (all finite observations) need ``R``.
    """
    mask = torch.isfinite(y)
    d = innovation(y, operator(xb), mask)
    dm = torch.where(mask, d, torch.full_like(d, float("nan")))
    d_scale = dm.pow(2).nanmean(0).sqrt().nan_to_num(1.0).clamp_min(1e-6)
    S = psd_sqrt(B)
    g_scale = None
    if net.grad_feature:
        if R is None:
            raise ValueError("set_normalisation: the gradient feature's scale needs R")
        a = krylov_vectors(xb, d, mask, operator, R, S @ S, net.krylov)
        g = (a.unflatten(-1, (net.krylov, -1)) @ S).flatten(-2)
        g_scale = g.pow(2).mean(0).sqrt().clamp_min(1e-6)
    net.set_statics(S, xb.mean(0), xb.std(0).clamp_min(1e-6), d_scale, g_scale)


def _check(xb: Tensor, y: Tensor, net: AIVarNet, what: str) -> None:
    n, p = net.config["n"], net.config["p"]
    if xb.ndim != 2 or xb.shape[-1] != n:
        raise ValueError(f"fit_aivar: {what} backgrounds must have shape (K, {n}), got {tuple(xb.shape)}")
    if y.shape != (xb.shape[0], p):
        raise ValueError(f"fit_aivar: {what} observations must have shape ({xb.shape[0]}, {p}), got {tuple(y.shape)}")
    if not bool(torch.isfinite(xb).all()):
        raise ValueError(f"fit_aivar: {what} backgrounds contain NaN or inf")


def fit_aivar(
    net: AIVarNet,
    xb: Tensor,
    y: Tensor,
    *,
    operator: Callable[[Tensor], Tensor],
    B: Tensor,
    R: Tensor,
    valid: tuple[Tensor, Tensor] | None = None,
    full_fraction: float = 0.5,
    drop_max: float = 0.5,
    epochs: int = 200,
    batch_size: int = 256,
    lr: float = 1e-3,
    patience: int = 20,
    schedule: str = "plateau",
    time_limit: float | None = None,
    normalise: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> FitResult:
    """Train ``net`` in place to minimise the mean 3D-Var cost; returns the loss history.

    ``xb`` (K, n) backgrounds and ``y`` (K, p) observations (NaN = missing)
    of the training cases; ``valid`` the same for validation (fixed masks
    drawn once). ``operator`` is H over (K, n) -> (K, p), ``B`` (n, n) the
    background-error covariance, ``R`` the observation-error variances (p,)
    or covariance (p, p). Stops after ``epochs``, ``patience`` epochs without
    a better validation cost, or ``time_limit`` seconds, and restores the best
    weights. ``schedule``: "plateau" halves the learning rate every
    ``patience // 3`` epochs without improvement; "cosine" sets it to
    lr (1 + cos(π e / epochs)) / 2 at epoch e and does not stop on patience
    (a restarted fit's validation cost first rises, then falls as the rate anneals). ``normalise`` first sets B^{1/2} and the input scales from the
    training data (:func:`set_normalisation`).
    """
    _check(xb, y, net, "training")
    if not 0.0 <= full_fraction <= 1.0 or not 0.0 <= drop_max < 1.0:
        raise ValueError(f"fit_aivar: need 0 <= full_fraction <= 1 and 0 <= drop_max < 1, got {full_fraction}, {drop_max}")
    if schedule not in ("plateau", "cosine"):
        raise ValueError(f"fit_aivar: schedule must be 'plateau' or 'cosine', got {schedule!r}")
    if epochs < 1 or batch_size < 1 or patience < 1 or not lr >= 0:
        raise ValueError(f"fit_aivar: need epochs, batch_size, patience >= 1 and lr >= 0; got {epochs}, {batch_size}, {patience}, {lr}")
    dtype = net.B_sqrt.dtype
    xb, y, B, R = (t.to(dtype) for t in (xb, y, B, R))
    if normalise:
        set_normalisation(net, B, xb, y, operator, R)
    B_is = inverse_sqrt(B)
    if valid is not None:
        xv, yv = (t.to(dtype) for t in valid)
        _check(xv, yv, net, "validation")
        mv = random_masks(yv, full_fraction, drop_max, generator)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    res = FitResult(history={"train": [], "valid": [], "lr": []})
    best_state, best, since, t0 = copy.deepcopy(net.state_dict()), math.inf, 0, time.perf_counter()
    K = xb.shape[0]
    bar = tqdm(range(epochs), desc="AI-Var", disable=not progress, leave=False)
    for epoch in bar:
        if schedule == "cosine":
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        net.train()
        masks = random_masks(y, full_fraction, drop_max, generator)
        order = torch.randperm(K, generator=generator)
        total = 0.0
        for i in range(0, K, batch_size):
            idx = order[i : i + batch_size]
            loss = aivar_loss(net, xb[idx], y[idx], masks[idx], operator, B_is, R)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        train = total / K
        net.eval()
        with torch.no_grad():
            score = float(aivar_loss(net, xv, yv, mv, operator, B_is, R)) if valid is not None else train
        res.history["train"].append(train)
        res.history["valid"].append(score if valid is not None else math.nan)
        res.history["lr"].append(opt.param_groups[0]["lr"])
        res.epochs_run = epoch + 1
        bar.set_postfix(J=f"{train:.4g}", J_valid=f"{score:.4g}")
        if not math.isfinite(score):
            res.stopped = "nonfinite"
            break
        if score < best and (math.isinf(best) or score < best - 1e-9 * abs(best)):
            best, best_state, since, res.best_epoch = score, copy.deepcopy(net.state_dict()), 0, epoch
        else:
            since += 1
            if schedule == "plateau" and since % max(patience // 3, 1) == 0:  # halve the learning rate
                for g in opt.param_groups:
                    g["lr"] *= 0.5
        if schedule == "plateau" and since >= patience:
            res.stopped = "patience"
            break
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            res.stopped = "time_limit"
            break
    net.load_state_dict(best_state)
    net.eval()
    res.best_loss = best
    res.wall_s = time.perf_counter() - t0
    return res
