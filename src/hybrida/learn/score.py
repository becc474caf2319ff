"""Training of a diffusion prior over trajectory windows by denoising score matching.

Loss (ε-parametrised denoising score matching, Ho et al. 2020; Rozet & Louppe 2023, eq. 6):

    L(θ) = E_{z, t ~ U(0, 1), ε ~ N(0, I)} |ε_θ(μ(t) z + σ(t) ε, t) - ε|²

on normalised windows z = (x - loc) / scale cut from a long free run (or a reanalysis),
with the VP cosine schedule (μ, σ) of :func:`hybrida.assimilation.learned.score.vp_schedule`.
Adam with an optional linear warm-up then cosine learning-rate decay; optionally an
exponential moving average (EMA) of the weights (Polyak averaging, standard for diffusion
models: Song & Ermon 2020; Ho et al. 2020), which are then the weights validated, kept and
returned. The validation loss uses fixed (seeded) times and noise so successive values
compare; early stopping restores the best weights (Prechelt 1998); checkpoints every
validation so an interrupted fit resumes where it stopped.
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

from hybrida.assimilation.learned.base import network_payload, rebuild_network
from hybrida.assimilation.learned.score import NetworkPrior, vp_schedule
from hybrida.io.checkpoint import atomic_torch_save

__all__ = [
    "ScoreFit", "WeightAverage", "denoising_loss", "fit_score", "load_score_prior", "lr_factor", "save_score_prior",
    "windows_of",
]

PRIOR_FORMAT = "hybrida.score_prior"


def windows_of(trajectory: Tensor, length: int, stride: int = 1) -> Tensor:
    """Overlapping windows ``(W, length, n)`` of a trajectory ``(T, n)`` (or ``(S, T, n)``), ``stride`` apart."""
    if trajectory.ndim == 2:
        trajectory = trajectory.unsqueeze(0)
    if trajectory.ndim != 3 or trajectory.shape[1] < length or length < 1 or stride < 1:
        raise ValueError(f"windows_of: need trajectories (S, T >= {length}, n) and stride >= 1, "
                         f"got {tuple(trajectory.shape)}, stride {stride}")
    w = trajectory.unfold(1, length, stride)  # (S, W, n, L)
    return w.permute(0, 1, 3, 2).reshape(-1, length, trajectory.shape[-1]).contiguous()


def denoising_loss(net: nn.Module, z: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """Mean |ε_θ(μ(t) z + σ(t) ε, t) - ε|² over windows ``z`` ``(B, L, n)``, times ``(B,)`` and noise ε."""
    mu, sigma = vp_schedule(t)
    zt = mu.view(-1, 1, 1) * z + sigma.view(-1, 1, 1) * eps
    return (net(zt, t) - eps).pow(2).mean()


def lr_factor(step: int, *, lr: float, lr_final: float, max_steps: int, warmup: int = 0) -> float:
    """Learning-rate multiplier of step ``step``: linear warm-up over ``warmup`` steps, cosine lr → lr_final.

    The cosine part is CosineAnnealingLR's closed form (lr at step 0, ``min(lr, lr_final)`` at
    ``max_steps`` and after); the warm-up scales it by ``(step + 1) / warmup`` for the first steps.
    """
    if lr <= 0:
        return 1.0
    final = min(lr, lr_final)
    s = min(step, max_steps)
    cosine = final + 0.5 * (lr - final) * (1.0 + math.cos(math.pi * s / max(max_steps, 1)))
    ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    return ramp * cosine / lr


class WeightAverage:
    """Exponential moving average of a network's floating-point parameters and buffers.

    After update k (k = 1, 2, …) with the current weights θ_k the average is
    ``θ̄_k = β_k θ̄_{k-1} + (1 - β_k) θ_k`` with ``β_k = min(decay, (1 + k) / (10 + k))``
    (the usual short-memory start, so early averages are not dominated by the initial weights).
    ``decay`` in [0, 1); 0 keeps the current weights.
    """

    def __init__(self, net: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"WeightAverage: decay must be in [0, 1), got {decay}")
        self.decay, self.updates = float(decay), 0
        self.net = copy.deepcopy(net)
        for p in self.net.parameters():
            p.requires_grad_(False)

    def update(self, net: nn.Module) -> None:
        """Fold the current weights of ``net`` into the average."""
        self.updates += 1
        beta = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        with torch.no_grad():
            for avg, cur in zip(self.net.state_dict().values(), net.state_dict().values()):
                if avg.is_floating_point():
                    avg.mul_(beta).add_(cur.detach(), alpha=1.0 - beta)
                else:
                    avg.copy_(cur)

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.updates, self.decay = int(state["updates"]), float(state["decay"])


@dataclass
class ScoreFit:
    """Training record: the network (best validation weights) and its history."""

    net: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_valid: float = math.inf
    best_step: int = 0
    steps: int = 0
    train_s: float = 0.0
    cpu_s: float = 0.0
    stopped_early: bool = False

    def summary(self) -> dict[str, Any]:
        """Scalars of the fit (for summary.json)."""
        return {"best_valid": self.best_valid, "best_step": self.best_step, "steps": self.steps,
                "train_s": self.train_s, "cpu_s": self.cpu_s, "stopped_early": self.stopped_early,
                "initial_valid": self.history[0]["valid"] if self.history else math.nan}


def _check(name: str, z: Tensor) -> Tensor:
    if not isinstance(z, Tensor) or z.ndim != 3 or z.shape[0] < 1:
        raise ValueError(f"fit_score: {name} must be windows (W, L, n), got "
                         f"{tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError(f"fit_score: {name} has NaN or infinite values")
    return z


def fit_score(
    net: nn.Module,
    train: Tensor,
    valid: Tensor,
    *,
    loc: float,
    scale: float,
    batch: int = 64,
    lr: float = 2e-3,
    lr_final: float = 1e-4,
    max_steps: int = 2000,
    max_seconds: float = math.inf,
    valid_every: int = 100,
    patience: int = 5,
    warmup: int = 0,
    ema: float = 0.0,
    generator: torch.Generator | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ScoreFit:
    """Train ``net`` (ε-prediction) on windows ``train`` ``(W, L, n)``, stop early on ``valid``'s loss.

    Windows are in physical units and normalised by (loc, scale) here. Stops after
    ``max_steps``, ``max_seconds`` of training, or ``patience`` validations without improvement;
    the best weights are restored. With ``checkpoint`` the state is saved at each validation and
    ``resume=True`` continues from it. ``warmup`` steps of linear learning-rate warm-up precede
    the cosine decay; ``ema`` > 0 is the decay of an exponential moving average of the weights
    (:class:`WeightAverage`): the averaged weights are then the ones validated and returned.
    """
    train, valid = _check("train", train), _check("valid", valid)
    if train.shape[1:] != valid.shape[1:]:
        raise ValueError(f"fit_score: train windows {tuple(train.shape[1:])} and valid {tuple(valid.shape[1:])} differ")
    if not (scale > 0 and math.isfinite(loc)):
        raise ValueError(f"fit_score: need a finite loc and scale > 0, got {loc}, {scale}")
    dtype = next(net.parameters()).dtype
    z_tr, z_va = (((w - loc) / scale).to(dtype) for w in (train, valid))
    gen = generator or torch.Generator().manual_seed(0)
    vgen = torch.Generator().manual_seed(12345)
    t_va = torch.rand(z_va.shape[0], generator=vgen, dtype=dtype)
    e_va = torch.randn(z_va.shape, generator=vgen, dtype=dtype)
    if not (isinstance(warmup, int) and warmup >= 0):
        raise ValueError(f"fit_score: warmup must be an integer >= 0, got {warmup!r}")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, lr=lr, lr_final=lr_final,
                                                                       max_steps=max_steps, warmup=warmup))
    average = WeightAverage(net, ema) if ema > 0 else None
    judged = average.net if average is not None else net  # the weights validated and returned
    fit = ScoreFit(net=net)
    best_state = copy.deepcopy(net.state_dict())
    bad, step = 0, 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        if average is not None:
            if state.get("ema") is None:
                raise ValueError(f"fit_score: checkpoint {ckpt} was written without ema; cannot resume with ema={ema}")
            average.load_state_dict(state["ema"])
        best_state, bad, step = state["best_state"], state["bad"], state["step"]
        fit.history, fit.best_valid, fit.best_step = state["history"], state["best_valid"], state["best_step"]
        fit.train_s, fit.cpu_s = state["train_s"], state["cpu_s"]
        if progress:
            progress(f"resumed score training at step {step}")

    def validate() -> float:
        judged.eval()
        with torch.no_grad():
            losses = [denoising_loss(judged, z, t, e) * z.shape[0]
                      for z, t, e in zip(z_va.split(256), t_va.split(256), e_va.split(256))]
        net.train()
        return float(sum(losses) / z_va.shape[0])

    if not fit.history:
        fit.history.append({"step": 0, "train": math.nan, "valid": validate()})
        fit.best_valid = fit.history[0]["valid"]
    wall0, cpu0 = time.perf_counter() - fit.train_s, time.process_time() - fit.cpu_s
    running: list[float] = []
    net.train()
    while step < max_steps and not fit.stopped_early:
        if time.perf_counter() - wall0 > max_seconds:
            break
        idx = torch.randint(z_tr.shape[0], (batch,), generator=gen)
        t = torch.rand(batch, generator=gen, dtype=dtype).to(z_tr.device)
        eps = torch.randn((batch, *z_tr.shape[1:]), generator=gen, dtype=dtype).to(z_tr.device)
        loss = denoising_loss(net, z_tr[idx], t, eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if average is not None:
            average.update(net)
        step += 1
        running.append(float(loss.detach()))
        if step % valid_every == 0 or step == max_steps:
            v = validate()
            fit.history.append({"step": step, "train": sum(running) / len(running), "valid": v})
            running = []
            if v < fit.best_valid:
                fit.best_valid, fit.best_step, bad = v, step, 0
                best_state = copy.deepcopy(judged.state_dict())
            else:
                bad += 1
                fit.stopped_early = bad >= patience
            fit.train_s, fit.cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
            if progress:
                progress(f"score step {step}: train {fit.history[-1]['train']:.4f} valid {v:.4f} "
                         f"(best {fit.best_valid:.4f} at {fit.best_step})")
            if ckpt is not None:
                atomic_torch_save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                                   "gen": gen.get_state(), "best_state": best_state, "bad": bad, "step": step,
                                   "ema": average.state_dict() if average is not None else None,
                                   "history": fit.history, "best_valid": fit.best_valid,
                                   "best_step": fit.best_step, "train_s": fit.train_s, "cpu_s": fit.cpu_s}, ckpt)
    fit.steps = step
    fit.train_s, fit.cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    net.load_state_dict(best_state)
    net.eval()
    return fit


def save_score_prior(prior: NetworkPrior, path: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write a trained prior (network, window length, n, loc, scale, spacing) to ``path`` atomically."""
    return atomic_torch_save({
        "format": PRIOR_FORMAT, "network": network_payload(prior.net), "length": prior.length, "n": prior.n,
        "loc": prior.loc, "scale": prior.scale, "spacing": prior.spacing, "info": dict(info or {}),
    }, path)


def load_score_prior(path: str | Path) -> NetworkPrior:
    """The prior saved by :func:`save_score_prior`, or a ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"load_score_prior: no file {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != PRIOR_FORMAT:
        raise ValueError(f"{path}: not a hybrida score prior")
    net = rebuild_network(payload["network"], path)
    return NetworkPrior(net, payload["length"], payload["n"], payload["loc"], payload["scale"], payload["spacing"])
