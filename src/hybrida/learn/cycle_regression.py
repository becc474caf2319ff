"""Regression of a model-error correction on one-cycle residuals (Brajard et al. 2021).

Given consecutive states x_k, x_{k+1} one observation interval ``span`` apart and a
truncated model M run for ``substeps`` steps over that interval, the targets are the
residual tendencies d_k = (x_{k+1} - M^s(x_k)) / span. The fitted network then corrects
every step of the truncated model: the hybrid is a
:class:`~hybrida.models.corrected.CorrectedModel`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hybrida.learn.train import FitResult, fit
from hybrida.models.base import Model
from hybrida.models.corrected import CorrectedModel

__all__ = ["CycleRegression", "fit_cycle_regression"]


class CycleRegression(nn.Module):
    """x_k -> M^s(x_k) + span * out_std * g((x_k - mu) / sd), so that fitting it to x_{k+1} regresses g on d_k.

    With a one-step rollout loss, |x_{k+1} - M^s(x_k) - span s g|^2 = (span s)^2 |d_k / s - g|^2:
    the mean squared error on the scaled d_k = (x_{k+1} - M^s(x_k)) / span of Brajard et al.
    (2021), with s = ``out_std``. M^s (``substeps`` steps of ``physics``) carries no gradient.
    """

    def __init__(self, physics: Model, net: nn.Module, substeps: int, mu: float, sd: float, out_std: float) -> None:
        super().__init__()
        if isinstance(substeps, bool) or int(substeps) != substeps or substeps < 1:
            raise ValueError(f"CycleRegression: substeps must be an integer >= 1, got {substeps}")
        if not (sd > 0 and out_std > 0):
            raise ValueError("CycleRegression: sd and out_std must be > 0")
        self.physics, self.net, self.substeps = physics, net, int(substeps)
        self.mu, self.sd, self.out_std = float(mu), float(sd), float(out_std)
        self.span = self.substeps * physics.dt

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            base = self.physics.forecast(x, self.substeps)
        return base + self.span * self.out_std * self.net((x - self.mu) / self.sd)

    def hybrid(self) -> CorrectedModel:
        """The hybrid model: each step of ``physics`` followed by + dt * out_std * g(z)."""
        return CorrectedModel(self.physics, self.net, "resolvent", self.mu, self.sd, self.physics.dt * self.out_std)


def fit_cycle_regression(
    physics: Model,
    net: nn.Module,
    train: Sequence[Tensor],
    valid: Sequence[Tensor],
    substeps: int,
    *,
    epochs: int = 100,
    batch_size: int = 33,
    lr: float = 1e-3,
    patience: int = 10,
    seed: int = 0,
    time_limit_s: float | None = None,
) -> tuple[CorrectedModel, FitResult]:
    """Fit ``net`` on consecutive states (segments ``(T, n)``) and return the hybrid model with the history.

    The input normalisation (``mu``, ``sd``) and the output scale (std of d_k) come from
    the training segments. Training runs in float32 (Adam, early stopping on ``valid``).
    """
    if not train:
        raise ValueError("fit_cycle_regression: no training segments")
    x_all = torch.cat([a[:-1] for a in train])
    span = substeps * physics.dt
    with torch.no_grad():
        d_all = torch.cat([a[1:] - physics.forecast(a[:-1], substeps) for a in train]) / span
    reg = CycleRegression(physics, net, substeps, float(x_all.mean()), float(x_all.std()), float(d_all.std()))
    fr = fit(
        reg,
        [a.float() for a in train],
        [a.float() for a in valid],
        rollout=1,
        steps_between=1,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        progress=False,
        seed=seed,
        time_limit_s=time_limit_s,
    )
    return reg.hybrid(), fr
