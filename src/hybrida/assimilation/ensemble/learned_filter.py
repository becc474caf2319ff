"""A learned LETKF: a taper learned as a function of distance, modulated by the ensemble, and a learned inflation field.

The setting of Bach et al. (2025, "Learning enhanced ensemble filters"): the LETKF stays
the backbone and a permutation-invariant network of the forecast ensemble sets its
localisation and inflation per analysis. Here

* the taper ρ(d) is a free function of the state–observation distance: one value per
  integer distance 0, 1, …, ``max_dist`` (σ(θ_d) ∈ (0, 1), linear in between), initialised
  at Gaspari–Cohn GC(d / (1.82 · loc_rad));
* :class:`~hybrida.assimilation.ensemble.learned_parameters.EnsembleFieldNet` (deep sets over
  the members, periodic convolutions over the grid) rescales the distance per grid point
  i, ρ_ij = ρ(d_ij / s_i), and the posterior inflation per grid point,
  λ_i = 1 + (λ − 1) t_i, with s_i, t_i ∈ (1/2, 2), both 1 when untrained;
* the analysis is :func:`~hybrida.assimilation.ensemble.differentiable.local_etkf_arrays`
  (differentiable; observation space when p < N).

The network has no parameter tied to N (pooling is a mean over members), so one trained
at one ensemble size runs at any other. :class:`LearnedLETKF` is its learned-analysis
wrapper (saved and loaded like the other learned analyses, kind ``"learned_filter"``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hybrida.assimilation.ensemble.differentiable import local_etkf_arrays
from hybrida.assimilation.ensemble.learned_parameters import EnsembleFieldNet
from hybrida.assimilation.ensemble.letkf import GC_HALF_WIDTH_FACTOR
from hybrida.assimilation.ensemble.localization import gaspari_cohn, periodic_distance
from hybrida.assimilation.learned.base import LearnedAnalysis, rebuild_network
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError

__all__ = ["DistanceTaper", "LearnedFilterNet", "LearnedLETKF", "MeanCorrection"]

_EPS = 1e-7


def _logit(p: Tensor) -> Tensor:
    p = p.clamp(_EPS, 1.0 - _EPS)
    return torch.log(p) - torch.log1p(-p)


class DistanceTaper(nn.Module):
    """Taper ρ_c(d) ∈ (0, 1) on integer distances 0 … ``max_dist`` (linear in between, constant beyond).

    One row per site class c (``classes`` rows, all initialised at Gaspari–Cohn of ``loc_rad``).
    """

    def __init__(self, max_dist: int, loc_rad: float, classes: int = 1):
        super().__init__()
        d = torch.arange(max_dist + 1, dtype=torch.float64)
        gc = gaspari_cohn(d / (GC_HALF_WIDTH_FACTOR * loc_rad))
        self.theta = nn.Parameter(_logit(gc).repeat(classes, 1))
        self.max_dist = int(max_dist)

    def values(self) -> Tensor:
        """ρ at the integer distances 0 … max_dist, ``(classes, max_dist + 1)``."""
        return torch.sigmoid(self.theta)

    def forward(self, dist: Tensor, site: Tensor | None = None) -> Tensor:
        """ρ(dist) ``(..., n, p)``, piecewise linear between integer distances; row ``site[i]`` for grid point i."""
        table = self.values().to(dist)
        x = dist.clamp(0.0, float(self.max_dist))
        i0 = x.detach().floor().clamp(max=self.max_dist - 1).long()
        frac = x - i0.to(x.dtype)
        rows = table[site if site is not None else torch.zeros(dist.shape[-2], dtype=torch.long, device=dist.device)]
        rows = rows.unsqueeze(-2).expand(*dist.shape, table.shape[-1])  # (..., n, p, max_dist + 1)
        lo = rows.gather(-1, i0.unsqueeze(-1)).squeeze(-1)
        hi = rows.gather(-1, (i0 + 1).unsqueeze(-1)).squeeze(-1)
        return lo * (1.0 - frac) + hi * frac


class MeanCorrection(nn.Module):
    """A correction δ ``(..., n)`` of the analysis mean (the optional gain correction), zero when untrained.

    Periodic convolutions over member-symmetric channels: forecast and analysis means
    (centred, /4), forecast and analysis spreads, the whitened innovation of the forecast
    mean at the observed points (0 elsewhere) and the observation mask. With ``particles``
    two channels more, from the whole forecast ensemble rather than its first two moments:
    the increment of a localised particle-filter mean over the forecast mean (member
    weights per grid point i from the likelihood of the observations tapered by ρ_i·) and
    the effective sample size of those weights over N. Both depend on N (the weights are
    reliable only for a large ensemble), which lets one network use a large ensemble's
    non-Gaussian information that the Gaussian LETKF update discards.
    """

    def __init__(self, hidden: int = 16, width: int = 2, particles: bool = False):
        super().__init__()
        self.config = {"hidden": hidden, "width": width} | ({"particles": True} if particles else {})
        self.particles = bool(particles)
        k = 2 * width + 1
        self.channels = 8 if particles else 6

        def conv(a: int, b: int) -> nn.Conv1d:
            return nn.Conv1d(a, b, k, padding=width, padding_mode="circular", dtype=torch.float64)

        self.body = nn.Sequential(conv(self.channels, hidden), nn.GELU(), conv(hidden, hidden), nn.GELU(),
                                  conv(hidden, 1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    @staticmethod
    def particle_channels(Ef: Tensor, HE: Tensor, y: Tensor, sig: Tensor, rho: Tensor) -> tuple[Tensor, Tensor]:
        """Localised particle-filter increment and effective-sample fraction ``(..., n)`` each.

        Weights of member m at grid point i: softmax over m of −½ Σ_j ρ_ij ((y_j − (HE)_mj) / σ_j)².
        """
        r = ((y.unsqueeze(-2) - HE) / sig) ** 2  # (..., N, p)
        w = torch.softmax(-0.5 * r @ rho.transpose(-1, -2), dim=-2)  # (..., N, n)
        increment = (w * Ef).sum(-2) - Ef.mean(-2)
        ess = 1.0 / (Ef.shape[-2] * (w * w).sum(-2))
        return increment, ess

    def forward(self, Ef: Tensor, Ea: Tensor, innovation: Tensor, mask: Tensor,
                particles: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """δ from forecast and analysis ensembles ``(..., N, n)`` and gridded innovation and mask ``(..., n)``.

        ``particles``: :meth:`particle_channels` (needed when built with ``particles=True``).
        """
        batch, n = Ef.shape[:-2], Ef.shape[-1]
        mf, ma = Ef.mean(-2), Ea.mean(-2)
        centre = mf.mean(-1, keepdim=True)
        chans = [(mf - centre) / 4.0, (ma - centre) / 4.0, Ef.std(-2), Ea.std(-2), innovation, mask.expand_as(mf)]
        if self.particles:
            if particles is None:
                raise ValueError("MeanCorrection: built with particles=True, so the particle channels are needed")
            chans += list(particles)
        return self.body(torch.stack(chans, -2).reshape(-1, self.channels, n)).reshape(*batch, n)


class LearnedFilterNet(nn.Module):
    """Learned taper, inflation and ensemble field network of a periodic 1-D grid of ``n`` points.

    ``sites`` > 1 gives grid points their own taper row and base inflation by their distance
    to the nearest observation (0, 1, …, sites − 1 and beyond): an observing network that
    leaves points unobserved between observations calls for different weights there.
    ``forward(E, HE, y, sig, locations)`` is the analysis ensemble ``(..., N, n)``.
    """

    def __init__(self, n: int, loc_rad: float = 3.0, infl: float = 1.05, max_dist: int | None = None,
                 field: dict[str, Any] | None = None, sites: int = 1, correction: dict[str, Any] | None = None):
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"LearnedFilterNet: n must be an integer >= 2, got {n!r}")
        if not (math.isfinite(loc_rad) and loc_rad > 0):
            raise ValueError(f"LearnedFilterNet: loc_rad must be > 0, got {loc_rad}")
        if not (math.isfinite(infl) and infl > 1.0):
            raise ValueError(f"LearnedFilterNet: infl must be > 1, got {infl}")
        if isinstance(sites, bool) or not isinstance(sites, int) or sites < 1:
            raise ValueError(f"LearnedFilterNet: sites must be an integer >= 1, got {sites!r}")
        max_dist = n // 2 if max_dist is None else int(max_dist)
        self.config = {"n": n, "loc_rad": float(loc_rad), "infl": float(infl), "max_dist": max_dist,
                       "field": None if field is None else dict(field), "sites": sites,
                       "correction": None if correction is None else dict(correction)}
        self.n = n
        self.sites = sites
        self.taper = DistanceTaper(max_dist, loc_rad, sites)
        self.theta_infl = nn.Parameter(torch.full((sites,), math.log(math.expm1(infl - 1.0)), dtype=torch.float64))
        self.field = EnsembleFieldNet(**field) if field is not None else None
        self.correction = MeanCorrection(**correction) if correction is not None else None

    @property
    def infl(self) -> Tensor:
        """Base posterior inflation 1 + softplus(θ) per site class ``(sites,)``."""
        return 1.0 + nn.functional.softplus(self.theta_infl)

    def site_classes(self, locations: Tensor) -> Tensor:
        """Class of every grid point ``(n,)``: its distance to the nearest observation, rounded, at most sites − 1."""
        grid = torch.arange(self.n, dtype=locations.dtype, device=locations.device)
        if self.sites == 1 or locations.numel() == 0:
            return torch.zeros(self.n, dtype=torch.long, device=locations.device)
        near = periodic_distance(grid.unsqueeze(-1), locations.unsqueeze(-2), float(self.n)).amin(-1)
        return near.round().clamp(max=self.sites - 1).long()

    def fields(self, E: Tensor, locations: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Distance scale s_i and inflation λ_i per grid point, each ``(..., n)``."""
        site = self.site_classes(locations.to(E)) if locations is not None else torch.zeros(self.n, dtype=torch.long)
        base = (self.infl - 1.0).to(E)[site]
        if self.field is None:
            ones = torch.ones(E.shape[:-2] + E.shape[-1:], dtype=E.dtype, device=E.device)
            return ones, 1.0 + base * ones
        s, t = self.field(E)
        return s, 1.0 + base * t

    def taper_matrix(self, E: Tensor, locations: Tensor) -> tuple[Tensor, Tensor]:
        """ρ ``(..., n, p)`` between grid points and observations, and the inflation field ``(..., n)``."""
        locations = locations.to(E)
        grid = torch.arange(self.n, dtype=E.dtype, device=E.device)
        dist = periodic_distance(grid.unsqueeze(-1), locations.unsqueeze(-2), float(self.n))
        s, infl = self.fields(E, locations)
        return self.taper(dist / s.unsqueeze(-1), self.site_classes(locations)), infl

    def forward(self, E: Tensor, HE: Tensor, y: Tensor, sig: Tensor, locations: Tensor) -> Tensor:
        """Posterior ensemble ``(..., N, n)``: the LETKF with the learned taper, then the inflation field."""
        rho, infl = self.taper_matrix(E, locations)
        Ea = local_etkf_arrays(E, HE, y, sig, rho)
        mean = Ea.mean(-2, keepdim=True)
        Ea = mean + infl.unsqueeze(-2) * (Ea - mean)
        if self.correction is None:
            return Ea
        cells = locations.to(E).round().long().remainder(self.n)
        innovation = torch.zeros(E.shape[:-2] + (self.n,), dtype=E.dtype, device=E.device)
        innovation = innovation.index_add(-1, cells, (y - HE.mean(-2)) / sig)
        mask = torch.zeros(self.n, dtype=E.dtype, device=E.device).index_fill(0, cells, 1.0)
        particles = (MeanCorrection.particle_channels(E, HE, y, sig, rho) if self.correction.particles else None)
        return Ea + self.correction(E, Ea, innovation, mask, particles).unsqueeze(-2)


class LearnedLETKF(LearnedAnalysis):
    """The learned filter as an assimilation method: any ensemble size N ≥ 2, any located observations, diagonal R.

    Trained for a state size ``n`` and a dtype (checked); ``p`` records the training network
    but other observation networks are accepted (the taper is a function of distance). ``N``
    only sets the size of the initial ensemble a run draws (default: the training size);
    ``analyse`` takes any N.
    """

    kind = "ensemble"
    kind_name = "learned_filter"

    def __init__(self, net: LearnedFilterNet, p: int, N: int = 20, dtype: torch.dtype = torch.float64,
                 info: dict[str, Any] | None = None):
        if not isinstance(net, LearnedFilterNet):
            raise TypeError(f"LearnedLETKF: expected a LearnedFilterNet, got {type(net).__name__}")
        if isinstance(N, bool) or not isinstance(N, int) or N < 2:
            raise ValueError(f"LearnedLETKF: N (ensemble size) must be an integer >= 2, got {N!r}")
        self.N = N
        self.net = net
        self.n = net.n
        self.p = int(p)
        self.dtype = dtype
        self.info = dict(info or {})
        self._diag: dict[str, float] = {}

    def check_inputs(self, prior: Tensor, obs: Observation) -> None:
        """A ValueError naming what to fix for a wrong state size, dtype, ensemble or observations."""
        if prior.ndim < 2 or prior.shape[-2] < 2:
            raise ValueError(f"LearnedLETKF: prior must be an ensemble (..., N >= 2, n), got shape {tuple(prior.shape)}")
        if prior.shape[-1] != self.n or prior.dtype != self.dtype:
            raise ValueError(
                f"LearnedLETKF: trained for n={self.n}, {str(self.dtype).removeprefix('torch.')}; got "
                f"n={prior.shape[-1]}, {str(prior.dtype).removeprefix('torch.')} (train it for this state size "
                "or cast the experiment's dtype)"
            )
        if not bool(torch.isfinite(prior).all()):
            raise ValueError("LearnedLETKF: the prior ensemble has non-finite values")
        if obs.locations is None:
            raise ValueError("LearnedLETKF: observations need locations (grid coordinates) for the taper")
        if not isinstance(obs.error, DiagonalError):
            raise ValueError("LearnedLETKF: R-localisation needs a diagonal observation error")  # noqa: TRY004

    def analyse(
        self, prior: Tensor, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """Posterior ensemble ``(..., N, n)`` (observations marked missing are dropped)."""
        self.check_inputs(prior, obs)
        obs = obs.valid()
        if obs.p == 0:
            self._diag = {"n_obs": 0.0}
            return prior
        sig = obs.error.variance.to(prior).sqrt()
        with torch.no_grad():
            Ea = self.net(prior, obs.H(prior), obs.y.to(prior), sig, obs.locations)
            s, infl = self.net.fields(prior, obs.locations)
        self._diag = {"n_obs": float(obs.p), "infl_mean": float(infl.mean()), "dist_scale_mean": float(s.mean())}
        return Ea

    def diagnostics(self) -> dict[str, float]:
        """Number of observations, mean inflation and mean distance scale of the last analysis."""
        return dict(self._diag)

    def to_payload(self) -> dict[str, Any]:
        """Network and training signature, as plain values and tensors."""
        return self.payload_header({"info": self.info, "N": self.N}, net=self.net)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: str | Path | None = None, **params: Any) -> LearnedLETKF:
        """Rebuild from :meth:`to_payload`; the run-time parameter ``N`` (ensemble size) overrides the training one."""
        N = params.pop("N", payload.get("N", 20))
        if params:
            raise ValueError(f"LearnedLETKF: unknown parameters {sorted(params)}; it takes only N besides path")
        net = rebuild_network(payload["networks"]["net"], path)
        if not isinstance(net, LearnedFilterNet):
            raise ValueError(f"{path}: the saved network is a {type(net).__name__}, not a LearnedFilterNet")  # noqa: TRY004
        return cls(net, p=int(payload["p"]), N=N, dtype=getattr(torch, payload["dtype"]), info=payload.get("info", {}))

    def __repr__(self) -> str:
        return f"LearnedLETKF(N={self.N}, n={self.n}, infl={self.net.infl.detach().tolist()}, field={self.net.field is not None})"
