"""Shared building blocks of the networks: seeded initialisation, argument checks, periodic convolutions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with the global torch RNG seeded to ``seed`` and restore it afterwards.

    Used for layer initialisation (``nn.Linear``/``nn.Conv1d`` draw from the
    global RNG); ``None`` leaves the global RNG untouched and unseeded.
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value}")
    return int(value)


def odd_kernel(kernel_size: int) -> int:
    k = positive_int("kernel_size", kernel_size)
    if k % 2 == 0:
        raise ValueError(f"kernel_size must be odd (centred periodic stencil), got {k}")
    return k


def make_activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


def periodic_conv(c_in: int, c_out: int, kernel_size: int) -> nn.Conv1d:
    """A 1D convolution with circular (periodic) padding that keeps the grid length."""
    return nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2, padding_mode="circular")




def apply_cast(net: nn.Module, z: Tensor) -> Tensor:
    """``net(z)`` with the weights and buffers cast, differentiably, to ``z``'s dtype and device.

    Weights stored in float32 then serve float64 states (DA, tangent-linear, adjoint) without
    a copy of the module; gradients still reach the stored weights.
    """
    p = next(net.parameters(), None)
    if p is None or (p.dtype == z.dtype and p.device == z.device):
        return net(z)
    tensors = {k: v.to(z) for k, v in net.named_parameters()}
    tensors.update({k: v.to(z) if v.is_floating_point() else v.to(z.device) for k, v in net.named_buffers()})
    return torch.func.functional_call(net, tensors, (z,))
