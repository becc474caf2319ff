"""Learning an observation-bias model from O−B departures, offline and online within the cycle.

Targets are the departures d = y - H(x_b) of the biased observations from
backgrounds x_b that those observations did not influence (passive
monitoring: the backgrounds of a run assimilating unbiased, anchor
observations only). Then d = b(x_t) + e_o + H(x_t) - H(x_b); for a background
that is the conditional mean of the truth given past observations,
E[H(x_t) - H(x_b) | x_b] ~ 0, so the least-squares regression of d on
features of x_b learns the bias, not the background error (which only adds
noise). The loss is the mean squared departure residual

    L(phi) = mean_{t, i} (d_ti - b_phi(H(x_b,t))_i)^2

(Adam, Kingma & Ba 2015; early stopping on a held-out tail, Prechelt 1998).
Online, :class:`BiasCorrected` with ``online_steps > 0`` takes a few Adam steps
per cycle on a replay buffer of the latest departures before correcting.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hybrida.assimilation.base import AssimilationMethod, State, state_mean
from hybrida.models.base import Model
from hybrida.observations.base import Observation
from hybrida.observations.bias import BiasModel, NeuralBias

__all__ = ["BiasCorrected", "BiasFit", "bias_departures", "fit_bias_model"]


@dataclass
class BiasFit:
    """Training history of :func:`fit_bias_model`."""

    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0


def bias_departures(observations: Sequence[Observation], backgrounds: Tensor) -> tuple[Tensor, Tensor]:
    """Simulated values H(x_b) and departures y - H(x_b), each ``(T, p)`` (NaN where y is missing)."""
    if len(observations) != backgrounds.shape[0]:
        raise ValueError("bias_departures: one background per observation time is needed")
    with torch.no_grad():
        hx = torch.stack([o.H(xb) for o, xb in zip(observations, backgrounds)])
        d = torch.stack([o.y.to(xb) for o, xb in zip(observations, backgrounds)]) - hx
    return hx, d


def _loss(model: NeuralBias, template: Observation, hx: Tensor, d: Tensor) -> Tensor:
    """Mean squared residual over finite departures of the bias-corrected observations."""
    used = torch.isfinite(d) & (model.predictors.layout(template)[0] >= 0).to(d.device)
    r = torch.where(used, d - model.bias(template, hx), torch.zeros_like(d))
    return (r * r).sum() / used.sum().clamp_min(1)


def fit_bias_model(
    model: NeuralBias,
    template: Observation,
    hx: Tensor,
    departures: Tensor,
    *,
    epochs: int = 300,
    lr: float = 3e-3,
    batch_size: int = 256,
    valid_fraction: float = 0.2,
    patience: int = 30,
    seed: int = 0,
) -> BiasFit:
    """Fit ``model`` to departures ``(T, p)`` at simulated values ``hx`` ``(T, p)`` of network ``template``.

    Minimises the mean squared departure residual by Adam over mini-batches
    of times (shuffled with ``seed``); the last ``valid_fraction`` of times
    validates, training stops after ``patience`` epochs without improvement
    and the best weights are restored.
    """
    if hx.shape != departures.shape or hx.ndim != 2:
        raise ValueError("fit_bias_model: hx and departures must both be (T, p)")
    if epochs < 0 or not lr >= 0:
        raise ValueError(f"fit_bias_model: need epochs >= 0 and lr >= 0, got {epochs}, {lr}")
    T = hx.shape[0]
    cut = T - round(valid_fraction * T) if valid_fraction > 0 else T
    h_tr, d_tr, h_va, d_va = hx[:cut], departures[:cut], hx[cut:], departures[cut:]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    hist = BiasFit()
    best, best_state, bad = math.inf, copy.deepcopy(model.state_dict()), 0
    for epoch in range(epochs):
        perm = torch.randperm(cut, generator=gen)
        total = 0.0
        for i in range(0, cut, batch_size):
            b = perm[i : i + batch_size]
            opt.zero_grad()
            loss = _loss(model, template, h_tr[b], d_tr[b])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * b.numel()
        hist.train_loss.append(total / max(cut, 1))
        if T > cut:
            with torch.no_grad():
                v = float(_loss(model, template, h_va, d_va))
            hist.valid_loss.append(v)
            if v < best:
                best, best_state, bad, hist.best_epoch = v, copy.deepcopy(model.state_dict()), 0, epoch
            else:
                bad += 1
                if bad >= patience:
                    break
    if T > cut and hist.valid_loss:
        model.load_state_dict(best_state)
    return hist


class BiasCorrected(AssimilationMethod):
    """Any assimilation method fed with bias-corrected observations y - b(H(x_b)), x_b the prior mean.

    With ``online_steps`` > 0 and a :class:`~hybrida.observations.bias.NeuralBias`,
    each cycle first appends the departures d = y - H(x_b) to a replay buffer of
    the last ``buffer`` cycles and takes ``online_steps`` Adam steps (rate
    ``lr``) on the mean squared departure residual over the buffer, then
    corrects: the bias model keeps learning within the cycle. Unbiased
    (anchor) observations keep the system from drifting with it. The buffer
    assumes a fixed network (same observations each cycle; missing values are
    masked); a cycle with a different number of observations is not learned from.
    """

    def __init__(
        self,
        method: AssimilationMethod,
        bias_model: BiasModel,
        online_steps: int = 0,
        lr: float = 1e-3,
        buffer: int = 50,
    ):
        if online_steps > 0 and not isinstance(bias_model, NeuralBias):
            raise ValueError("BiasCorrected: online learning needs a NeuralBias model")
        self.method, self.bias_model = method, bias_model
        self.kind, self.N = method.kind, method.N
        self.B = getattr(method, "B", None)
        self.online_steps, self.lr = int(online_steps), float(lr)
        self._buffer: deque[tuple[Tensor, Tensor]] = deque(maxlen=int(buffer))
        self._opt = torch.optim.Adam(bias_model.parameters(), lr=self.lr) if self.online_steps else None
        self._diag: dict[str, float] = {}

    def initial_state(self, mean: Tensor, std: Tensor | float, generator: torch.Generator | None = None) -> State:
        return self.method.initial_state(mean, std, generator)

    def forecast(self, model: Model, state: State, n_steps: int, t0: float = 0.0) -> State:
        return self.method.forecast(model, state, n_steps, t0)

    def _learn(self, obs: Observation, xb: Tensor) -> None:
        with torch.no_grad():
            hx = obs.H(xb)
        self._buffer.append((hx, obs.y.to(hx) - hx))
        hxs = torch.stack([h for h, _ in self._buffer])
        ds = torch.stack([d for _, d in self._buffer])
        for _ in range(self.online_steps):
            self._opt.zero_grad()
            loss = _loss(self.bias_model, obs, hxs, ds)
            loss.backward()
            self._opt.step()
        self._diag["bias_loss"] = float(loss.detach())

    def analyse(
        self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> State:
        """Correct the observations with the bias model at the prior mean, then the method's analysis."""
        xb = state_mean(prior).detach()
        same_network = not self._buffer or self._buffer[0][0].shape[-1] == obs.p
        if self._opt is not None and same_network:  # missing values are masked in the loss
            self._learn(obs, xb)
        corrected = self.bias_model.correct(obs, xb)
        post = self.method.analyse(prior, corrected, t, generator)
        b = corrected.meta["bias_estimate"]
        self._diag = {**self.method.diagnostics(), **self._diag, "bias_rms": float(b.pow(2).mean().sqrt())}
        return post

    def diagnostics(self) -> dict[str, float]:
        """The method's diagnostics, the rms of the applied bias estimate and the online loss."""
        return dict(self._diag)
