"""A 1-D convolutional autoencoder with periodic padding: ring states ``(B, n)`` to latents ``(B, k)`` and back."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hybrida.nn.common import make_activation, odd_kernel, periodic_conv, positive_int, seeded


class PeriodicAutoencoder(nn.Module):
    """Convolutional autoencoder for ring-shaped states (Lorenz-96, Kuramoto–Sivashinsky).

    Encoder: a periodic lifting convolution to ``channels``, then ``levels`` times
    [periodic convolution + activation, average pooling by 2], flattened and mapped
    linearly to ``latent`` values. Decoder: the mirror image (linear map, ``levels``
    times [upsampling by 2 with circular linear interpolation, periodic convolution
    + activation], width-1 projection to one channel). Periodic padding keeps the
    ring's translation structure in the convolutions (as in the convolutional
    autoencoders of latent-space DA, Peyron et al. 2021). ``n`` must be divisible by
    ``2**levels``. With ``linear=True`` (default) a linear bypass x ↦ z and z ↦ x is added
    to the encoder and the decoder, so the network contains the POD/PCA solution; setting the
    bypass to the leading EOFs and zeroing the convolutional output layers
    (:meth:`init_from_pod`) starts training exactly at POD, and training adds a nonlinear
    correction. Input of :meth:`encode` and output of :meth:`decode`: normalised
    states ``(B, n)``; latents ``(B, latent)``; any leading dimensions are allowed.
    """

    def __init__(
        self,
        n: int,
        latent: int,
        channels: int = 16,
        levels: int = 2,
        kernel_size: int = 5,
        activation: str = "gelu",
        linear: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        n, latent, channels = positive_int("n", n), positive_int("latent", latent), positive_int("channels", channels)
        if isinstance(levels, bool) or int(levels) != levels or levels < 0:
            raise ValueError(f"levels must be an integer >= 0, got {levels}")
        levels = int(levels)
        if n % (2**levels):
            raise ValueError(f"n={n} must be divisible by 2**levels={2**levels} (lower levels)")
        kernel_size = odd_kernel(kernel_size)
        self.config = {
            "n": n, "latent": latent, "channels": channels, "levels": levels,
            "kernel_size": kernel_size, "activation": activation, "linear": bool(linear),
        }
        self.n, self.latent, self.channels, self.levels = n, latent, channels, levels
        self.coarse = n // 2**levels
        self.act = make_activation(activation)
        with seeded(seed):
            self.lift = periodic_conv(1, channels, kernel_size)
            self.down = nn.ModuleList(periodic_conv(channels, channels, kernel_size) for _ in range(levels))
            self.to_latent = nn.Linear(channels * self.coarse, latent)
            self.from_latent = nn.Linear(latent, channels * self.coarse)
            self.up = nn.ModuleList(periodic_conv(channels, channels, kernel_size) for _ in range(levels))
            self.out = periodic_conv(channels, 1, kernel_size)
            self.lin_enc = nn.Linear(n, latent) if linear else None
            self.lin_dec = nn.Linear(latent, n) if linear else None

    def init_from_pod(self, mean: Tensor, basis: Tensor) -> None:
        """Start at POD: bypass z = Uᵀ (x - mean), x = mean + U z (normalised units), convolutional outputs zero."""
        if self.lin_enc is None or self.lin_dec is None:
            raise ValueError("init_from_pod needs linear=True")
        if basis.shape != (self.n, self.latent) or mean.shape != (self.n,):
            raise ValueError(f"init_from_pod: expected mean ({self.n},) and basis ({self.n}, {self.latent})")
        with torch.no_grad():
            U, m = basis.to(self.lin_enc.weight), mean.to(self.lin_enc.weight)
            self.lin_enc.weight.copy_(U.mT)
            self.lin_enc.bias.copy_(-(U.mT @ m))
            self.lin_dec.weight.copy_(U)
            self.lin_dec.bias.copy_(m)
            for layer in (self.to_latent, self.out):
                layer.weight.zero_()
                layer.bias.zero_()

    def encode(self, x: Tensor) -> Tensor:
        """Latent ``(..., latent)`` of normalised states ``(..., n)``."""
        lead = x.shape[:-1]
        h = self.act(self.lift(x.reshape(-1, 1, self.n)))
        for conv in self.down:
            h = nn.functional.avg_pool1d(self.act(conv(h)), 2)
        z = self.to_latent(h.flatten(1))
        if self.lin_enc is not None:
            z = z + self.lin_enc(x.reshape(-1, self.n))
        return z.reshape(*lead, self.latent)

    def decode(self, z: Tensor) -> Tensor:
        """Normalised states ``(..., n)`` of latents ``(..., latent)``."""
        lead = z.shape[:-1]
        h = self.act(self.from_latent(z.reshape(-1, self.latent))).reshape(-1, self.channels, self.coarse)
        for conv in self.up:
            # circular linear interpolation: the new midpoints average their two periodic neighbours
            mid = 0.5 * (h + torch.roll(h, -1, dims=-1))
            h = torch.stack((h, mid), dim=-1).flatten(-2)
            h = self.act(conv(h))
        x = self.out(h).squeeze(-2)
        if self.lin_dec is not None:
            x = x + self.lin_dec(z.reshape(-1, self.latent))
        return x.reshape(*lead, self.n)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction decode(encode(x)) ``(..., n)``."""
        return self.decode(self.encode(x))
