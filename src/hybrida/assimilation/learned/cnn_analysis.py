"""Single-state CNN analysis: a residual convolutional network maps (forecast, observations, mask) to the analysis.

Bocquet, Farchi, Finn, Durand, Cheng, Chen, Pasmans & Carrassi (2024, Chaos 34,
091104): on Lorenz-96 a residual CNN trained on (forecast, truth) pairs, with
the forecasts those of the cycled learned analysis itself, approaches the
accuracy of a tuned EnKF while a single state is propagated: the network reads
the local instabilities from the forecast state alone.

Our network (:class:`CNNAnalysisNet`) works on a periodic 1-D grid. Its input
channels per grid point are the normalised forecast, the innovation
d = y - x_f where observed (0 elsewhere) and the observation mask; a stack of
residual periodic-padding convolution blocks computes features, and the head
returns a local gain and an offset, so that

    x_a,i = x_f,i + sum_{|j| <= r} G_{i,j}(x_f, mask) d_{i+j} + s b_i(x_f, d, mask).

With a linear model and Gaussian errors the best analysis is the BLUE
x_f + K d, which this form reaches with constant G (the head is
zero-initialised, so an untrained network returns the forecast). Observations
must be point observations of grid variables (a selection H: each row of
``obs.matrix`` one 1, or identity with ``locations``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from hybrida.assimilation.base import State
from hybrida.assimilation.learned.base import LearnedAnalysis, rebuild_network
from hybrida.observations.base import Observation

__all__ = ["CNNAnalysis", "CNNAnalysisNet", "grid_inputs", "observed_index"]


class _Block(nn.Module):
    """Residual block h + conv(gelu(conv(h))) with periodic padding."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.c1 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2, padding_mode="circular")
        self.c2 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2, padding_mode="circular")

    def forward(self, h: Tensor) -> Tensor:
        return h + self.c2(F.gelu(self.c1(F.gelu(h))))


class CNNAnalysisNet(nn.Module):
    """Analysis x_a = x_f + local gain (2r+1 taps) applied to the innovation + an offset; periodic 1-D CNN.

    ``forward(xf, d, mask)`` takes ``(B, n)`` tensors: forecast, innovation
    on the grid (0 where unobserved) and mask (1 observed, 0 not) and returns
    the analysis ``(B, n)``. ``mean``/``scale`` normalise the forecast input
    (climatological mean and std of the state), ``obs_std`` the innovation.
    """

    def __init__(
        self,
        channels: int = 32,
        blocks: int = 3,
        kernel: int = 5,
        radius: int = 2,
        mean: float = 0.0,
        scale: float = 1.0,
        obs_std: float = 1.0,
    ):
        super().__init__()
        if channels < 1 or blocks < 0 or kernel < 1 or kernel % 2 == 0 or radius < 0:
            raise ValueError(
                f"CNNAnalysisNet: need channels >= 1, blocks >= 0, odd kernel >= 1, radius >= 0; "
                f"got {channels}, {blocks}, {kernel}, {radius}"
            )
        if not (scale > 0 and obs_std > 0):
            raise ValueError(f"CNNAnalysisNet: scale and obs_std must be > 0, got {scale}, {obs_std}")
        self.config: dict[str, Any] = {
            "channels": int(channels),
            "blocks": int(blocks),
            "kernel": int(kernel),
            "radius": int(radius),
            "mean": float(mean),
            "scale": float(scale),
            "obs_std": float(obs_std),
        }
        self.radius = int(radius)
        self.inp = nn.Conv1d(3, channels, kernel, padding=kernel // 2, padding_mode="circular")
        self.body = nn.Sequential(*[_Block(channels, kernel) for _ in range(blocks)])
        # gain taps + offset; zero-initialised: the untrained analysis is the forecast
        self.head = nn.Conv1d(channels, 2 * radius + 2, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, xf: Tensor, d: Tensor, mask: Tensor) -> Tensor:
        """Analysis ``(B, n)`` from forecast, innovation (0 where unobserved) and mask, all ``(B, n)``."""
        c = self.config
        z = torch.stack(((xf - c["mean"]) / c["scale"], d / c["obs_std"], mask), dim=1)
        out = self.head(F.gelu(self.body(self.inp(z))))
        r = self.radius
        # innovation at offsets -r..r: taps[:, j, i] = d_{i + j - r}
        taps = torch.stack([torch.roll(d, shifts=r - j, dims=-1) for j in range(2 * r + 1)], dim=1)
        return xf + (out[:, : 2 * r + 1] * taps).sum(1) + c["obs_std"] * out[:, -1]


def grid_inputs(prior: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Innovation on the grid (0 where unobserved or missing) and the 0/1 mask, both shaped like ``prior``.

    ``y`` ``(..., p)`` observes the grid points ``index`` ``(p,)`` of ``prior``
    ``(..., n)``; NaN in ``y`` means missing.
    """
    valid = torch.isfinite(y)
    d_obs = torch.where(valid, y.to(prior.dtype) - prior[..., index], torch.zeros((), dtype=prior.dtype))
    d = torch.zeros_like(prior).index_add(-1, index, d_obs)
    mask = torch.zeros_like(prior).index_add(-1, index, valid.to(prior.dtype).expand_as(d_obs))
    return d, mask


def observed_index(obs: Observation, n: int) -> Tensor:
    """Grid index ``(p,)`` each observation sees; a ValueError unless H is a selection of state variables."""
    indices = getattr(obs, "indices", None)  # a selection stored as indices (no dense H formed)
    if indices is not None:
        return torch.as_tensor(indices, dtype=torch.int64)
    if obs.matrix is not None:
        H = obs.matrix
        ones = H == 1
        if H.shape[-1] != n or not bool(((H == 0) | ones).all()) or not bool((ones.sum(-1) == 1).all()):
            raise ValueError(
                "CNNAnalysis: observations must be point observations of state variables "
                "(each row of H one 1, zeros elsewhere); use AI-Var or 3D-Var for other operators"
            )
        return ones.to(torch.int64).argmax(-1)
    raise ValueError(
        "CNNAnalysis: needs a linear point-observation operator (obs.matrix a selection of state variables); "
        "got a nonlinear or non-selection H"
    )


class CNNAnalysis(LearnedAnalysis):
    """Single-state learned analysis x_a = A_theta(x_f, y, mask) (Bocquet et al. 2024); cycles one state ``(n,)``.

    ``net``: a trained :class:`CNNAnalysisNet`; ``index`` ``(p,)``: the grid
    point of each observation it was trained with; ``n``, ``dtype``: the
    state size and the dtype of the states it was trained on (the network
    itself may run in float32: inputs are cast to it and the analysis back).
    ``target`` records what it was trained to reproduce ("truth" or
    "reanalysis").
    """

    kind = "deterministic"
    kind_name = "cnn_analysis"

    def __init__(
        self,
        net: CNNAnalysisNet,
        index: Tensor,
        n: int,
        dtype: torch.dtype = torch.float64,
        target: str = "truth",
        info: dict[str, Any] | None = None,
    ):
        if not isinstance(net, CNNAnalysisNet):
            raise TypeError(f"CNNAnalysis: net must be a CNNAnalysisNet, got {type(net).__name__}")
        index = torch.as_tensor(index, dtype=torch.int64)
        if index.ndim != 1 or bool((index < 0).any()) or bool((index >= n).any()):
            raise ValueError(f"CNNAnalysis: index must be (p,) grid indices in [0, {n - 1}]")
        self.net = net.eval()
        self.index = index
        self.n = int(n)
        self.p = int(index.shape[0])
        self.dtype = dtype
        self.target = str(target)
        self.info = dict(info or {})

    def initial_state(
        self, mean: Tensor, std: Tensor | float, generator: torch.Generator | None = None
    ) -> State:
        """The state ``mean`` itself, after checking its size and dtype against the training (fails before cycling)."""
        if mean.shape[-1] != self.n or mean.dtype != self.dtype:
            raise ValueError(
                f"CNNAnalysis: trained for n={self.n}, p={self.p} observations, "
                f"{str(self.dtype).removeprefix('torch.')}; got a state of n={mean.shape[-1]}, "
                f"{str(mean.dtype).removeprefix('torch.')} (train it for this state size, or cast the experiment's dtype)"
            )
        return super().initial_state(mean, std, generator)

    def analyse(
        self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> State:
        """x_a = net(x_f, y - x_f at the observed points, mask); NaN observations are masked out."""
        if not isinstance(prior, Tensor):
            raise TypeError(f"CNNAnalysis: prior must be a state tensor (n,), got {type(prior).__name__}")
        self.check_inputs(prior, obs)
        if not bool(torch.isfinite(prior).all()):
            raise ValueError("CNNAnalysis: the forecast (prior) contains NaN or inf")
        idx = observed_index(obs, self.n)
        if not torch.equal(idx, self.index):
            raise ValueError(
                f"CNNAnalysis: trained for observations of grid points {self.index.tolist()[:8]}...; "
                f"got {idx.tolist()[:8]}... (train it for this observation network)"
            )
        wdtype = next(self.net.parameters()).dtype
        xf = prior.detach().reshape(-1, self.n).to(wdtype)
        y = obs.y.detach().reshape(-1, self.p).to(wdtype)
        with torch.no_grad():
            d, mask = grid_inputs(xf, y, self.index.to(xf.device))
            xa = self.net(xf, d, mask)
        return xa.to(prior.dtype).reshape(prior.shape)

    def to_payload(self) -> dict[str, Any]:
        """Kind, signature (n, p, dtype), the network and the observed grid points."""
        return self.payload_header({"index": self.index.clone(), "target": self.target, "info": self.info}, net=self.net)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: str | Path | None = None, **params: Any) -> CNNAnalysis:
        """Rebuild from :meth:`to_payload`'s dict (no run-time parameters to override)."""
        if params:
            raise ValueError(f"CNNAnalysis: unknown parameters {sorted(params)}; this method takes none")
        net = rebuild_network(payload["networks"]["net"], path)
        if not isinstance(net, CNNAnalysisNet):
            raise ValueError(f"{path}: the network is a {type(net).__name__}, not a CNNAnalysisNet")  # noqa: TRY004
        return cls(
            net,
            payload["index"],
            int(payload["n"]),
            getattr(torch, str(payload["dtype"])),
            target=str(payload.get("target", "truth")),
            info=dict(payload.get("info", {})),
        )

    def __repr__(self) -> str:
        c = self.net.config
        return (
            f"CNNAnalysis(n={self.n}, p={self.p}, target={self.target!r}, channels={c['channels']}, "
            f"blocks={c['blocks']}, kernel={c['kernel']}, radius={c['radius']})"
        )
