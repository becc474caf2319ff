"""Save and load the learned part of a :class:`~hybrida.models.corrected.CorrectedModel` (one .pt file).

Only the correction is stored: the network (class name + constructor config
+ weights), its normalisation (mu, sigma, s), its kind (resolvent or
tendency), the state size and time step, and a description of the physics it
was trained with. The physics itself is code, not data: :func:`load_correction`
takes it as an argument and checks its ``n`` and ``dt`` against the file.
The payload holds only tensors and plain values (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from hybrida.io.checkpoint import atomic_torch_save
from hybrida.learn.persist import build_network, network_spec, read_payload
from hybrida.models.base import Model
from hybrida.models.corrected import CorrectedModel

__all__ = ["FORMAT", "load_correction", "read_correction", "save_correction"]

FORMAT = "hybrida.correction"
FORMAT_VERSION = 1


def save_correction(
    path: str | Path, model: CorrectedModel, config: dict[str, Any] | None = None
) -> Path:
    """Write the learned correction of ``model`` atomically; ``config``: training settings (plain values).

    The network must be registered in :data:`hybrida.nn.NETWORKS` and carry its
    constructor arguments in ``net.config``.
    """
    if not isinstance(model, CorrectedModel):
        raise TypeError(f"model must be a CorrectedModel, got {type(model).__name__}")
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "network": network_spec(model.net),
        "model": {"n": int(model.n), "dt": float(model.dt), "kind": model.kind,
                  "physics": repr(model.physics)},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.net.state_dict().items()},
        "norm": {k: getattr(model, k).detach().cpu().clone() for k in ("in_mean", "in_std", "out_std")},
        "config": dict(config or {}),
    }
    return atomic_torch_save(payload, path)


def read_correction(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network (eval mode, stored dtype) and the payload of a file written by :func:`save_correction`."""
    payload = read_payload(path, FORMAT, FORMAT_VERSION, "correction")
    net = build_network(payload, path)
    state = payload["state_dict"]
    dtype = next((v.dtype for v in state.values() if v.is_floating_point()), None)
    if dtype is not None:
        net.to(dtype)
    net.load_state_dict(state)
    finite = all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())
    if not finite or not all(math.isfinite(float(v.sum())) for v in payload["norm"].values()):
        raise ValueError(f"{path}: non-finite weights or normalisation")
    return net.eval().requires_grad_(False), payload


def load_correction(path: str | Path, physics: Model) -> CorrectedModel:
    """Rebuild the :class:`CorrectedModel` of ``physics`` plus the stored correction (eval mode).

    ``physics`` must have the stored ``n`` and ``dt``; the training config comes
    back as ``model.training_config``.
    """
    net, payload = read_correction(path)
    m = payload["model"]
    if int(physics.n) != m["n"] or not math.isclose(float(physics.dt), m["dt"], rel_tol=1e-12):
        raise ValueError(
            f"{path}: correction trained for n={m['n']}, dt={m['dt']}; "
            f"the physics has n={physics.n}, dt={physics.dt}"
        )
    norm = payload["norm"]
    model = CorrectedModel(physics, net, m["kind"], norm["in_mean"], norm["in_std"], norm["out_std"])
    model.training_config = payload["config"]
    return model.eval()
