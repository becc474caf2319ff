"""The unresolved-scale CNN of Brajard et al. (2021) for the two-scale Lorenz-96 ring."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hybrida.nn.common import odd_kernel, periodic_conv, positive_int, seeded


class L2SNet(nn.Module):
    """Periodic CNN of Brajard et al. (2021): BN, conv filters x kernel (tanh), BN, conv hidden x 1 (tanh), conv 1 x 1.

    The sizes (43 filters of width 5, 28 hidden channels) are those of the authors' code
    (reddaml, ``L2S``). Input and output ``(B, n)``; ``batchnorm=False`` drops both batch
    normalisations (then the network is a pure function of its input, also in training mode).
    """

    def __init__(
        self,
        filters: int = 43,
        hidden: int = 28,
        kernel_size: int = 5,
        batchnorm: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        filters = positive_int("filters", filters)
        hidden = positive_int("hidden", hidden)
        kernel_size = odd_kernel(positive_int("kernel_size", kernel_size))
        self.config = {"filters": filters, "hidden": hidden, "kernel_size": kernel_size, "batchnorm": batchnorm}
        with seeded(seed):
            self.bn_in = nn.BatchNorm1d(1) if batchnorm else nn.Identity()
            self.conv1 = periodic_conv(1, filters, kernel_size)
            self.bn_mid = nn.BatchNorm1d(filters) if batchnorm else nn.Identity()
            self.conv2 = nn.Conv1d(filters, hidden, 1)
            self.out = nn.Conv1d(hidden, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = torch.tanh(self.conv1(self.bn_in(z.unsqueeze(-2))))
        h = torch.tanh(self.conv2(self.bn_mid(h)))
        return self.out(h).squeeze(-2)
