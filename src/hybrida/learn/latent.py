"""Fitting reduced representations (POD, convolutional autoencoder) and a latent surrogate on snapshots.

The snapshots are states ``(T, n)`` of a free run (or a reanalysis). POD is the
SVD of the centred snapshot matrix (Lumley 1967); the autoencoder is trained with
Adam on the mean squared reconstruction error of standardised states, stopping
early on a validation set and restoring the best weights (Prechelt 1998); the
latent surrogate is a residual MLP trained on pairs of encoded states one cycle
apart (the latent forecast of Casas et al. 2020 / Peyron et al. 2021).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hybrida.assimilation.learned.latent import LatentSurrogate
from hybrida.assimilation.learned.latent_space import AutoencoderReduction, PODReduction, Reduction
from hybrida.nn.latent_autoencoder import PeriodicAutoencoder
from hybrida.nn.mlp import ResidualMLP


def _snapshots(X: Tensor, name: str) -> Tensor:
    X = torch.as_tensor(X)
    if X.ndim != 2 or X.shape[0] < 2:
        raise ValueError(f"{name} must be snapshots (T, n) with T >= 2, got shape {tuple(X.shape)}")
    if not X.is_floating_point():
        X = X.double()
    if not bool(torch.isfinite(X).all()):
        raise ValueError(f"{name} contains NaN or inf: remove those snapshots first")
    return X


def _check_latent(k: int, n: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"latent size must be an integer >= 1, got {k}")
    if k > n:
        raise ValueError(f"latent size {k} is larger than the state size n={n}: choose latent <= {n}")
    return int(k)


def fit_pod(snapshots: Tensor, latent: int) -> PODReduction:
    """POD of ``snapshots`` ``(T, n)``: the mean and the ``latent`` leading EOFs (right singular vectors)."""
    X = _snapshots(snapshots, "fit_pod: snapshots")
    k = _check_latent(latent, X.shape[-1])
    if k > X.shape[0]:
        raise ValueError(f"fit_pod: latent size {k} exceeds the number of snapshots {X.shape[0]}")
    mean = X.mean(0)
    _, s, Vh = torch.linalg.svd(X - mean, full_matrices=False)
    return PODReduction(mean, Vh[:k].mT.contiguous(), s)


@dataclass
class AutoencoderFit:
    """A trained autoencoder reduction with its history (train/valid rmse in state units) and timing."""

    reduction: AutoencoderReduction
    history: list[dict[str, float]] = field(default_factory=list)
    best_valid: float = math.inf
    train_s: float = 0.0
    cpu_s: float = 0.0
    epochs: int = 0
    stopped: str = ""


def reconstruction_rmse(reduction: Reduction, X: Tensor, batch: int = 4096) -> float:
    """Root-mean-square of x - decode(encode(x)) over snapshots ``(T, n)``."""
    se, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, X.shape[0], batch):
            b = X[i : i + batch]
            se += float(((reduction.reconstruct(b) - b) ** 2).sum())
            count += b.numel()
    return math.sqrt(se / max(count, 1))


def fit_autoencoder(
    train: Tensor,
    valid: Tensor,
    latent: int,
    *,
    channels: int = 16,
    levels: int = 2,
    kernel_size: int = 5,
    lr: float = 2e-3,
    batch: int = 128,
    max_epochs: int = 200,
    max_seconds: float = 300.0,
    patience: int = 10,
    pod_init: bool = True,
    bypass_lr: float = 0.1,
    generator: torch.Generator | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> AutoencoderFit:
    """Train a :class:`PeriodicAutoencoder` on snapshots ``train`` ``(T, n)``, early-stopped on ``valid``.

    Loss: mean squared reconstruction error of the standardised states (one scalar
    loc/scale of ``train``). Adam with a cosine-decayed learning rate over ``max_epochs``;
    stops after ``patience`` epochs without a better validation error, at ``max_epochs``
    or after ``max_seconds``; the best weights are restored. Float32 network. With
    ``pod_init`` the network's linear bypass starts at the POD of ``train``
    (:meth:`PeriodicAutoencoder.init_from_pod`), so training refines POD with a nonlinear
    correction; the bypass then learns at ``bypass_lr`` times ``lr`` (0 freezes it at POD), so
    the first steps do not undo POD. ``history[0]`` (epoch 0) is the error before training.
    """
    Xtr, Xva = _snapshots(train, "fit_autoencoder: train"), _snapshots(valid, "fit_autoencoder: valid")
    n = Xtr.shape[-1]
    if Xva.shape[-1] != n:
        raise ValueError(f"fit_autoencoder: valid has state size {Xva.shape[-1]}, train has {n}")
    k = _check_latent(latent, n)
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"fit_autoencoder: lr must be finite and >= 0, got {lr}")
    loc, scale = float(Xtr.mean()), float(Xtr.std())
    net = PeriodicAutoencoder(n, k, channels=channels, levels=levels, kernel_size=kernel_size, seed=seed).float()
    reduction = AutoencoderReduction(net, loc, scale)
    ztr = ((Xtr - loc) / scale).float()
    zva = ((Xva - loc) / scale).float()
    if pod_init:
        pod = fit_pod(ztr.double(), k)
        net.init_from_pod(pod.mean, pod.basis)
    bypass = [p for name, p in net.named_parameters() if name.startswith("lin_")] if pod_init else []
    others = [p for p in net.parameters() if all(p is not b for b in bypass)]
    groups = [{"params": others, "lr": lr}] + ([{"params": bypass, "lr": lr * bypass_lr}] if bypass else [])
    opt = torch.optim.Adam(groups, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(max_epochs, 1))
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    best, best_state, bad = math.inf, copy.deepcopy(net.state_dict()), 0
    fit = AutoencoderFit(reduction)
    with torch.no_grad():
        v0 = math.sqrt(float(((net(zva) - zva) ** 2).mean())) * scale
    fit.history.append({"epoch": 0, "train_rmse": math.nan, "valid_rmse": v0})
    best = v0
    for epoch in range(1, max_epochs + 1):
        net.train()
        perm = torch.randperm(ztr.shape[0], generator=gen)
        total = 0.0
        for i in range(0, len(perm), batch):
            xb = ztr[perm[i : i + batch]]
            loss = ((net(xb) - xb) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(xb)
        sched.step()
        net.eval()
        with torch.no_grad():
            v = float(((net(zva) - zva) ** 2).mean())
        rec = {"epoch": epoch, "train_rmse": math.sqrt(total / len(perm)) * scale, "valid_rmse": math.sqrt(v) * scale}
        fit.history.append(rec)
        if progress is not None:
            progress(f"autoencoder epoch {epoch}: train rmse {rec['train_rmse']:.4f}, valid {rec['valid_rmse']:.4f}")
        if rec["valid_rmse"] < best:
            best, best_state, bad = rec["valid_rmse"], copy.deepcopy(net.state_dict()), 0
        else:
            bad += 1
        fit.epochs = epoch
        if bad >= patience:
            fit.stopped = "patience"
            break
        if time.perf_counter() - t0 > max_seconds:
            fit.stopped = "time"
            break
    else:
        fit.stopped = "max_epochs"
    net.load_state_dict(best_state)
    net.eval()
    reduction.refresh()
    fit.best_valid, fit.train_s, fit.cpu_s = best, time.perf_counter() - t0, time.process_time() - c0
    return fit


@dataclass
class SurrogateFit:
    """A trained latent surrogate with its validation history (one-cycle latent rmse)."""

    surrogate: LatentSurrogate
    history: list[dict[str, float]] = field(default_factory=list)
    train_s: float = 0.0
    cpu_s: float = 0.0


def fit_latent_surrogate(
    reduction: Reduction,
    train: Tensor,
    valid: Tensor,
    steps: int,
    *,
    width: int = 128,
    blocks: int = 2,
    lr: float = 1e-3,
    batch: int = 128,
    max_epochs: int = 100,
    max_seconds: float = 120.0,
    patience: int = 10,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> SurrogateFit:
    """Train z_{c+1} = z_c + net(z_c) on encoded trajectories ``(T, n)`` whose rows are one cycle apart.

    ``steps`` (model steps per row) is recorded with the surrogate. Loss: mean squared
    error of the standardised one-cycle increment; early stopping on ``valid``.
    """
    Xtr, Xva = _snapshots(train, "fit_latent_surrogate: train"), _snapshots(valid, "fit_latent_surrogate: valid")
    with torch.no_grad():
        Ztr, Zva = reduction.encode(Xtr).float(), reduction.encode(Xva).float()
    k = Ztr.shape[-1]
    loc, scale = Ztr.mean(0), Ztr.std(0).clamp_min(1e-6)
    net = ResidualMLP(k, width=width, blocks=blocks, seed=seed).float()

    def pairs(Z: Tensor) -> tuple[Tensor, Tensor]:
        return (Z[:-1] - loc) / scale, (Z[1:] - Z[:-1]) / scale

    xtr, ytr = pairs(Ztr)
    xva, yva = pairs(Zva)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    best, best_state, bad = math.inf, copy.deepcopy(net.state_dict()), 0
    history: list[dict[str, float]] = []
    for epoch in range(1, max_epochs + 1):
        net.train()
        perm = torch.randperm(xtr.shape[0], generator=gen)
        for i in range(0, len(perm), batch):
            idx = perm[i : i + batch]
            loss = ((net(xtr[idx]) - ytr[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            v = float((((net(xva) - yva) * scale) ** 2).mean().sqrt())
        history.append({"epoch": epoch, "valid_latent_rmse": v})
        if progress is not None:
            progress(f"latent surrogate epoch {epoch}: valid one-cycle latent rmse {v:.4f}")
        if v < best:
            best, best_state, bad = v, copy.deepcopy(net.state_dict()), 0
        else:
            bad += 1
        if bad >= patience or time.perf_counter() - t0 > max_seconds:
            break
    net.load_state_dict(best_state)
    sur = LatentSurrogate(net, steps, loc.double(), scale.double())
    return SurrogateFit(sur, history, time.perf_counter() - t0, time.process_time() - c0)


def encoded_climatology(reduction: Reduction, snapshots: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``(k,)`` and covariance ``(k, k)`` of the encoded snapshots: the latent background statistics."""
    X = _snapshots(snapshots, "encoded_climatology: snapshots")
    with torch.no_grad():
        Z = reduction.encode(X).double()
    mean = Z.mean(0)
    A = Z - mean
    return mean, A.mT @ A / (Z.shape[0] - 1)


__all__ = [
    "AutoencoderFit",
    "SurrogateFit",
    "encoded_climatology",
    "fit_autoencoder",
    "fit_latent_surrogate",
    "fit_pod",
    "reconstruction_rmse",
]
