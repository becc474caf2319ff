"""Learned observation operators: a network H_theta(x) in the slot of the physical H.

A :class:`LearnedOperator` is the same call type as a physical operator
(``(..., n) -> (..., p)``, differentiable torch ops), so 3D-Var, 4D-Var, the
EKF (Jacobian by ``torch.func.jacfwd``/``jacrev``) and the ensemble filters
(H(x) of the members) use it without flags, as jax-cfd's learned parts mirror
the physics they replace. It wraps a network with input/output normalisation

    H_theta(x) = mu_y + sigma_y * f_theta((x - mu_x) / sigma_x),

and records what it was trained for: the state size ``n`` and the channel
locations (grid-index units, used by LETKF localisation). A state or a network
of another size or layout is refused with a one-line ``ValueError``.

The default architecture :class:`LocalChannelNet` assumes only that H is local
(each channel sees a window of the state around its centre, as radiances see a
weighting function; Eyre 1991, Geer 2021): one small MLP, shared by all
channels, maps the channel's window (plus the centre's sub-grid offset) to
the channel value, followed by a per-channel affine calibration. Sharing the
MLP makes every collocated pair train every channel (p samples per state), so
a few thousand noisy pairs pin the operator down to a fraction of the
observation error; the per-channel affine keeps channels free to differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hybrida.nn import NETWORKS, apply_cast, seeded
from hybrida.observations.base import Observation
from hybrida.observations.networks import periodic_distance
from hybrida.observations.system import ObservationSystem

__all__ = [
    "LearnedObs",
    "LearnedOperator",
    "LocalChannelNet",
    "load_learned_operator",
    "save_learned_operator",
    "with_learned_operator",
]

FORMAT = "hybrida.learned_obs_operator"
FORMAT_VERSION = 1


class LocalChannelNet(nn.Module):
    """y_c = a_c f(x[j_c - k .. j_c + k], delta_c) + b_c: a shared MLP on each channel's periodic window.

    ``centres`` (p,) in grid-index units; j_c = round(centre_c) mod n and
    delta_c = centre_c - round(centre_c) (sub-grid offset, an input so
    non-integer centres work). ``half_window`` k, ``hidden`` width, ``depth``
    hidden layers with ``tanh`` (smooth: Gauss–Newton and the TL see a smooth
    Jacobian). Input: a normalised state (..., n); output (..., p).
    """

    def __init__(
        self,
        n: int,
        centres: Sequence[float],
        half_window: int = 4,
        hidden: int = 32,
        depth: int = 2,
        seed: int | None = 0,
    ):
        super().__init__()
        c = torch.as_tensor(list(centres), dtype=torch.float64)
        if c.ndim != 1 or c.numel() == 0:
            raise ValueError("LocalChannelNet: centres must be a non-empty 1-D sequence")
        if not 0 <= half_window < n or depth < 1 or hidden < 1:
            raise ValueError(
                f"LocalChannelNet: need 0 <= half_window < n={n}, depth >= 1, hidden >= 1; "
                f"got half_window={half_window}, depth={depth}, hidden={hidden}"
            )
        self.config = {
            "n": int(n), "centres": c.tolist(), "half_window": int(half_window),
            "hidden": int(hidden), "depth": int(depth), "seed": seed,
        }
        j = torch.round(c)
        offsets = torch.arange(-half_window, half_window + 1)
        # plain attributes, not buffers: apply_cast casts every buffer to the state's dtype
        self.index = (j.long().unsqueeze(-1) + offsets).remainder(n)
        self.delta = (c - j).float()
        w = 2 * half_window + 1
        with seeded(seed):
            layers: list[nn.Module] = [nn.Linear(w + 1, hidden), nn.Tanh()]
            for _ in range(depth - 1):
                layers += [nn.Linear(hidden, hidden), nn.Tanh()]
            layers.append(nn.Linear(hidden, 1))
            self.mlp = nn.Sequential(*layers)
        self.gain = nn.Parameter(torch.ones(c.numel()))
        self.bias = nn.Parameter(torch.zeros(c.numel()))

    def forward(self, z: Tensor) -> Tensor:
        win = z[..., self.index.to(z.device)]  # (..., p, 2k+1)
        d = self.delta.to(z).expand(win.shape[:-1]).unsqueeze(-1)
        return self.mlp(torch.cat([win, d], -1)).squeeze(-1) * self.gain + self.bias


def _networks() -> dict[str, type[nn.Module]]:
    return {"LocalChannelNet": LocalChannelNet, **NETWORKS}


class LearnedOperator(nn.Module):
    """H_theta(x) = mu_y + sigma_y f((x - mu_x) / sigma_x) over leading dims, trained for ``n`` and ``locations``.

    ``x_mean``/``x_std``: scalars or (n,); ``y_mean``/``y_std``: scalars or
    (p,). The net may hold float32 weights: they are cast differentiably to
    the state's dtype (:func:`hybrida.nn.apply_cast`), so float64 DA, TL and
    adjoint see float64 arithmetic. ``meta`` records provenance (e.g.
    ``{"trained_on": "analyses"}``).
    """

    def __init__(
        self,
        net: nn.Module,
        n: int,
        locations: Tensor | Sequence[float],
        x_mean: Tensor | float = 0.0,
        x_std: Tensor | float = 1.0,
        y_mean: Tensor | float = 0.0,
        y_std: Tensor | float = 1.0,
        meta: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.net = net
        self.n = int(n)
        loc = torch.as_tensor(locations, dtype=torch.float64)
        self.register_buffer("locations", loc.clone())
        for name, v in (("x_mean", x_mean), ("x_std", x_std), ("y_mean", y_mean), ("y_std", y_std)):
            self.register_buffer(name, torch.as_tensor(v, dtype=torch.float64).clone())
        self.meta = dict(meta or {})

    @property
    def p(self) -> int:
        """Number of channels (observations) the operator returns."""
        return int(self.locations.numel())

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.n:
            raise ValueError(
                f"LearnedOperator: trained for n={self.n}, the state has last dimension {x.shape[-1]}"
            )
        z = (x - self.x_mean.to(x)) / self.x_std.to(x)
        return self.y_mean.to(x) + self.y_std.to(x) * apply_cast(self.net, z)

    def check(self, n: int | None, locations: Tensor | None, what: str = "network") -> None:
        """Refuse a network of another state size, channel count or channel layout (one-line ValueError)."""
        if n is not None and int(n) != self.n:
            raise ValueError(f"learned operator was trained for n={self.n}, the {what} has n={n}")
        if locations is None:
            raise ValueError(f"learned operator needs channel locations; the {what} has none")
        loc = torch.as_tensor(locations, dtype=torch.float64).cpu()
        if loc.numel() != self.p:
            raise ValueError(
                f"learned operator was trained for {self.p} channels, the {what} has {loc.numel()}"
            )
        ref = self.locations.cpu()
        d = periodic_distance(loc, ref, self.n).diagonal()
        if not bool((d <= 1e-6).all()):
            i = int(torch.argmax(d))
            raise ValueError(
                f"learned operator channel locations differ from the {what}'s: channel {i} "
                f"at {ref[i].item():g} (trained) vs {loc[i].item():g}"
            )


def with_learned_operator(obs: Observation, operator: LearnedOperator, n: int | None = None) -> Observation:
    """The same observations (y, R, locations) with H replaced by ``operator`` (checked against them).

    Use it to assimilate observations that already exist (a twin's, a file's)
    with a learned H; ``n`` (the state size, when known) is checked too.
    """
    operator.check(n, obs.locations, "observation")
    return Observation(
        y=obs.y,
        operator=operator,
        error=obs.error,
        locations=obs.locations,
        matrix=None,
        meta={**obs.meta, "operator": "learned", **{f"learned_{k}": v for k, v in operator.meta.items()}},
    )


class LearnedObs(ObservationSystem):
    """An observation system whose H is a :class:`LearnedOperator` and whose R, locations, timing come from ``system``.

    ``system`` is the network the operator stands in for (e.g. a
    :class:`~hybrida.observations.networks.RadianceObs`); its ``n`` (if it has
    one) and every cycle's locations are checked against the operator.
    """

    def __init__(self, system: ObservationSystem, operator: LearnedOperator):
        self.system = system
        self.operator = operator
        self.every = system.every
        self.n = getattr(system, "n", None)
        operator.check(self.n, system.network(1).locations, type(system).__name__)

    def network(self, cycle: int, generator: torch.Generator | None = None) -> Observation:
        """The wrapped system's network of ``cycle`` with the learned H (``y`` NaN)."""
        return with_learned_operator(self.system.network(cycle, generator), self.operator, self.n)


def save_learned_operator(
    path: str | Path, operator: LearnedOperator, config: dict[str, Any] | None = None
) -> Path:
    """Write ``operator`` (network class + config, weights, normalisation, n, locations, meta) to one .pt file.

    ``config``: training settings to keep with the weights (plain values). The
    network must be a :class:`LocalChannelNet` or registered in
    :data:`hybrida.nn.NETWORKS`, and carry its constructor arguments in ``.config``.
    """
    from hybrida.io.checkpoint import atomic_torch_save

    net = operator.net
    name = type(net).__name__
    if _networks().get(name) is not type(net) or not isinstance(getattr(net, "config", None), dict):
        raise ValueError(f"network {name} is not LocalChannelNet or registered, or has no config dict")
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "network": {"class": name, "config": dict(net.config)},
        "n": operator.n,
        "locations": operator.locations.tolist(),
        "meta": dict(operator.meta),
        "state_dict": {k: v.detach().cpu().clone() for k, v in operator.state_dict().items()},
        "config": dict(config or {}),
    }
    return atomic_torch_save(payload, path)


def load_learned_operator(path: str | Path, map_location: str | torch.device = "cpu") -> LearnedOperator:
    """Rebuild a :class:`LearnedOperator` written by :func:`save_learned_operator` (eval mode).

    The training config comes back as ``operator.training_config``; weights are
    frozen (``requires_grad_(True)`` to fine-tune).
    """
    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a hybrida learned observation operator file")
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format version {payload.get('version')!r}")
    name = payload["network"]["class"]
    nets = _networks()
    if name not in nets:
        raise ValueError(f"{path}: unknown network class {name!r}; known: {sorted(nets)}")
    net = nets[name](**payload["network"]["config"])
    state = payload["state_dict"]
    net_dtype = next((v.dtype for k, v in state.items() if k.startswith("net.")), None)
    if net_dtype is not None:
        net.to(net_dtype)
    op = LearnedOperator(net, payload["n"], payload["locations"], meta=payload["meta"])
    for key in ("x_mean", "x_std", "y_mean", "y_std"):  # shapes may differ from the defaults
        setattr(op, key, state[key].clone())
    op.load_state_dict(state)
    op.training_config = payload["config"]
    if not math.isfinite(float(sum(v.float().sum() for v in state.values() if v.is_floating_point()))):
        raise ValueError(f"{path}: non-finite weights")
    return op.eval().requires_grad_(False)
