"""Noise-conditional denoiser of trajectory windows: a 2-D convolution over (time, space).

The network predicts the noise ε of a noised window z_t = μ(t) z + σ(t) ε
(ε-parametrisation of denoising score matching; Ho et al. 2020, Rozet & Louppe 2023
"Score-based data assimilation"), so the score is ∇ log p_t(z_t) ≈ -ε_θ(z_t, t) / σ(t).
Convolutions are periodic in space (ring-shaped states such as Lorenz-96) and zero-padded
in time (a window has edges); the diffusion time t ∈ [0, 1] enters through a sinusoidal
embedding added, per channel, inside every residual block. Each block also has a bilinear
branch (a product of two convolutions, as in Brajard et al. 2020's CNN) that can express
quadratic advection terms. Input and output: windows ``(B, L, n)`` and times ``(B,)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _odd(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f"ScoreNet: {name} must be an odd integer >= 1, got {value!r}")
    return value


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ScoreNet: {name} must be an integer >= 1, got {value!r}")
    return value


def time_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features [sin(2^k π t), cos(2^k π t)]_{k < dim/2} of t ``(B,)`` -> ``(B, dim)``."""
    freqs = math.pi * 2.0 ** torch.arange(dim // 2, dtype=t.dtype, device=t.device)
    arg = t.unsqueeze(-1) * freqs
    return torch.cat((arg.sin(), arg.cos()), dim=-1)


class _Conv(nn.Module):
    """Conv2d over (time, space): zero padding in time, periodic padding in space."""

    def __init__(self, c_in: int, c_out: int, kt: int, kx: int) -> None:
        super().__init__()
        self.px = kx // 2
        self.conv = nn.Conv2d(c_in, c_out, (kt, kx), padding=(kt // 2, 0))

    def forward(self, h: Tensor) -> Tensor:
        if self.px:
            h = F.pad(h, (self.px, self.px, 0, 0), mode="circular")
        return self.conv(h)


class _Block(nn.Module):
    """h + conv(SiLU(conv(SiLU(h)) + a·b + e(t))), with a, b bilinear-branch convolutions of h."""

    def __init__(self, channels: int, kt: int, kx: int, embed: int) -> None:
        super().__init__()
        self.conv1 = _Conv(channels, channels, kt, kx)
        self.conv_a = _Conv(channels, channels, 1, kx)
        self.conv_b = _Conv(channels, channels, 1, kx)
        self.conv2 = _Conv(channels, channels, kt, kx)
        self.emb = nn.Linear(embed, channels)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        u = self.conv1(F.silu(h)) + self.conv_a(h) * self.conv_b(h) + self.emb(e)[..., None, None]
        return h + self.conv2(F.silu(u))


class ScoreNet(nn.Module):
    """ε_θ(z_t, t): noise prediction for noised windows ``(B, L, n)`` at diffusion times ``(B,)``.

    ``channels`` hidden channels, ``depth`` residual blocks with kernels ``kernel_time`` ×
    ``kernel_space``, a ``embed``-dimensional time embedding through a two-layer MLP. The
    last convolution starts at zero, so an untrained network predicts ε = 0.
    """

    def __init__(
        self, channels: int = 32, depth: int = 4, kernel_time: int = 3, kernel_space: int = 5, embed: int = 32
    ) -> None:
        super().__init__()
        channels, depth, embed = _positive("channels", channels), _positive("depth", depth), _positive("embed", embed)
        kt, kx = _odd("kernel_time", kernel_time), _odd("kernel_space", kernel_space)
        self.config = {"channels": channels, "depth": depth, "kernel_time": kt, "kernel_space": kx, "embed": embed}
        self.embed = embed
        self.mlp = nn.Sequential(nn.Linear(embed, 2 * embed), nn.SiLU(), nn.Linear(2 * embed, embed), nn.SiLU())
        self.lift = _Conv(1, channels, kt, kx)
        self.blocks = nn.ModuleList(_Block(channels, kt, kx, embed) for _ in range(depth))
        self.out = _Conv(channels, 1, kt, kx)
        nn.init.zeros_(self.out.conv.weight)
        nn.init.zeros_(self.out.conv.bias)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        if z.ndim != 3:
            raise ValueError(f"ScoreNet: windows must have shape (B, L, n), got {tuple(z.shape)}")
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device).expand(z.shape[0])
        e = self.mlp(time_embedding(t, self.embed))
        h = self.lift(z.unsqueeze(1))
        for block in self.blocks:
            h = block(h, e)
        return self.out(F.silu(h)).squeeze(1)
