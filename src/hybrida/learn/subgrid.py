"""Learning the QG subgrid PV forcing from high-resolution runs (Ross et al. 2023, offline training).

Data: high-resolution trajectories, coarse-grained; each sample is the coarse
PV ̄q and its subgrid forcing S_q = ̄(dq/dt)_hi − (dq/dt)_lo(̄q)
(:func:`hybrida.models.qg_subgrid.subgrid_forcing`). Training: MSE of the
per-layer normalised forcing, Adam, early stopping on held-out trajectories.
Offline skill: R² = 1 − Σ(S − Ŝ)² / Σ(S − mean S)² per layer, and the
correlation of Ŝ with S (Ross et al.'s offline metrics).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hybrida.io.atomic import atomic_write
from hybrida.learn.persist import build_network, network_spec, read_payload
from hybrida.models.qg import QGModel
from hybrida.models.qg_subgrid import ParametrizedQG, coarsen, refine, subgrid_forcing

DAY = 86400.0
#: the QGModel parameters saved with a parametrisation
QG_KEYS = ("nx", "ny", "L", "W", "beta", "rd", "delta", "U1", "U2", "rek", "filterfac", "dt", "scheme")


@dataclass
class SubgridSamples:
    """Coarse PV ``q`` and forcing ``S``, both ``(T, R, lo.n)`` (T times, R trajectories)."""

    q: Tensor
    S: Tensor
    t_days: Tensor


def simulate(
    hi: QGModel,
    lo: QGModel,
    trajectories: int,
    days: int,
    every_days: int = 1,
    spinup_days: int = 720,
    adjust_days: int = 60,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> SubgridSamples:
    """Coarse states and subgrid forcings along ``trajectories`` independent high-resolution runs.

    The runs start from pyqg's random initial PV (one draw per trajectory from
    ``seed``), are spun up for ``spinup_days`` on a grid of half the high
    resolution (cheaper; the eddies saturate after ~2 years), spectrally
    interpolated to the high resolution and adjusted there for ``adjust_days``;
    then every ``every_days`` for ``days`` days a sample is taken.
    """
    if trajectories < 1 or days < 1 or every_days < 1 or spinup_days < 0 or adjust_days < 0:
        raise ValueError("simulate: trajectories, days, every_days >= 1 and spin-up days >= 0 needed")
    mid = QGModel(nx=hi.nx // 2, ny=hi.ny // 2, L=hi.L, W=hi.W, beta=hi.beta, rd=hi.rd, delta=hi.delta,
                  U1=hi.U1, U2=hi.U2, rek=hi.rek, filterfac=hi.filterfac, dt=2 * hi.dt)
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([mid.random_state(g) for _ in range(trajectories)])
    steps_day = round(DAY / hi.dt)
    qs, Ss = [], []
    with torch.no_grad():
        x = mid.forecast(x, round(spinup_days * DAY / mid.dt))
        x = hi.forecast(refine(mid, hi, x), adjust_days * steps_day)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"simulate: the high-resolution run blew up (dt={hi.dt} too large?)")
        for k in range(days // every_days):
            x = hi.forecast(x, every_days * steps_day)
            qs.append(coarsen(hi, lo, x))
            Ss.append(subgrid_forcing(hi, lo, x))
            if progress is not None and (k + 1) % 30 == 0:
                progress(f"high-resolution run: day {(k + 1) * every_days} of {days}")
    t = torch.arange(1, len(qs) + 1, dtype=torch.float64) * every_days
    return SubgridSamples(torch.stack(qs), torch.stack(Ss), t)


def layer_std(v: Tensor, lo: QGModel) -> Tensor:
    """Per-layer standard deviation ``(2,)`` of fields ``(..., lo.n)``."""
    return lo.to_grid(v).transpose(-3, 0).reshape(2, -1).std(-1)


@dataclass
class SubgridFit:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val: float = math.inf
    train_s: float = 0.0
    stopped: str = ""


def _normalise(v: Tensor, scale: Tensor, lo: QGModel) -> Tensor:
    return (lo.to_grid(v).reshape(-1, 2, lo.ny, lo.nx) / scale.reshape(1, 2, 1, 1)).float()


def fit_subgrid(
    net: nn.Module,
    lo: QGModel,
    train: SubgridSamples,
    valid: SubgridSamples,
    q_scale: Tensor,
    s_scale: Tensor,
    epochs: int = 60,
    lr: float = 1e-3,
    batch_size: int = 32,
    patience: int = 8,
    max_minutes: float = 30.0,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> SubgridFit:
    """Fit ``net`` to the normalised forcing by MSE; the best validation weights are restored."""
    if not lr > 0 or epochs < 1 or batch_size < 1:
        raise ValueError(f"fit_subgrid: need lr > 0, epochs >= 1, batch_size >= 1 (got {lr}, {epochs}, {batch_size})")
    zq, zs = _normalise(train.q, q_scale, lo), _normalise(train.S, s_scale, lo)
    vq, vs = _normalise(valid.q, q_scale, lo), _normalise(valid.S, s_scale, lo)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs, eta_min=lr / 20)
    res, best, bad = SubgridFit(), copy.deepcopy(net.state_dict()), 0
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        net.train()
        perm = torch.randperm(zq.shape[0], generator=g)
        total = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            loss = (net(zq[idx]) - zs[idx]).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        net.eval()
        with torch.no_grad():
            val = float((net(vq) - vs).pow(2).mean())
        res.history.append({"epoch": epoch, "train": total / len(perm), "valid": val})
        if progress is not None:
            progress(f"subgrid epoch {epoch}: train {total / len(perm):.4f}, valid {val:.4f}")
        if val < res.best_val:
            res.best_val, res.best_epoch, best, bad = val, epoch, copy.deepcopy(net.state_dict()), 0
        else:
            bad += 1
        if bad >= patience:
            res.stopped = f"early stop: no validation gain in {patience} epochs"
            break
        if time.perf_counter() - t0 > 60 * max_minutes:
            res.stopped = f"time budget {max_minutes} min"
            break
    else:
        res.stopped = f"{epochs} epochs"
    net.load_state_dict(best)
    net.eval()
    res.train_s = time.perf_counter() - t0
    return res


def offline_skill(model_lo: QGModel, samples: SubgridSamples) -> dict[str, list[float]]:
    """Per-layer R² and correlation of the model's S_θ(̄q) against the true forcing S."""
    with torch.no_grad():
        pred = model_lo.forcing(samples.q.reshape(-1, model_lo.n))
    p = model_lo.to_grid(pred).transpose(0, 1).reshape(2, -1)
    s = model_lo.to_grid(samples.S.reshape(-1, model_lo.n)).transpose(0, 1).reshape(2, -1)
    r2 = 1.0 - (s - p).pow(2).sum(-1) / (s - s.mean(-1, keepdim=True)).pow(2).sum(-1)
    sc, pc = s - s.mean(-1, keepdim=True), p - p.mean(-1, keepdim=True)
    corr = (sc * pc).sum(-1) / (sc.norm(dim=-1) * pc.norm(dim=-1)).clamp_min(1e-300)
    return {"r2": r2.tolist(), "corr": corr.tolist()}


FORMAT, VERSION = "hybrida-qg-subgrid", 1


def save_parametrization(path: str | Path, model: ParametrizedQG) -> Path:
    """Write the network, its normalisation and the low-resolution model's parameters (atomically)."""
    if model.net is None:
        raise ValueError("save_parametrization: the model has no network")
    payload = {
        "format": FORMAT, "version": VERSION, "network": network_spec(model.net),
        "state_dict": model.net.state_dict(), "q_scale": model.q_scale.flatten(), "s_scale": model.s_scale.flatten(),
        "qg": {k: getattr(model, k) for k in QG_KEYS},
    }
    return atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def load_parametrized_qg(path: str | Path, **params: Any) -> ParametrizedQG:
    """The :class:`ParametrizedQG` saved at ``path`` (``params`` override non-grid QG parameters)."""
    import hybrida.nn.subgrid_cnn  # noqa: F401  (registers PeriodicFCNN)

    payload = read_payload(path, FORMAT, VERSION, "QG subgrid parametrisation")
    qg = dict(payload["qg"])
    for key in ("nx", "ny", "L", "W"):
        if key in params and params[key] != qg[key]:
            raise ValueError(f"{path}: trained for {key}={qg[key]}, got {key}={params[key]}")
    qg.update(params)
    net = build_network(payload, path)
    net.load_state_dict(payload["state_dict"])
    net.eval()
    return ParametrizedQG(net=net, q_scale=payload["q_scale"], s_scale=payload["s_scale"], **qg)
