"""Train a filter's parameters by differentiating through its cycles (truncated backpropagation through time).

The filter (e.g. :class:`~hybrida.assimilation.ensemble.differentiable.TrainableLETKF`)
is cycled with the model over a training twin; every ``window`` cycles the loss of
those cycles is back-propagated through the analyses and the forecasts, an optimiser
steps, and the ensemble is detached (Williams & Peng 1990's truncated BPTT; the
setting of Bach et al. 2025, "Learning enhanced ensemble filters"). Losses:

* ``"truth"``: mean over the window of |x̄ᵃ_k − x_k|² / n (twins);
* ``"observations"``: truth-free, mean of |R^{-1/2}(y_{k+1} − H(x̄ᶠ_{k+1}))|² / p,
  the next observations against the forecast mean (what real data allows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from hybrida.assimilation.base import AssimilationMethod
from hybrida.models.base import Model
from hybrida.observations.base import Observation

LOSSES = ("truth", "observations")


@dataclass
class TuningResult:
    """Loss per optimiser step and the parameters after each epoch (name -> values)."""

    losses: list[float] = field(default_factory=list)
    params: dict[str, list[float]] = field(default_factory=dict)


def _record(result: TuningResult, method: nn.Module) -> None:
    for name in ("infl", "loc_rad"):
        value = getattr(method, name, None)
        if isinstance(value, Tensor):
            result.params.setdefault(name, []).append(float(value.detach()))


def tune_filter(
    method: AssimilationMethod,
    model: Model,
    initial: Tensor,
    observations: Sequence[Observation],
    steps_per_cycle: int,
    truth: Tensor | None = None,
    *,
    loss: str = "truth",
    window: int = 10,
    epochs: int = 3,
    lr: float = 0.05,
    progress: bool = False,
) -> TuningResult:
    """Fit ``method``'s trainable parameters (an ``nn.Module``) with Adam through windows of cycles.

    ``initial`` is the starting ensemble ``(N, n)``; ``observations[k - 1]`` those of cycle k
    and ``truth[k]`` the true state there (needed for ``loss="truth"``). Each epoch restarts
    from ``initial``. Raises a ValueError for an unknown loss, a missing truth or a
    non-positive window, and a RuntimeError if the filter produces a non-finite loss.
    """
    if loss not in LOSSES:
        raise ValueError(f"tune_filter: unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    if loss == "truth" and truth is None:
        raise ValueError("tune_filter: loss='truth' needs the truth (or use loss='observations')")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"tune_filter: window must be an integer >= 1, got {window!r}")
    if not isinstance(method, nn.Module):
        raise TypeError(f"tune_filter: {type(method).__name__} has no trainable parameters (not an nn.Module)")
    params = [p for p in method.parameters() if p.requires_grad]
    if not params:
        raise ValueError("tune_filter: the method has no parameter with requires_grad=True")
    opt = torch.optim.Adam(params, lr=lr)
    result = TuningResult()
    n_cycles = len(observations)
    dt = model.dt
    bar = tqdm(range(epochs), desc="tune filter", disable=not progress, leave=False)
    for _ in bar:
        E = initial.detach().clone()
        terms: list[Tensor] = []
        for k in range(1, n_cycles + 1):
            Ef = model.forecast(E, steps_per_cycle, (k - 1) * steps_per_cycle * dt)
            obs = observations[k - 1]
            if loss == "observations" and k > 1:
                v = obs.valid()
                if v.p:
                    r = v.error.whiten(v.y.to(Ef) - v.H(Ef.mean(-2)))
                    terms.append((r * r).mean())
            E = method.analyse(Ef, obs, k * steps_per_cycle * dt)
            if loss == "truth":
                terms.append(((E.mean(-2) - truth[k].to(E)) ** 2).mean())
            if terms and (len(terms) == window or k == n_cycles):
                total = torch.stack(terms).mean()
                if not bool(torch.isfinite(total)):
                    raise RuntimeError(f"tune_filter: non-finite loss at cycle {k} (filter diverged)")
                opt.zero_grad()
                total.backward()
                opt.step()
                result.losses.append(float(total.detach()))
                terms = []
                E = E.detach()
        _record(result, method)
        bar.set_postfix(loss=f"{result.losses[-1]:.4g}" if result.losses else "nan")
    return result


def rmse_of(method: AssimilationMethod, model: Model, initial: Tensor, observations: Sequence[Observation],
            steps_per_cycle: int, truth: Tensor, burn_in: int = 0) -> float:
    """Time-mean analysis rmse of ``method`` cycled without gradients (cycles after ``burn_in``)."""
    from hybrida.cycle import run_cycle

    errors = []
    with torch.no_grad():
        for record, _ in run_cycle(model, method, initial.clone(), truth, observations, steps_per_cycle,
                                   probabilistic_scores=False):
            if record.cycle > burn_in:
                errors.append(record.rmse_a)
    return float(sum(errors) / len(errors)) if errors else math.nan
