"""Learned localisation and inflation fields from the forecast ensemble (Bach et al. 2025; Wang et al. 2023).

A network reads the forecast ensemble and returns, per grid point, a multiplicative
correction of the localisation radius and of the posterior inflation used by
:class:`~hybrida.assimilation.ensemble.differentiable.TrainableLETKF`. It is
permutation-invariant over members (deep sets, Zaheer et al. 2017): each member's
anomalies pass through a shared periodic convolution, the member axis is
mean-pooled, and a second periodic convolution over the pooled features and the
ensemble mean and spread gives two fields, squashed to (1/s, s) around 1 (s =
``max_scale``) so that an untrained network starts at the plain LETKF's values
(its last layer is zero-initialised: a scale of exactly 1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _periodic_conv(c_in: int, c_out: int, width: int) -> nn.Conv1d:
    return nn.Conv1d(c_in, c_out, 2 * width + 1, padding=width, padding_mode="circular", dtype=torch.float64)


class EnsembleFieldNet(nn.Module):
    """Forecast ensemble ``(..., N, n)`` → (radius scale, inflation scale), each ``(..., n)`` in (1/s, s)."""

    def __init__(self, hidden: int = 16, width: int = 2, max_scale: float = 2.0):
        super().__init__()
        self.config = {"hidden": hidden, "width": width, "max_scale": max_scale}
        self.member = nn.Sequential(_periodic_conv(1, hidden, width), nn.GELU(), _periodic_conv(hidden, hidden, width))
        self.head = nn.Sequential(_periodic_conv(hidden + 2, hidden, width), nn.GELU(), _periodic_conv(hidden, 2, width))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.log_max = float(torch.log(torch.tensor(max_scale)))

    def forward(self, E: Tensor) -> tuple[Tensor, Tensor]:
        """Radius and inflation scales per grid point, from the anomalies pooled over members."""
        batch, (N, n) = E.shape[:-2], E.shape[-2:]
        x = E.reshape(-1, N, n)
        mean = x.mean(-2)
        anomalies = x - mean.unsqueeze(-2)
        spread = anomalies.pow(2).mean(-2).sqrt()
        h = self.member(anomalies.reshape(-1, 1, n)).reshape(x.shape[0], N, -1, n).mean(1)  # pooled over members
        feats = torch.cat((h, ((mean - mean.mean(-1, keepdim=True)) / 4.0).unsqueeze(1), spread.unsqueeze(1)), 1)
        out = self.log_max * torch.tanh(self.head(feats))  # (B, 2, n)
        scales = out.exp().reshape(*batch, 2, n)
        return scales[..., 0, :], scales[..., 1, :]
