"""A 2-D convolutional LSTM cell over (time, space) fields, periodic in space (Shi et al. 2015).

Gates i, f, o, g = split(conv([input, h])); c <- sigmoid(f) c + sigmoid(i) tanh(g);
h <- sigmoid(o) tanh(c). The convolution pads the last (space) axis
periodically, as on a Lorenz-96 ring, and the time axis with zeros, so a
cell trained on short windows applies to longer ones. Used by 4DVarNet's
learned gradient solver (Fablet et al. 2021).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _odd(name: str, k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ValueError(f"ConvLSTM2d: {name} must be an odd integer >= 1, got {k!r}")
    return k


class PeriodicConv2d(nn.Conv2d):
    """Conv2d on (B, C, T, n) with periodic padding in space (n) and zero padding in time (T)."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int], bias: bool = True) -> None:
        super().__init__(c_in, c_out, kernel, bias=bias)
        self.pad_t, self.pad_s = kernel[0] // 2, kernel[1] // 2

    def forward(self, x: Tensor) -> Tensor:
        if self.pad_s:
            x = torch.cat((x[..., -self.pad_s :], x, x[..., : self.pad_s]), dim=-1)
        if self.pad_t:
            x = F.pad(x, (0, 0, self.pad_t, self.pad_t))
        return super().forward(x)


class ConvLSTM2d(nn.Module):
    """ConvLSTM cell: ``forward(u, (h, c)) -> (h, c)`` on fields (B, C, T, n).

    ``in_channels`` input channels, ``hidden`` state channels, ``kernel``
    (odd) width in time and space. :meth:`zero_state` gives the initial
    (h, c). The forget-gate bias starts at 1 (Jozefowicz et al. 2015).
    """

    def __init__(self, in_channels: int, hidden: int, kernel_time: int = 3, kernel_space: int = 3) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ConvLSTM2d: {name} must be an integer >= 1, got {v!r}")
        kt, ks = _odd("kernel_time", kernel_time), _odd("kernel_space", kernel_space)
        self.config = {"in_channels": in_channels, "hidden": hidden, "kernel_time": kt, "kernel_space": ks}
        self.hidden = hidden
        self.gates = PeriodicConv2d(in_channels + hidden, 4 * hidden, (kt, ks))
        with torch.no_grad():
            self.gates.bias.zero_()
            self.gates.bias[hidden : 2 * hidden] = 1.0

    def zero_state(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """Zero (h, c) of shape (B, hidden, T, n) for an input like ``like`` (B, C, T, n)."""
        shape = (like.shape[0], self.hidden, *like.shape[-2:])
        z = like.new_zeros(shape)
        return z, z.clone()

    def forward(self, u: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        if u.ndim != 4:
            raise ValueError(f"ConvLSTM2d: input must have shape (B, C, T, n), got {tuple(u.shape)}")
        h, c = self.zero_state(u) if state is None else state
        i, f, o, g = self.gates(torch.cat((u, h), dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c
