"""A learned correction of the recharge oscillator's tendency from T, h and the season.

The hybrid tendency is (Farchi et al. 2021; Brajard et al. 2021, tendency form)

    dx/dt = f_RO(x, t; θ) + s ⊙ g(T/σ_T, h/σ_h, cos 2πt/12, sin 2πt/12)

with f_RO the recharge oscillator (Jin 1997), θ its parameters, g a small
network and s, σ normalisation constants. It is trained offline on
analysis pairs (x^a_k, x^a_{k+1}) of the fit period by minimising the
one-month forecast error |M_hyb(x^a_k, t_k) − x^a_{k+1}|² (one RK4 step),
each variable scaled by its residual std. The model subclasses
:class:`~hybrida.models.recharge.RechargeOscillator`, so the augmented
ensemble still estimates θ member by member while the network is frozen.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from hybrida.models.integrators import rk4_step
from hybrida.models.recharge import RechargeOscillator

__all__ = ["LearnedRecharge", "SeasonalCorrectionNet", "fit_seasonal_correction", "load_correction", "save_correction",
           "season_features"]

log = logging.getLogger(__name__)


def season_features(x: Tensor, t: float | Tensor, scale: Tensor) -> Tensor:
    """Network inputs ``(..., 4)``: [T/σ_T, h/σ_h, cos 2πt/12, sin 2πt/12] (t in months)."""
    z = x[..., :2] / scale.to(x)
    angle = 2.0 * math.pi * torch.as_tensor(t, dtype=x.dtype, device=x.device) / 12.0
    angle = (angle.reshape(1) if angle.ndim == 0 else angle).expand(*z.shape[:-1], 1)
    return torch.cat((z, torch.cos(angle), torch.sin(angle)), -1)


class SeasonalCorrectionNet(nn.Module):
    """g: R⁴ → R², a tanh MLP whose last layer starts at zero (so the hybrid starts as the physics)."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, 2)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, z: Tensor) -> Tensor:
        return self.head(self.body(z))


class LearnedRecharge(RechargeOscillator):
    """Recharge oscillator plus s ⊙ g(features): the hybrid tendency of the module docstring.

    ``physics`` gives the parameters (copied, so they remain plain attributes
    for :class:`~hybrida.models.augmented.AugmentedModel`); ``net`` maps the
    ``(..., 4)`` :func:`season_features` to ``(..., 2)``; ``in_scale``
    (σ_T, σ_h) and ``out_scale`` s are ``(2,)`` tensors. The network runs in
    the state's dtype and device.
    """

    def __init__(self, physics: RechargeOscillator, net: nn.Module, in_scale: Tensor, out_scale: Tensor) -> None:
        self.__dict__.update(copy.copy(physics.__dict__))
        self.net = net
        self.in_scale = torch.as_tensor(in_scale, dtype=torch.float64)
        self.out_scale = torch.as_tensor(out_scale, dtype=torch.float64)

    def __repr__(self) -> str:
        return f"LearnedRecharge({super().__repr__()}, net={type(self.net).__name__})"

    def correction(self, x: Tensor, t: float | Tensor = 0.0) -> Tensor:
        """s ⊙ g(features(x, t)): the learned part of the tendency."""
        z = season_features(x, t, self.in_scale)
        p = next(self.net.parameters())
        out = self.net(z.to(p)).to(x)
        return self.out_scale.to(x) * out

    def tendency(self, x: Tensor, t: float = 0.0) -> Tensor:
        """Physical tendency plus the learned correction (of T and h; none on a forcing variable ξ)."""
        c = self.correction(x, t)
        if self.n > 2:
            c = torch.cat((c, torch.zeros_like(x[..., 2:])), -1)
        return super().tendency(x, t) + c


@dataclass
class CorrectionFit:
    """The trained hybrid, its loss history and the physics-only reference losses."""

    model: LearnedRecharge
    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    physics_train_loss: float = math.nan
    physics_valid_loss: float = math.nan
    best_epoch: int = 0


def _with_params(physics: RechargeOscillator, params: dict[str, Tensor] | None) -> RechargeOscillator:
    m = copy.copy(physics)
    for name, v in (params or {}).items():
        setattr(m, name, v)
    return m


def fit_seasonal_correction(
    physics: RechargeOscillator,
    analyses: Tensor,
    times: Tensor,
    params: dict[str, Tensor] | None = None,
    *,
    hidden: int = 16,
    epochs: int = 1500,
    lr: float = 5e-3,
    weight_decay: float = 1e-4,
    valid_fraction: float = 0.2,
    patience: int = 150,
    rollout: int = 1,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> CorrectionFit:
    """Train g on analysis pairs ``analyses`` ``(K, n)`` at months ``times`` ``(K,)``; full-batch Adam.

    ``params`` ``{name: (K, 1)}`` are the analysed parameters at each time
    (the physics used for pair k is the oscillator with those values). The
    last ``valid_fraction`` of the pairs validates. With ``rollout`` = r > 1
    the loss is the mean over j = 1..r of |M_hyb^j(x^a_k) − x^a_{k+j}|² (a
    multi-month forecast loss; Brajard et al. 2020 train on rollouts too). Training stops after
    ``patience`` epochs without improvement and keeps the best weights. The
    network's initial weights come from ``seed``.
    """
    if analyses.ndim != 2 or analyses.shape[-1] != physics.n or analyses.shape[0] < 10:
        raise ValueError(f"fit_seasonal_correction: analyses must be (K >= 10, {physics.n})")
    x = analyses.to(torch.float64)
    t = times.to(torch.float64)
    if not 1 <= rollout < analyses.shape[0] // 2:
        raise ValueError(f"fit_seasonal_correction: rollout must be in [1, K/2), got {rollout}")
    prm = {k: v.to(torch.float64) for k, v in (params or {}).items()}
    phys = _with_params(physics, {k: v[:-1] for k, v in prm.items()})
    with torch.no_grad():
        base = rk4_step(phys.tendency, x[:-1], t[:-1].unsqueeze(-1), phys.dt)
    resid = (x[1:] - base)[:, :2]  # the loss and the correction concern T and h
    res_std = resid.std(0).clamp_min(1e-12)
    in_scale = x[:, :2].std(0).clamp_min(1e-12)
    out_scale = res_std / phys.dt
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        net = SeasonalCorrectionNet(hidden).to(torch.float64)
    S = x.shape[0] - rollout  # forecast starts
    cut = S - max(1, round(valid_fraction * S))

    def loss_of(sl: slice) -> Tensor:
        idx = torch.arange(S)[sl]
        part = LearnedRecharge(_with_params(physics, {k: v[idx] for k, v in prm.items()}), net, in_scale, out_scale)
        z, total = x[idx], torch.zeros((), dtype=torch.float64)
        for j in range(rollout):
            z = rk4_step(part.tendency, z, (t[idx] + j * part.dt).unsqueeze(-1), part.dt)
            total = total + (((z - x[idx + j + 1])[:, :2] / res_std) ** 2).mean()
        return total / rollout

    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.no_grad():  # the untrained head is zero: these are the physics' own losses
        result = CorrectionFit(LearnedRecharge(physics, net, in_scale, out_scale),
                               physics_train_loss=float(loss_of(slice(0, cut))),
                               physics_valid_loss=float(loss_of(slice(cut, S))))
    best, best_state, since = math.inf, copy.deepcopy(net.state_dict()), 0
    for epoch in range(epochs):
        opt.zero_grad()
        loss = loss_of(slice(0, cut))
        loss.backward()
        opt.step()
        with torch.no_grad():
            v = float(loss_of(slice(cut, S)))
        result.train_loss.append(float(loss.detach()))
        result.valid_loss.append(v)
        if v < best - 1e-6:
            best, best_state, since, result.best_epoch = v, copy.deepcopy(net.state_dict()), 0, epoch
        else:
            since += 1
            if since >= patience:
                break
        if progress is not None and epoch % 250 == 0:
            progress(f"correction epoch {epoch}: train {result.train_loss[-1]:.4f} valid {v:.4f}")
    net.load_state_dict(best_state)
    for p in net.parameters():
        p.requires_grad_(False)
    # the hybrid used in the cycle takes the ensemble's parameters, not the fit-period series
    result.model = LearnedRecharge(physics, net, in_scale, out_scale)
    log.info("seasonal correction: valid loss %.4f (physics %.4f)", best, result.physics_valid_loss)
    return result


def save_correction(model: LearnedRecharge, path: str | os.PathLike) -> None:
    """Write the correction's weights and normalisation (not the oscillator's parameters) to ``path``."""
    net = model.net
    if not isinstance(net, SeasonalCorrectionNet):
        raise TypeError(f"save_correction: expected a SeasonalCorrectionNet, got {type(net).__name__}")
    torch.save({"hidden": net.head.in_features, "state_dict": net.state_dict(),
                "in_scale": model.in_scale, "out_scale": model.out_scale}, path)


def load_correction(path: str | os.PathLike, physics: RechargeOscillator) -> LearnedRecharge:
    """The hybrid of ``physics`` and the correction saved by :func:`save_correction` (weights frozen)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    net = SeasonalCorrectionNet(int(blob["hidden"])).to(torch.float64)
    net.load_state_dict(blob["state_dict"])
    for p in net.parameters():
        p.requires_grad_(False)
    return LearnedRecharge(physics, net, blob["in_scale"], blob["out_scale"])
