"""A fully convolutional network on doubly periodic layered fields (subgrid forcing of the QG model)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from hybrida.nn.common import make_activation, odd_kernel, positive_int, seeded
from hybrida.nn.registry import register_network


@register_network
class PeriodicFCNN(nn.Module):
    """Stacked 2-D convolutions with circular padding, (B, c_in, ny, nx) → (B, c_out, ny, nx).

    Ross et al. (2023)'s FCNN for pyqg's subgrid forcing is eight such layers
    (128, 64, 32, …, 2 channels, kernels 5 and 3, ReLU, batch norm); this is
    the same architecture with fewer and narrower layers for a CPU budget and
    no batch norm (inputs and outputs are normalised outside). Every layer but
    the last is followed by ``activation``; the last is linear. Translation
    equivariant on the torus, like the subgrid forcing itself.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 32, 32, 32),
        kernels: Sequence[int] = (5, 5, 3, 3, 3),
        c_in: int = 2,
        c_out: int = 2,
        activation: str = "relu",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        channels = [positive_int("channels", c) for c in channels]
        kernels = [odd_kernel(k) for k in kernels]
        if len(kernels) != len(channels) + 1:
            raise ValueError(
                f"PeriodicFCNN: need one kernel per layer ({len(channels) + 1}), got {len(kernels)}"
            )
        self.config = {"channels": channels, "kernels": kernels, "c_in": positive_int("c_in", c_in),
                       "c_out": positive_int("c_out", c_out), "activation": activation}
        sizes = [c_in, *channels, c_out]
        layers: list[nn.Module] = []
        with seeded(seed):
            for i, k in enumerate(kernels):
                layers.append(nn.Conv2d(sizes[i], sizes[i + 1], k, padding=k // 2, padding_mode="circular"))
                if i < len(kernels) - 1:
                    layers.append(make_activation(activation))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 4 or z.shape[1] != self.config["c_in"]:
            raise ValueError(
                f"PeriodicFCNN: input must be (B, {self.config['c_in']}, ny, nx), got {tuple(z.shape)}"
            )
        return self.layers(z)
