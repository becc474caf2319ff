"""Amortised ensemble filter: a permutation-equivariant network maps (forecast ensemble, y, mask) to the analysis ensemble.

McCabe & Brown (2021, "Learning to assimilate in chaotic dynamical systems"):
the analysis x^a_i = x^f_i + g_θ(x^f_i, {x^f_j}, y, mask) for each member i,
with g_θ equivariant to permutations of the members (deep-sets layers mixing
each member with the ensemble mean of its features) and to translations of
the periodic grid (circular convolutions). Observations enter on the grid:
y scattered to the observed points, NaN (missing or unobserved) masked. The
network is trained self-supervised through the forecast model
(:func:`hybrida.learn.amortised.fit_amortised`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hybrida.assimilation.learned.base import LearnedAnalysis, rebuild_network
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError

__all__ = ["AmortisedFilter", "EnsembleSetConv", "grid_observations"]

#: input channels per member built by :func:`member_features`
N_FEATURES = 8


def _circular_conv(c_in: int, c_out: int, kernel: int, bias: bool = True) -> nn.Conv1d:
    return nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2, padding_mode="circular", bias=bias)


def member_features(E: Tensor, y: Tensor, inv_std: Tensor, loc: float, scale: float) -> Tensor:
    """Per-member input channels ``(B, m, 8, n)`` of the equivariant network.

    ``E`` ``(B, m, n)`` forecast members, ``y`` ``(B, n)`` observations on the
    grid (NaN where not observed), ``inv_std`` ``(B, n)`` 1/σ (0 where not
    observed). Channels: the member and the ensemble mean standardised by the
    climatology (``loc``, ``scale``), the anomaly, the ensemble std, the mask,
    the whitened innovation of the mean and of the member, and 1/σ.
    """
    mask = torch.isfinite(y)
    yz = torch.where(mask, y, torch.zeros((), dtype=y.dtype, device=y.device))
    xm = E.mean(-2, keepdim=True)
    A = E - xm
    sd = A.pow(2).sum(-2, keepdim=True).div(max(E.shape[-2] - 1, 1)).add(1e-12).sqrt()
    w = inv_std.unsqueeze(-2)
    m = mask.to(E.dtype).unsqueeze(-2)
    chans = (
        (E - loc) / scale,
        ((xm - loc) / scale).expand_as(E),
        A,
        sd.expand_as(E),
        m.expand_as(E),
        ((yz.unsqueeze(-2) - xm) * w).expand_as(E),
        (yz.unsqueeze(-2) - E) * w,
        w.expand_as(E),
    )
    return torch.stack(chans, -2)


class EnsembleSetConv(nn.Module):
    """Deep-sets × circular-convolution network giving each member's analysis increment.

    Input ``(B, m, F, n)``, output ``(B, m, n)``. Each residual block updates
    member features h_i ← h_i + W₂ φ(W₁ h_i + V mean_j h_j + U std_j h_j [+ mean_j (P h_j - mean P h) ⊙ Q h_j])
    (W, V, U, P, Q circular convolutions of width ``kernel``; the bracket with
    ``bilinear=True``, ensemble cross-covariances of nearby points): equivariant to member
    permutations (Zaheer et al. 2017) and grid translations. The last layer is
    zero-initialised, so the untrained filter returns the prior.
    """

    def __init__(
        self, channels: int = 32, depth: int = 4, kernel: int = 5, in_features: int = N_FEATURES, bilinear: bool = False
    ):
        super().__init__()
        self.config = {
            "channels": channels, "depth": depth, "kernel": kernel, "in_features": in_features, "bilinear": bilinear,
        }
        self.inp = _circular_conv(in_features, channels, kernel)
        self.own = nn.ModuleList(_circular_conv(channels, channels, kernel) for _ in range(depth))
        self.pool_mean = nn.ModuleList(_circular_conv(channels, channels, kernel, bias=False) for _ in range(depth))
        self.pool_std = nn.ModuleList(_circular_conv(channels, channels, kernel, bias=False) for _ in range(depth))
        # bilinear pooling: mean_i (U h_i) ⊙ (V h_i), ensemble cross-covariances between nearby points
        self.cross = nn.ModuleList(_circular_conv(channels, 2 * channels, kernel, bias=False) for _ in range(depth)) if bilinear else None
        self.mix = nn.ModuleList(_circular_conv(channels, channels, 1) for _ in range(depth))
        self.out = _circular_conv(channels, 1, kernel)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.act = nn.GELU()

    def forward(self, feats: Tensor) -> Tensor:
        """Increments ``(B, m, n)`` from member features ``(B, m, F, n)``."""
        B, m, F, n = feats.shape
        h = self.act(self.inp(feats.reshape(B * m, F, n)))
        C = h.shape[1]
        for j, (own, pm, ps, mix) in enumerate(zip(self.own, self.pool_mean, self.pool_std, self.mix)):
            hs = h.view(B, m, C, n)
            mean = hs.mean(1)
            std = (hs - mean.unsqueeze(1)).pow(2).mean(1).add(1e-6).sqrt()
            pooled = pm(mean) + ps(std)
            if self.cross is not None:
                u, v = self.cross[j](h).view(B, m, 2, C, n).unbind(2)
                pooled = pooled + ((u - u.mean(1, keepdim=True)) * v).mean(1)
            pooled = pooled.unsqueeze(1).expand(B, m, C, n).reshape(B * m, C, n)
            h = h + mix(self.act(own(h) + pooled))
        return self.out(h).view(B, m, n)


def amortised_update(
    net: nn.Module, E: Tensor, y: Tensor, inv_std: Tensor, loc: float, scale: float
) -> Tensor:
    """Analysis members x^a_i = x^f_i + g_θ(features) for a batch of ensembles ``(B, m, n)``."""
    return E + net(member_features(E, y, inv_std, loc, scale))


def grid_observations(obs: Observation, n: int) -> tuple[Tensor, Tensor]:
    """Observations scattered onto the grid: y ``(n,)`` (NaN where unobserved) and 1/σ ``(n,)`` (0 there).

    Needs point observations of state components (each row of ``obs.matrix``
    one-hot) with uncorrelated errors; anything else raises a ValueError.
    """
    H = obs.matrix
    if H is None or H.shape != (obs.p, n):
        raise ValueError(
            "AmortisedFilter: needs point observations of state components (obs.matrix of shape "
            f"(p, {n}) with one-hot rows); got {'no matrix' if H is None else tuple(H.shape)}"
        )
    ones = (H == 1).sum(-1) == 1
    if not bool(ones.all()) or bool(((H != 0) & (H != 1)).any()):
        raise ValueError("AmortisedFilter: obs.matrix rows must be one-hot (each observation is one state variable)")
    idx = H.argmax(-1)
    if torch.unique(idx).numel() != idx.numel():
        raise ValueError("AmortisedFilter: a state variable is observed twice in one cycle")
    err = obs.error
    if isinstance(err, DiagonalError):
        var = err.variance
    else:
        R = err.cov
        if bool((R - torch.diag(torch.diagonal(R))).abs().max() > 0):
            raise ValueError("AmortisedFilter: needs uncorrelated observation errors (diagonal R)")
        var = torch.diagonal(R)
    y = torch.full((n,), math.nan, dtype=obs.y.dtype, device=obs.y.device)
    w = torch.zeros(n, dtype=obs.y.dtype, device=obs.y.device)
    valid = torch.isfinite(obs.y)
    y[idx[valid]] = obs.y[valid]
    w[idx[valid]] = var.to(obs.y)[valid].rsqrt()
    return y, w


class AmortisedFilter(LearnedAnalysis):
    """Ensemble filter whose analysis is a trained permutation-equivariant network (McCabe & Brown 2021).

    ``net`` maps member features to increments (:class:`EnsembleSetConv`),
    ``loc``/``scale`` standardise states (climatological mean and std),
    ``N`` members, ``n`` state size, ``p`` observations per cycle, ``dtype``
    of the states it cycles (the network may run in another dtype, e.g.
    float32: inputs are cast to it and back).
    """

    kind = "ensemble"
    kind_name = "amortised"

    def __init__(
        self,
        net: nn.Module,
        N: int,
        n: int,
        p: int,
        loc: float = 0.0,
        scale: float = 1.0,
        dtype: torch.dtype = torch.float64,
        info: dict[str, Any] | None = None,
    ):
        if isinstance(N, bool) or not isinstance(N, int) or N < 2:
            raise ValueError(f"AmortisedFilter: N must be an integer >= 2, got {N!r}")
        self.net = net.eval()
        self.N, self.n, self.p = N, int(n), int(p)
        self.loc, self.scale = float(loc), float(scale)
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"AmortisedFilter: scale must be finite and > 0, got {scale}")
        self.dtype = dtype
        self.info = dict(info or {})
        self._diag: dict[str, float] = {}

    @property
    def net_dtype(self) -> torch.dtype:
        """The dtype the network's weights have."""
        return next(self.net.parameters()).dtype

    def analyse(
        self, prior: Tensor, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """Analysis ensemble ``(N, n)`` (or ``(..., N, n)``) from the forecast ensemble and ``obs``."""
        if not isinstance(prior, Tensor) or prior.ndim < 2 or prior.shape[-2] != self.N:
            got = tuple(prior.shape) if isinstance(prior, Tensor) else type(prior).__name__
            raise ValueError(f"AmortisedFilter: prior must be an ensemble (..., N={self.N}, n), got {got}")
        self.check_inputs(prior, obs)
        if not bool(torch.isfinite(prior).all()):
            raise ValueError("AmortisedFilter: the prior ensemble has non-finite values")
        y, w = grid_observations(obs, self.n)
        self._diag = {"n_obs": float(torch.isfinite(y).sum())}
        if not bool(torch.isfinite(y).any()):
            return prior
        lead = prior.shape[:-2]
        dt = self.net_dtype
        E = prior.reshape(-1, self.N, self.n).to(dt)
        B = E.shape[0]
        yb = y.to(device=E.device, dtype=dt).expand(B, self.n)
        wb = w.to(device=E.device, dtype=dt).expand(B, self.n)
        with torch.no_grad():
            Ea = amortised_update(self.net, E, yb, wb, self.loc, self.scale)
        return Ea.to(prior.dtype).reshape(*lead, self.N, self.n)

    def diagnostics(self) -> dict[str, float]:
        """Number of valid observations of the last analysis."""
        return dict(self._diag)

    def to_payload(self) -> dict[str, Any]:
        """Network, normalisation and training signature, as plain values and tensors."""
        extra = {"N": self.N, "loc": self.loc, "scale": self.scale, "info": self.info}
        return self.payload_header(extra, net=self.net)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: str | Path | None = None, **params: Any) -> AmortisedFilter:
        """Rebuild from :meth:`to_payload`; no run-time parameters are accepted."""
        if params:
            raise ValueError(f"AmortisedFilter: unknown parameters {sorted(params)}; it takes none besides path")
        net = rebuild_network(payload["networks"]["net"], path)
        return cls(
            net,
            N=int(payload["N"]),
            n=int(payload["n"]),
            p=int(payload["p"]),
            loc=float(payload["loc"]),
            scale=float(payload["scale"]),
            dtype=getattr(torch, payload["dtype"]),
            info=payload.get("info", {}),
        )

    def __repr__(self) -> str:
        return f"AmortisedFilter(N={self.N}, n={self.n}, p={self.p}, net={self.net.config})"
