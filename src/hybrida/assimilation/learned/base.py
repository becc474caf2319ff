"""The contract every learned analysis shares: a payload to save, inputs checked against training.

A learned analysis is an :class:`~hybrida.assimilation.base.AssimilationMethod` whose
``analyse`` runs a trained network; it is saved as one ``.pt`` file (plain tensors and
values, ``torch.load(weights_only=True)``) holding its kind, the state size ``n``, the number
of observations ``p`` and the dtype it was trained for, its network (module, class,
constructor config, weights) and anything else the kind needs.
"""

from __future__ import annotations

import importlib
from abc import abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hybrida.assimilation.base import AssimilationMethod
from hybrida.observations.base import Observation

FORMAT = "hybrida.learned_analysis"
FORMAT_VERSION = 1


def network_payload(net: nn.Module) -> dict[str, Any]:
    """``{"module", "class", "config", "state_dict"}`` of a network whose constructor kwargs are ``net.config``."""
    config = getattr(net, "config", None)
    if not isinstance(config, dict):
        raise TypeError(f"network {type(net).__name__} must keep its constructor kwargs in .config (a dict)")
    return {
        "module": type(net).__module__,
        "class": type(net).__qualname__,
        "config": dict(config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
    }


def rebuild_network(spec: dict[str, Any], path: str | Path | None = None) -> nn.Module:
    """The network saved by :func:`network_payload`, with its weights and dtype, in eval mode.

    Only classes of hybrida's own modules are rebuilt (a file cannot name arbitrary code).
    """
    where = f"{path}: " if path is not None else ""
    module = str(spec.get("module", ""))
    if not module.startswith("hybrida."):
        raise ValueError(f"{where}network module {module!r} is not part of hybrida")
    try:
        cls = getattr(importlib.import_module(module), spec["class"])
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{where}cannot rebuild network {spec.get('class')!r}: {err}") from None
    net = cls(**spec["config"])
    state = spec["state_dict"]
    dtype = next((v.dtype for v in state.values() if v.is_floating_point()), None)
    if dtype is not None:
        net.to(dtype)
    net.load_state_dict(state)
    return net.eval()


class LearnedAnalysis(AssimilationMethod):
    """Base of the learned analyses: the training signature ``(n, p, dtype)`` and the payload.

    Subclasses set ``kind_name`` (the key of :data:`hybrida.assimilation.learned.KINDS`), the
    attributes ``n``, ``p`` and ``dtype``, and implement :meth:`to_payload` (starting from
    :meth:`payload_header`) and :meth:`from_payload`.
    """

    kind_name: str = ""
    n: int
    p: int
    dtype: torch.dtype

    def payload_header(self, extra: dict[str, Any] | None = None, **networks: nn.Module) -> dict[str, Any]:
        """The common payload keys, each network under its keyword (``net=...``), plus ``extra``."""
        import hybrida

        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "kind": self.kind_name,
            "n": int(self.n),
            "p": int(self.p),
            "dtype": str(self.dtype).removeprefix("torch."),
            "networks": {name: network_payload(net) for name, net in networks.items()},
            "hybrida_version": getattr(hybrida, "__version__", "unknown"),
            **(extra or {}),
        }

    @abstractmethod
    def to_payload(self) -> dict[str, Any]:
        """Everything needed to rebuild this method (plain values and tensors)."""

    @classmethod
    @abstractmethod
    def from_payload(cls, payload: dict[str, Any], path: str | Path | None = None, **params: Any) -> LearnedAnalysis:
        """Rebuild the method from :meth:`to_payload`'s dict; ``params`` override run-time settings."""

    def check_inputs(self, prior: Tensor, obs: Observation) -> None:
        """A ValueError, saying what was expected, if ``prior``/``obs`` differ from the training signature."""
        n = prior.shape[-1]
        dtype = prior.dtype
        if n != self.n or obs.p != self.p or dtype != self.dtype:
            raise ValueError(
                f"{type(self).__name__}: trained for n={self.n}, p={self.p} observations, "
                f"{str(self.dtype).removeprefix('torch.')}; got n={n}, p={obs.p}, "
                f"{str(dtype).removeprefix('torch.')} (train it for this state size and observation "
                f"network, or cast the experiment's dtype)"
            )
