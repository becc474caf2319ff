"""The learned parts of hybrida as plain, self-contained ``nn.Module``s ready to trace, with their manifest data.

Each part becomes a module of one tensor argument ``x`` (batch, n_in) ->
(batch, n_out) whose weights and normalisation constants live inside it, in
one dtype (no on-the-fly casts, no caches, no Python-side checks), so
``torch.jit.trace`` and ``torch.onnx.export`` see only tensor operations:

- ``surrogate``: one learned model step x_{k+1} = Phi(x_k) of a
  :class:`~hybrida.models.surrogate.SurrogateModel` (rk4 / euler / increment);
- ``correction``: the learned term s g((x - mu) / sigma) of a
  :class:`~hybrida.models.corrected.CorrectedModel` (resolvent: added after
  each physics step; tendency: added to the physics tendency). The physics is
  not exported: it is the host's own model;
- ``obs_operator``: H_theta(x) of a
  :class:`~hybrida.observations.learned.LearnedOperator`, (batch, n) -> (batch, p).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hybrida.models.corrected import CorrectedModel
from hybrida.models.surrogate import SurrogateModel
from hybrida.observations.learned import LearnedOperator

KINDS = ("surrogate", "correction", "obs_operator")


class ExportError(ValueError):
    """A part that cannot be exported or an exported file that does not match its manifest."""


@dataclass
class Part:
    """A traceable module and what the manifest says about it."""

    kind: str
    module: nn.Module
    n_in: int
    n_out: int
    info: dict[str, Any] = field(default_factory=dict)


def _net_in(net: nn.Module, dtype: torch.dtype) -> nn.Module:
    net = copy.deepcopy(net).to(dtype).eval().requires_grad_(False)
    if not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
        raise ExportError("the network has non-finite weights (untrained or diverged)")
    return net


def _buf(module: nn.Module, name: str, value: Tensor, dtype: torch.dtype) -> None:
    module.register_buffer(name, value.detach().to(dtype).clone())


class _SurrogateStep(nn.Module):
    """One step; the step sizes are buffers of the export dtype (ONNX would store Python floats as float32)."""

    def __init__(self, s: SurrogateModel, dtype: torch.dtype) -> None:
        super().__init__()
        self.net, self.n, self.scheme = _net_in(s.net, dtype), s.n, s.scheme
        for k in ("in_mean", "in_std", "out_mean", "out_std"):
            _buf(self, k, getattr(s, k), dtype)
        for k, v in (("dt", s.dt), ("half_dt", 0.5 * s.dt), ("sixth_dt", s.dt / 6.0), ("two", 2.0)):
            _buf(self, k, torch.tensor(v, dtype=torch.float64), dtype)

    def rhs(self, x: Tensor) -> Tensor:
        g = self.net(((x - self.in_mean) / self.in_std).reshape(-1, self.n)).reshape(x.shape)
        return self.out_mean + self.out_std * g

    def forward(self, x: Tensor) -> Tensor:
        if self.scheme == "rk4":  # the same operations, in the same order, as integrators.rk4_step
            k1 = self.rhs(x)
            k2 = self.rhs(x + self.half_dt * k1)
            k3 = self.rhs(x + self.half_dt * k2)
            k4 = self.rhs(x + self.dt * k3)
            return x + self.sixth_dt * (k1 + self.two * k2 + self.two * k3 + k4)
        if self.scheme == "euler":
            return x + self.dt * self.rhs(x)
        return x + self.rhs(x)


class _Correction(nn.Module):
    def __init__(self, net: nn.Module, norm: dict[str, Tensor], dtype: torch.dtype) -> None:
        super().__init__()
        self.net = _net_in(net, dtype)
        for k in ("in_mean", "in_std", "out_std"):
            _buf(self, k, norm[k], dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_std * self.net((x - self.in_mean) / self.in_std)


class _ObsOperator(nn.Module):
    def __init__(self, op: LearnedOperator, dtype: torch.dtype) -> None:
        super().__init__()
        self.net = _net_in(op.net, dtype)
        for k in ("x_mean", "x_std", "y_mean", "y_std"):
            _buf(self, k, getattr(op, k), dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.y_mean + self.y_std * self.net((x - self.x_mean) / self.x_std)


def _plain(t: Tensor) -> Any:
    return t.detach().cpu().to(torch.float64).tolist()


def _network(net: nn.Module) -> dict[str, Any]:
    return {"class": type(net).__name__, "config": dict(getattr(net, "config", {}) or {})}


def part_of(obj: Any, dtype: torch.dtype = torch.float64) -> Part:
    """The exportable part of a SurrogateModel, CorrectedModel or LearnedOperator, in ``dtype``."""
    if isinstance(obj, SurrogateModel):
        norm = {k: _plain(getattr(obj, k)) for k in ("in_mean", "in_std", "out_mean", "out_std")}
        info = {"dt": obj.dt, "scheme": obj.scheme, "normalisation": norm, "network": _network(obj.net),
                "training_config": getattr(obj, "training_config", {}),
                "semantics": "x_next = step(x): one learned model step of length dt"}
        return Part("surrogate", _SurrogateStep(obj, dtype), obj.n, obj.n, info)
    if isinstance(obj, CorrectedModel):
        norm_t = {k: getattr(obj, k) for k in ("in_mean", "in_std", "out_std")}
        info = {"dt": obj.dt, "correction_kind": obj.kind, "physics": repr(obj.physics),
                "normalisation": {k: _plain(v) for k, v in norm_t.items()}, "network": _network(obj.net),
                "training_config": getattr(obj, "training_config", {}),
                "semantics": _CORRECTION_SEMANTICS[obj.kind]}
        return Part("correction", _Correction(obj.net, norm_t, dtype), obj.n, obj.n, info)
    if isinstance(obj, LearnedOperator):
        norm = {k: _plain(getattr(obj, k)) for k in ("x_mean", "x_std", "y_mean", "y_std")}
        info = {"locations": _plain(obj.locations), "normalisation": norm, "network": _network(obj.net),
                "meta": obj.meta, "training_config": getattr(obj, "training_config", {}),
                "semantics": "y = H(x): the learned observation operator"}
        return Part("obs_operator", _ObsOperator(obj, dtype), obj.n, obj.p, info)
    raise ExportError(
        f"cannot export a {type(obj).__name__}: exportable parts are SurrogateModel, "
        "CorrectedModel and LearnedOperator"
    )


_CORRECTION_SEMANTICS = {
    "resolvent": "x_next = M(x) + correction(x): add after each physics step",
    "tendency": "dx/dt = f(x) + correction(x): add to the physics tendency inside RK4",
}


def part_of_file(path: str | Path, dtype: torch.dtype = torch.float64) -> tuple[Part, str]:
    """Load a hybrida .pt file (surrogate, correction or learned operator) and return its part and file kind."""
    from hybrida.learn.correction_persist import FORMAT as CORR
    from hybrida.learn.correction_persist import read_correction
    from hybrida.learn.persist import FORMAT as SURR
    from hybrida.learn.persist import load_surrogate
    from hybrida.observations.learned import FORMAT as OBS
    from hybrida.observations.learned import load_learned_operator

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ExportError(f"{path}: not a hybrida model file ({type(err).__name__})") from None
    fmt = payload.get("format") if isinstance(payload, dict) else None
    try:
        if fmt == SURR:
            return part_of(load_surrogate(path), dtype), fmt
        if fmt == OBS:
            return part_of(load_learned_operator(path), dtype), fmt
        if fmt == CORR:
            net, data = read_correction(path)
            m = data["model"]
            info = {"dt": m["dt"], "correction_kind": m["kind"], "physics": m["physics"],
                    "normalisation": {k: _plain(v) for k, v in data["norm"].items()},
                    "network": dict(data["network"]), "training_config": data["config"],
                    "semantics": _CORRECTION_SEMANTICS[m["kind"]]}
            return Part("correction", _Correction(net, data["norm"], dtype), m["n"], m["n"], info), fmt
    except ExportError as err:
        raise ExportError(f"{path}: {err}") from None
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise ExportError(f"{path}: cannot rebuild the model: {err}") from None
    known = f"{SURR}, {CORR}, {OBS}"
    raise ExportError(f"{path}: unknown file kind {fmt!r}; exportable: {known}")
