"""Periodic 1-D convolutional networks for ring-shaped states (Lorenz-96, Kuramoto–Sivashinsky)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hybrida.nn.common import make_activation, odd_kernel, periodic_conv, positive_int, seeded


class BrajardCNN(nn.Module):
    """CNN with a bilinear layer for Lorenz-96-like rings (Brajard et al. 2020, after Fablet et al. 2018).

    Layers (all convolutions periodic): three parallel convolutions a, b, c
    with ``filters`` channels and width ``kernel_size`` (no activation); the
    bilinear layer concatenates [a, b * c]; a convolution to ``hidden``
    channels with ReLU; a width-1 convolution to one output channel (linear).
    The product b * c can express the quadratic advection term of L96
    exactly. Brajard et al. use 24 / 37 filters of width 5 and an input batch
    normalisation, which here is replaced by the fixed input normalisation of
    :class:`SurrogateModel` (same effect at inference, deterministic).
    Input and output: (B, n).
    """

    def __init__(
        self, filters: int = 24, hidden: int = 37, kernel_size: int = 5, seed: int | None = None
    ) -> None:
        super().__init__()
        filters = positive_int("filters", filters)
        hidden = positive_int("hidden", hidden)
        kernel_size = odd_kernel(kernel_size)
        self.config = {"filters": filters, "hidden": hidden, "kernel_size": kernel_size}
        with seeded(seed):
            self.conv_a = periodic_conv(1, filters, kernel_size)
            self.conv_b = periodic_conv(1, filters, kernel_size)
            self.conv_c = periodic_conv(1, filters, kernel_size)
            self.conv_hidden = periodic_conv(2 * filters, hidden, kernel_size)
            self.conv_out = nn.Conv1d(hidden, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = z.unsqueeze(-2)
        h = torch.cat((self.conv_a(h), self.conv_b(h) * self.conv_c(h)), dim=-2)
        h = torch.relu(self.conv_hidden(h))
        return self.conv_out(h).squeeze(-2)


class ResidualCNN(nn.Module):
    """Periodic 1D CNN with residual blocks h <- h + act(conv(h)); input and output (B, n).

    A width-``kernel_size`` lifting convolution to ``channels``, ``blocks``
    residual blocks (He et al. 2016), a width-1 projection to one channel.
    Translation-equivariant on the ring, so it suits homogeneous models (L96, KS).
    """

    def __init__(
        self,
        channels: int = 32,
        blocks: int = 2,
        kernel_size: int = 5,
        activation: str = "gelu",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        channels = positive_int("channels", channels)
        if isinstance(blocks, bool) or int(blocks) != blocks or blocks < 0:
            raise ValueError(f"blocks must be an integer >= 0, got {blocks}")
        kernel_size = odd_kernel(kernel_size)
        self.act = make_activation(activation)
        self.config = {
            "channels": channels,
            "blocks": int(blocks),
            "kernel_size": kernel_size,
            "activation": activation,
        }
        with seeded(seed):
            self.lift = periodic_conv(1, channels, kernel_size)
            self.blocks = nn.ModuleList(
                periodic_conv(channels, channels, kernel_size) for _ in range(int(blocks))
            )
            self.proj = nn.Conv1d(channels, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.act(self.lift(z.unsqueeze(-2)))
        for conv in self.blocks:
            h = h + self.act(conv(h))
        return self.proj(h).squeeze(-2)
