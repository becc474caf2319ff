"""Save and load surrogate models with their architecture and training config (one .pt file).

The file holds only tensors and plain Python values (loaded with
``torch.load(weights_only=True)``), so it is readable without the training
code: the network is rebuilt from its class name and constructor config,
then the weights and normalisation buffers are loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hybrida.io.checkpoint import atomic_torch_save
from hybrida.models.surrogate import SurrogateModel
from hybrida.nn import NETWORKS

FORMAT = "hybrida.surrogate"
FORMAT_VERSION = 1


def network_spec(net: torch.nn.Module) -> dict[str, Any]:
    """``{"class", "config"}`` of a registered network, or a ValueError saying how to register it."""
    name = type(net).__name__
    if NETWORKS.get(name) is not type(net) or not isinstance(getattr(net, "config", None), dict):
        raise ValueError(
            f"network {name} is not registered or has no config dict; use register_network"
        )
    return {"class": name, "config": dict(net.config)}


def read_payload(
    path: str | Path, fmt: str, version: int, what: str, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """The payload dict of a hybrida ``.pt`` file of format ``fmt`` (``what`` names it in errors)."""
    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ValueError(f"{path}: not a hybrida {what} file")
    if payload.get("version") != version:
        raise ValueError(f"{path}: unsupported {what} format version {payload.get('version')!r}")
    return payload


def build_network(payload: dict[str, Any], path: str | Path) -> torch.nn.Module:
    """The untrained network named in ``payload["network"]``, rebuilt from its class and config."""
    name = payload["network"]["class"]
    if name not in NETWORKS:
        raise ValueError(f"{path}: unknown network class {name!r}; known: {sorted(NETWORKS)}")
    return NETWORKS[name](**payload["network"]["config"])


def save_surrogate(
    path: str | Path, surrogate: SurrogateModel, config: dict[str, Any] | None = None
) -> Path:
    """Write ``surrogate`` (weights, normalisation, reference state, dt, scheme, architecture) atomically.

    ``config``: the training configuration to keep with the weights (plain
    values: numbers, strings, lists, dicts). The network class must be in
    :data:`hybrida.nn.NETWORKS` (see ``register_network``) and
    carry its constructor arguments in ``net.config``.
    """
    if not isinstance(surrogate, SurrogateModel):
        raise TypeError(f"surrogate must be a SurrogateModel, got {type(surrogate).__name__}")
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "network": network_spec(surrogate.net),
        "model": {"n": surrogate.n, "dt": surrogate.dt, "scheme": surrogate.scheme},
        "state_dict": {k: v.detach().cpu().clone() for k, v in surrogate.state_dict().items()},
        "config": dict(config or {}),
    }
    return atomic_torch_save(payload, path)


def load_surrogate(path: str | Path, map_location: str | torch.device = "cpu") -> SurrogateModel:
    """Rebuild a :class:`SurrogateModel` saved by :func:`save_surrogate`, in eval mode.

    The saved training config is attached as ``model.training_config``.
    """
    payload = read_payload(path, FORMAT, FORMAT_VERSION, "surrogate", map_location)
    net = build_network(payload, path)
    m = payload["model"]
    model = SurrogateModel(net, n=m["n"], dt=m["dt"], scheme=m["scheme"])
    state = payload["state_dict"]
    net_dtype = next((v.dtype for k, v in state.items() if k.startswith("net.")), None)
    if net_dtype is not None:
        model.net.to(net_dtype)
    model.load_state_dict(state)
    model.training_config = payload["config"]
    return model.eval()
