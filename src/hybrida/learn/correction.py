"""Offline training of a model-error correction on analyses (Farchi et al. 2021; Brajard et al. 2021).

The hybrid model itself is :class:`hybrida.models.corrected.CorrectedModel`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hybrida.learn.train import FitResult, fit
from hybrida.models.base import Model
from hybrida.models.corrected import CorrectedModel

__all__ = ["correction_targets", "fit_correction"]


def correction_targets(physics: Model, analyses: Tensor, steps_between: int = 1) -> Tensor:
    """Analysis increments of the physics, x^a_{k+1} - M^s(x^a_k): what a resolvent correction must learn, ``(K, n)``."""
    with torch.no_grad():
        return analyses[1:] - physics.forecast(analyses[:-1], steps_between)


def fit_correction(
    physics: Model,
    net: nn.Module,
    analyses: Tensor | Sequence[Tensor],
    *,
    kind: str = "resolvent",
    steps_between: int = 1,
    valid_fraction: float = 0.2,
    rollout: int = 1,
    in_mean: float | None = None,
    in_std: float | None = None,
    out_std: float | None = None,
    **fit_kwargs,
) -> tuple[CorrectedModel, FitResult]:
    """Train a correction on analysis pairs (x^a_k, x^a_{k+s}) and return the hybrid model and history.

    The loss is the rollout loss of :func:`hybrida.learn.train.fit`, i.e.
    |M_hyb^s(x^a_k) - x^a_{k+s}|^2 (Farchi et al. 2021 offline learning on
    analysis-forecast pairs; Brajard et al. 2021). Normalisation: mu and sigma
    pooled over the analyses, s = std of the one-cycle residuals
    x^a_{k+1} - M^s(x^a_k) (divided by s dt for a tendency). The last
    ``valid_fraction`` of each archive validates (early stopping).
    ``in_mean``/``in_std``/``out_std`` override the estimated normalisation
    (e.g. to match an online learner's, for transfer learning).
    """
    archives = [analyses] if isinstance(analyses, Tensor) else list(analyses)
    if not archives or any(a.ndim != 2 or a.shape[0] < 3 for a in archives):
        raise ValueError("fit_correction: analyses must be (T >= 3, n) tensors")
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"fit_correction: valid_fraction must be in [0, 1), got {valid_fraction}")
    allx = torch.cat(archives).to(torch.float64)
    resid = torch.cat([correction_targets(physics, a.to(torch.float64), steps_between) for a in archives])
    if out_std is None:
        out_std = float(resid.std())
        if kind == "tendency":
            out_std /= steps_between * physics.dt
        if not math.isfinite(out_std) or out_std <= 0:
            raise ValueError("fit_correction: the analyses have no residual with respect to the physics")
    mu = float(allx.mean()) if in_mean is None else in_mean
    sd = float(allx.std()) if in_std is None else in_std
    model = CorrectedModel(physics, net, kind, mu, sd, out_std)
    train, valid = [], []
    for a in archives:
        cut = a.shape[0] - round(valid_fraction * a.shape[0]) if valid_fraction > 0 else a.shape[0]
        train.append(a[:cut])
        if valid_fraction > 0:
            valid.append(a[cut:])
    result = fit(model, train, valid or None, rollout=rollout, steps_between=steps_between, **fit_kwargs)
    return model, result
