"""A periodic 2-D CNN on flat layered states, for surrogates of gridded models (the QG emulator)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from hybrida.nn.common import positive_int
from hybrida.nn.registry import register_network
from hybrida.nn.subgrid_cnn import PeriodicFCNN


@register_network
class GridCNN(nn.Module):
    """(B, n) → (B, n) through a :class:`PeriodicFCNN` on the grid (B, layers, ny, nx), n = layers·ny·nx.

    The state vector is read as ``layers`` stacked doubly periodic fields in C order
    (the layout of :class:`~hybrida.models.qg.QGModel`), so the map is translation
    equivariant on the torus; ``ny`` defaults to a square grid. Used by
    :class:`~hybrida.models.surrogate.SurrogateModel` like the 1-D networks.
    """

    def __init__(
        self,
        n: int,
        layers: int = 2,
        ny: int | None = None,
        channels: Sequence[int] = (32, 32, 32),
        kernels: Sequence[int] = (5, 3, 3, 3),
        activation: str = "gelu",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        n, layers = positive_int("n", n), positive_int("layers", layers)
        if n % layers:
            raise ValueError(f"GridCNN: n={n} is not a multiple of layers={layers}")
        cells = n // layers
        if ny is None:
            ny = math.isqrt(cells)
            if ny * ny != cells:
                raise ValueError(f"GridCNN: n/layers={cells} is not a square grid; give ny")
        ny = positive_int("ny", ny)
        if cells % ny:
            raise ValueError(f"GridCNN: n/layers={cells} is not a multiple of ny={ny}")
        self.shape = (layers, ny, cells // ny)
        self.body = PeriodicFCNN(channels, kernels, c_in=layers, c_out=layers, activation=activation, seed=seed)
        self.config = {"n": n, "layers": layers, "ny": ny, "channels": list(self.body.config["channels"]),
                       "kernels": list(self.body.config["kernels"]), "activation": activation}

    def forward(self, z: Tensor) -> Tensor:
        if z.shape[-1] != self.config["n"]:
            raise ValueError(f"GridCNN: input must be (..., {self.config['n']}), got {tuple(z.shape)}")
        lead = z.shape[:-1]
        return self.body(z.reshape(-1, *self.shape)).reshape(*lead, -1)
