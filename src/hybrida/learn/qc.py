"""Training the learned gross-error detector on twins with injected gross errors.

Examples are the per-observation innovation features
(:func:`hybrida.observations.qc.innovation_features`) of observations from a
:class:`~hybrida.observations.qc.GrossErrorObs` scenario against the priors a
filter produced for them; labels are the true gross-error masks
``meta["gross"]``. The classifier minimises the binary cross-entropy

    L(phi) = -mean_i [w y_i log p_i + (1 - y_i) log(1 - p_i)],  p_i = sigmoid(f_phi(features_i)),

(Adam, Kingma & Ba 2015; w balances the rare class; early stopping on the
validation loss). The decision threshold is then the (1 - far) quantile of
the validation probabilities of clean observations, so that the expected
false-alarm rate is ``target_far`` (a Neyman–Pearson choice).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional as F

from hybrida.assimilation.base import State
from hybrida.observations.base import Observation
from hybrida.observations.qc import LearnedGrossErrorDetector, innovation_features

__all__ = ["DetectorFit", "fit_gross_error_detector", "gross_error_examples"]


@dataclass
class DetectorFit:
    """Training history of :func:`fit_gross_error_detector` and the validation rates at the chosen threshold."""

    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    threshold: float = 0.5
    valid_hit_rate: float = math.nan
    valid_false_alarm_rate: float = math.nan


def gross_error_examples(
    observations: Sequence[Observation], priors: Sequence[State], B: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Features ``(M, 5)`` and labels ``(M,)`` (1 = gross error) of every available observation.

    ``observations[k]`` must carry ``meta["gross"]`` (from ``GrossErrorObs``),
    ``priors[k]`` is the forecast the analysis of cycle k started from.
    """
    if len(observations) != len(priors):
        raise ValueError("gross_error_examples: one prior per observation time is needed")
    feats, labels = [], []
    for o, prior in zip(observations, priors):
        if "gross" not in o.meta:
            raise ValueError("gross_error_examples: observations need meta['gross'] (use GrossErrorObs)")
        f = innovation_features(o, prior, B)
        ok = torch.isfinite(f[:, 0])
        feats.append(f[ok])
        labels.append(o.meta["gross"].to(f.device)[ok].to(f.dtype))
    return torch.cat(feats), torch.cat(labels)


def fit_gross_error_detector(
    detector: LearnedGrossErrorDetector,
    features: Tensor,
    labels: Tensor,
    *,
    epochs: int = 200,
    lr: float = 1e-2,
    batch_size: int = 2048,
    valid_fraction: float = 0.25,
    target_far: float = 0.005,
    patience: int = 30,
    seed: int = 0,
) -> DetectorFit:
    """Fit ``detector`` by weighted BCE with Adam and early stopping; set its threshold for ``target_far``.

    The last ``valid_fraction`` of the examples (in the given, time-ordered
    order) is the validation set. Returns the history; the detector keeps the
    weights of the best validation epoch.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"fit_gross_error_detector: valid_fraction must lie in (0, 1), got {valid_fraction}")
    if not 0.0 < target_far < 1.0:
        raise ValueError(f"fit_gross_error_detector: target_far must lie in (0, 1), got {target_far}")
    dtype = next(detector.parameters()).dtype
    X, y = features.to(dtype), labels.to(dtype)
    cut = round((1.0 - valid_fraction) * X.shape[0])
    Xt, yt, Xv, yv = X[:cut], y[:cut], X[cut:], y[cut:]
    if Xt.shape[0] == 0 or Xv.shape[0] == 0 or not bool((yv == 0).any()):
        raise ValueError("fit_gross_error_detector: too few examples for a training/validation split")
    pos = float(yt.sum())
    w = torch.tensor(max(1.0, (yt.numel() - pos) / max(pos, 1.0)), dtype=dtype)
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(detector.parameters(), lr=lr)
    hist = DetectorFit()
    best, best_state = math.inf, copy.deepcopy(detector.state_dict())
    for epoch in range(int(epochs)):
        detector.train()
        perm = torch.randperm(Xt.shape[0], generator=gen)
        total = 0.0
        for i in range(0, Xt.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            loss = F.binary_cross_entropy_with_logits(detector(Xt[idx]), yt[idx], pos_weight=w)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        hist.train_loss.append(total / Xt.shape[0])
        detector.eval()
        with torch.no_grad():
            vl = float(F.binary_cross_entropy_with_logits(detector(Xv), yv, pos_weight=w))
        hist.valid_loss.append(vl)
        if vl < best:
            best, hist.best_epoch, best_state = vl, epoch, copy.deepcopy(detector.state_dict())
        elif epoch - hist.best_epoch >= patience:
            break
    detector.load_state_dict(best_state)
    with torch.no_grad():
        pv = torch.sigmoid(detector(Xv))
    clean = pv[yv == 0]
    detector.threshold = float(torch.quantile(clean, 1.0 - target_far))
    rej = pv > detector.threshold
    hist.threshold = detector.threshold
    hist.valid_hit_rate = float(rej[yv == 1].double().mean()) if bool((yv == 1).any()) else math.nan
    hist.valid_false_alarm_rate = float(rej[yv == 0].double().mean())
    return hist
