"""Which torch device a run computes on: parsing, availability, and moving run state there.

A config names its device as ``cpu``, ``cuda``, ``cuda:K`` or ``mps``; the run then
creates its truth, observations and initial state on it and every model and method
follows the device of its input tensors (DESIGN.md: never hard-code a device).
Random numbers are drawn on the generator's device (a CPU ``torch.Generator``) and
moved, so a run gives the same draws on every device and CPU runs keep their bits.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import torch

#: the device names a config accepts
DEVICE_RE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
ALLOWED = "cpu, cuda, cuda:K (K = 0, 1, ...), mps"


def parse_device(name: str) -> str:
    """``name`` normalised (stripped, lower case); a ValueError naming the allowed forms otherwise."""
    text = str(name).strip().lower()
    if not DEVICE_RE.match(text):
        raise ValueError(f"device: unknown device {name!r}; choose one of: {ALLOWED}")
    return text


def available_devices() -> list[str]:
    """The devices torch can use here, e.g. ``['cpu']`` or ``['cpu', 'cuda', 'cuda:0', 'cuda:1']``."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += ["cuda", *(f"cuda:{k}" for k in range(torch.cuda.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_available(name: str) -> str:
    """``name`` (parsed) when torch can use it here; a one-line ValueError listing what is available."""
    text = parse_device(name)
    have = available_devices()
    if text in have:
        return text
    if text.startswith("cuda") and torch.cuda.is_available():
        why = f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    elif text.startswith("cuda"):
        why = "torch.cuda.is_available() is False"
    else:
        why = "torch.backends.mps.is_available() is False"
    raise ValueError(f"device: {text!r} is not available ({why}); available devices: {', '.join(have)}")


def to_device(obj: Any, device: torch.device | str) -> Any:
    """``obj`` with every tensor inside (tensors, dataclasses, dicts, lists, tuples) moved to ``device``.

    Objects already there are returned as they are (no copy), so on the run's own device this is free.
    """
    device = torch.device(device)
    if isinstance(obj, torch.Tensor):
        return obj if obj.device == device else obj.to(device)
    if isinstance(obj, np.ndarray):  # host data (e.g. an observation file's times); numpy 2's own
        return obj  # array-API ``to_device`` takes a device string, not a torch device
    own = getattr(obj, "to_device", None)  # e.g. Observation, ErrorModel: they know their tensors
    if callable(own) and not isinstance(obj, type):
        return own(device)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {
            f.name: to_device(getattr(obj, f.name), device)
            for f in dataclasses.fields(obj)
            if f.init
        }
        moved = {k: v for k, v in changes.items() if v is not getattr(obj, k)}
        return dataclasses.replace(obj, **moved) if moved else obj
    if isinstance(obj, dict):
        out = {k: to_device(v, device) for k, v in obj.items()}
        return obj if all(out[k] is obj[k] for k in obj) else out
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        items = [to_device(v, device) for v in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return type(obj)(items)
    return obj


def move_attributes(obj: Any, device: torch.device | str) -> Any:
    """Move the tensors an object holds in its attributes (a method's B, climatology, taper tables) to ``device``.

    In place, and returned for chaining; a ``torch.nn.Module`` moves with ``Module.to``. Attributes
    already on ``device`` are left untouched, so on the CPU this changes nothing.
    """
    device = torch.device(device)
    if isinstance(obj, torch.nn.Module):
        obj.to(device)
    state = getattr(obj, "__dict__", None)
    if state is None:
        return obj
    for name, value in list(state.items()):
        if name.startswith("_") and isinstance(obj, torch.nn.Module) and name in (
            "_parameters", "_buffers", "_modules"
        ):
            continue
        if isinstance(value, torch.nn.Module):
            value.to(device)
            continue
        moved = to_device(value, device)
        if moved is not value:
            state[name] = moved
    return obj
