"""Observation bias: predictors, a biased-observation scenario, and bias models (linear VarBC, learned).

Radiance-like observations carry systematic errors that depend on the
channel, on the observed scene and on the instrument geometry. The bias of
observation i (channel c_i) is modelled as

    b_i(x) = sum_j beta_{c_i, j} p_ij(x)            (linear, Harris & Kelly 2001; Dee 2004)
    b_i(x) = f_phi(p_i(x), c_i)                      (learned, a small network)

with the predictors p_i = [1, (H_i(x) - offset) / scale, s_i]: a constant, the
simulated observation value and a fixed scan-angle-like covariate s_i of the
observation location. Predictors are evaluated at the background, so a bias
model turns observations into bias-corrected ones by y_c = y - b(x_b), which is
the same as adding b(x_b) to H (:meth:`BiasModel.correct`). The linear
coefficients are the VarBC control variables
(:mod:`hybrida.assimilation.variational.varbc`) or the augmented-ensemble
parameters (:mod:`hybrida.assimilation.ensemble.bias_aug`); the network is
trained on O−B departures by :func:`hybrida.learn.bias.fit_bias_model`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor, nn

from hybrida.observations.base import Observation
from hybrida.observations.system import ObservationSystem

__all__ = [
    "BiasModel",
    "BiasPredictors",
    "BiasedObs",
    "ChannelBias",
    "LinearBias",
    "NeuralBias",
    "scan_covariate",
]

PREDICTORS = ("constant", "value", "scan")
BIAS_SHAPES = ("linear", "tanh", "quadratic")


def scan_covariate(n: int, swath: int) -> Tensor:
    """A scan-angle-like covariate per grid location: s_i = 2 (i mod swath) / (swath - 1) - 1 in [-1, 1].

    It mimics the scan position of a cross-track sounder: a fixed number per
    location, repeating every ``swath`` points.
    """
    if swath < 2:
        raise ValueError(f"scan_covariate: swath must be >= 2, got {swath}")
    i = torch.arange(n, dtype=torch.float64)
    return 2.0 * torch.remainder(i, swath) / (swath - 1) - 1.0


class BiasPredictors:
    """Bias predictors p_i(x) = [1, (H_i(x) - offset)/scale, s_i] and the channel of each observation.

    ``channel`` ``(n,)``: channel id (0..C-1) of an observation at grid
    location l, or -1 for an unbiased (anchor) observation that gets no bias
    correction; ``scan`` ``(n,)``: the fixed covariate s at each location.
    Observations are mapped by ``obs.locations`` (grid-index units).
    ``names`` chooses the predictors and their order.
    """

    def __init__(
        self,
        channel: Sequence[int] | Tensor,
        scan: Sequence[float] | Tensor | None = None,
        offset: float = 0.0,
        scale: float = 1.0,
        names: Sequence[str] = PREDICTORS,
    ):
        self.channel = torch.as_tensor(channel).long()
        if self.channel.ndim != 1 or bool((self.channel < -1).any()):
            raise ValueError("BiasPredictors: channel must be a 1-D sequence of ids >= -1 (-1: unbiased)")
        n = self.channel.shape[0]
        self.scan = torch.zeros(n, dtype=torch.float64) if scan is None else torch.as_tensor(scan).double()
        if self.scan.shape != (n,):
            raise ValueError(f"BiasPredictors: scan must have shape ({n},), got {tuple(self.scan.shape)}")
        bad = [k for k in names if k not in PREDICTORS]
        if bad or not names:
            raise ValueError(f"BiasPredictors: names must be among {', '.join(PREDICTORS)}, got {list(names)}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"BiasPredictors: scale must be finite and > 0, got {scale}")
        self.names = tuple(names)
        self.offset, self.scale = float(offset), float(scale)
        self.n_channels = int(self.channel.max()) + 1 if bool((self.channel >= 0).any()) else 0

    @property
    def k(self) -> int:
        """Number of predictors per channel."""
        return len(self.names)

    @property
    def n_coefficients(self) -> int:
        """Size of the flat coefficient vector beta = [beta_0; ...; beta_{C-1}] (C k)."""
        return self.n_channels * self.k

    def layout(self, obs: Observation) -> tuple[Tensor, Tensor]:
        """Channel ids ``(p,)`` and scan covariates ``(p,)`` of the observations."""
        if obs.locations is None:
            raise ValueError("BiasPredictors: observations need locations (grid indices)")
        loc = obs.locations.round().long().cpu()
        return self.channel[loc], self.scan[loc]

    def __call__(self, obs: Observation, hx: Tensor) -> Tensor:
        """Predictors ``(..., p, k)`` at the simulated values ``hx`` ``(..., p)``."""
        _, s = self.layout(obs)
        cols = {
            "constant": torch.ones_like(hx),
            "value": (hx - self.offset) / self.scale,
            "scan": s.to(hx).expand_as(hx),
        }
        return torch.stack([cols[k] for k in self.names], -1)

    def design(self, obs: Observation, hx: Tensor) -> Tensor:
        """P(x) ``(..., p, C k)`` with b = P(x) beta: row i holds p_i in the block of its channel (zero: unbiased)."""
        ch, _ = self.layout(obs)
        P = self(obs, hx)
        onehot = torch.zeros(ch.shape[0], self.n_channels, dtype=hx.dtype, device=hx.device)
        used = ch >= 0
        onehot[used.nonzero().squeeze(-1).to(hx.device), ch[used].to(hx.device)] = 1.0
        return (onehot.unsqueeze(-1) * P.unsqueeze(-2)).flatten(-2)


class ChannelBias:
    """The true bias of a scenario: b_i = c_{c_i} + a_{c_i} f((H_i(x) - center)/width) + d_{c_i} s_i.

    ``shape`` f: ``"linear"`` (f(u) = u, representable by linear VarBC),
    ``"tanh"`` or ``"quadratic"`` (f(u) = u^2 - 1, nonlinear in the state).
    ``const``, ``amp``, ``scan`` are per channel ``(C,)``; unbiased
    (channel -1) observations get no bias.
    """

    def __init__(
        self,
        predictors: BiasPredictors,
        const: Sequence[float] | Tensor,
        amp: Sequence[float] | Tensor,
        scan: Sequence[float] | Tensor | None = None,
        shape: str = "quadratic",
        center: float = 0.0,
        width: float = 1.0,
    ):
        if shape not in BIAS_SHAPES:
            raise ValueError(f"ChannelBias: shape must be one of {', '.join(BIAS_SHAPES)}, got {shape!r}")
        C = predictors.n_channels
        self.const = torch.as_tensor(const, dtype=torch.float64)
        self.amp = torch.as_tensor(amp, dtype=torch.float64)
        self.scan = torch.zeros(C, dtype=torch.float64) if scan is None else torch.as_tensor(scan).double()
        if any(v.shape != (C,) for v in (self.const, self.amp, self.scan)):
            raise ValueError(f"ChannelBias: const, amp and scan need one value per channel ({C})")
        self.predictors, self.shape, self.center, self.width = predictors, shape, float(center), float(width)

    def f(self, u: Tensor) -> Tensor:
        """The state-dependent shape."""
        if self.shape == "tanh":
            return torch.tanh(u)
        if self.shape == "quadratic":
            return u * u - 1.0
        return u

    def __call__(self, obs: Observation, hx: Tensor) -> Tensor:
        """The bias ``(..., p)`` of observations whose error-free values are ``hx``."""
        ch, s = self.predictors.layout(obs)
        used = (ch >= 0).to(hx)
        c = ch.clamp_min(0)
        u = (hx - self.center) / self.width
        b = self.const.to(hx)[c] + self.amp.to(hx)[c] * self.f(u) + self.scan.to(hx)[c] * s.to(hx)
        return b * used


class BiasedObs(ObservationSystem):
    """Wrap a network so that sampled observations carry a bias: y = H(x_t) + b(x_t) + e.

    The operator H, error model and locations are those of ``system``: the
    assimilation does not know the bias. The true bias of each cycle is kept
    in ``obs.meta["bias"]`` (for diagnostics only).
    """

    def __init__(self, system: ObservationSystem, bias: ChannelBias):
        self.system = system
        self.bias = bias
        self.every = system.every

    def network(self, cycle: int, generator: torch.Generator | None = None) -> Observation:
        """The wrapped network's structure."""
        return self.system.network(cycle, generator)

    def observe(self, x_true: Tensor, cycle: int, generator: torch.Generator | None = None) -> Observation:
        """Unbiased observations of the wrapped system plus b(x_true)."""
        obs = self.system.observe(x_true, cycle, generator)
        b = self.bias(obs, obs.H(x_true))
        obs.y = obs.y + b
        obs.meta = {**obs.meta, "bias": b}
        return obs


class BiasModel(ABC):
    """A bias model b(obs, H(x)) ``(..., p)`` with the common correction contract."""

    @abstractmethod
    def bias(self, obs: Observation, hx: Tensor) -> Tensor:
        """Estimated bias of ``obs`` given simulated values ``hx`` ``(..., p)``."""

    def correct(self, obs: Observation, xb: Tensor) -> Observation:
        """Bias-corrected observations y - b(H(x_b)) (equivalently H(x) + b(H(x_b)) as operator)."""
        with torch.no_grad():
            b = self.bias(obs, obs.H(xb)).to(obs.y)
        return replace(obs, y=obs.y - b, matrix=obs.stored_matrix, meta={**obs.meta, "bias_estimate": b})


class LinearBias(BiasModel):
    """Linear bias b = P(x) beta with per-channel coefficients beta (Harris & Kelly 2001; Dee 2004)."""

    def __init__(self, predictors: BiasPredictors, beta: Tensor | None = None):
        self.predictors = predictors
        m = predictors.n_coefficients
        self.beta = torch.zeros(m, dtype=torch.float64) if beta is None else torch.as_tensor(beta).double()
        if self.beta.shape != (m,):
            raise ValueError(f"LinearBias: beta must have shape ({m},), got {tuple(self.beta.shape)}")

    def bias(self, obs: Observation, hx: Tensor) -> Tensor:
        """P(x) beta."""
        return (self.predictors.design(obs, hx) @ self.beta.to(hx).unsqueeze(-1)).squeeze(-1)


class NeuralBias(nn.Module, BiasModel):
    """Learned bias b_phi = MLP([(H_i(x) - offset)/scale, s_i, onehot(c_i)]), zero for unbiased observations.

    The same network acts on every observation (weights shared over
    locations, channel as input), so it learns a nonlinear function of the
    predictors per channel. ``output_scale`` scales the last layer's output
    (set it to the departure spread) and ``seed`` initialises the weights.
    """

    def __init__(
        self,
        predictors: BiasPredictors,
        width: int = 32,
        depth: int = 2,
        output_scale: float = 1.0,
        seed: int | None = None,
    ):
        nn.Module.__init__(self)
        self.predictors = predictors
        self.output_scale = float(output_scale)
        d_in = 2 + predictors.n_channels
        gen = torch.Generator().manual_seed(0 if seed is None else seed)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(d_in if i == 0 else width, width), nn.Tanh()]
        layers.append(nn.Linear(width if depth else d_in, 1))
        self.net = nn.Sequential(*layers).double()
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) / math.sqrt(max(p.shape[-1], 1)))
            self.net[-1].weight.mul_(0.1)
            self.net[-1].bias.zero_()

    def features(self, obs: Observation, hx: Tensor) -> Tensor:
        """Network inputs ``(..., p, 2 + C)``."""
        ch, s = self.predictors.layout(obs)
        value = (hx - self.predictors.offset) / self.predictors.scale
        onehot = torch.zeros(ch.shape[0], self.predictors.n_channels, dtype=hx.dtype, device=hx.device)
        used = ch >= 0
        onehot[used.nonzero().squeeze(-1).to(hx.device), ch[used].to(hx.device)] = 1.0
        lead = value.shape[:-1]
        return torch.cat(
            (value.unsqueeze(-1), s.to(hx).expand_as(hx).unsqueeze(-1), onehot.expand(*lead, *onehot.shape)), -1
        )

    def bias(self, obs: Observation, hx: Tensor) -> Tensor:
        """b_phi at the simulated values ``hx`` ``(..., p)``."""
        ch, _ = self.predictors.layout(obs)
        out = self.output_scale * self.net(self.features(obs, hx).to(self.net[0].weight.dtype)).squeeze(-1)
        return out.to(hx) * (ch >= 0).to(hx)

    def forward(self, obs: Observation, hx: Tensor) -> Tensor:
        return self.bias(obs, hx)
