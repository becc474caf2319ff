"""The Bach et al. (2025) Lorenz-96 twin, batched: data, R-RMSE, grid-searched LETKF, training of the learned filter.

Setup ("Learning enhanced ensemble filters", Bach, Baptista, Calvello, Chen & Stuart 2025):
Lorenz-96 with d = 40, F = 8 (RK4, dt = 0.05), observations of x₁, x₅, …, x₃₇ (every 4th,
10 of 40) every 0.15 time units (3 steps) with σ_y = 1 (or 0.7). Score:

    R-RMSE = mean over analysis times k (after a burn-in) and trajectories of ‖x̄ᵃ_k − x_k‖₂ / ‖x_k‖₂.

Every function cycles B independent trajectories as one tensor program (states ``(B, N, n)``)
and, for the grid search, G filter configurations at once (``(G, B, N, n)``, the taper and
inflation broadcast per configuration). Training is truncated backpropagation through
time through windows of cycles (Williams & Peng 1990), as in
:mod:`hybrida.learn.filter_tuning`, with a truth loss (twins, as Bach et al.) or a
truth-free loss on the next observations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from hybrida.assimilation.ensemble.differentiable import dense_taper, local_etkf_arrays
from hybrida.assimilation.ensemble.inflation import AdaptiveInflation, inflate_multiplicative
from hybrida.models.lorenz96 import Lorenz96

D = torch.float64
LOSSES = ("truth", "observations")


@dataclass(frozen=True)
class BachSetup:
    """The L96 twin of Bach et al. (2025): n, F, dt, steps between observations, every k-th observed, σ_y."""

    n: int = 40
    F: float = 8.0
    dt: float = 0.05
    steps: int = 3
    every: int = 4
    sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.n < 4 or self.every < 1 or self.steps < 1:
            raise ValueError(f"BachSetup: need n >= 4, every >= 1, steps >= 1; got {self}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"BachSetup: sigma must be > 0, got {self.sigma}")

    @property
    def model(self) -> Lorenz96:
        """The forecast model."""
        return Lorenz96(n=self.n, F=self.F, dt=self.dt)

    @property
    def obs_index(self) -> Tensor:
        """Observed grid points (0-based: x₁, x₅, … are 0, 4, …)."""
        return torch.arange(0, self.n, self.every)

    @property
    def sig(self) -> Tensor:
        """Observation error standard deviations ``(p,)``."""
        return torch.full((len(self.obs_index),), self.sigma, dtype=D)


@dataclass
class TwinData:
    """Truth ``(K+1, B, n)`` and observations ``(K, B, p)`` (y[k-1] observes truth[k])."""

    truth: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.truth.ndim != 3 or self.y.ndim != 3 or self.truth.shape[0] != self.y.shape[0] + 1:
            raise ValueError(f"TwinData: need truth (K+1, B, n) and y (K, B, p); got {tuple(self.truth.shape)}, "
                             f"{tuple(self.y.shape)}")


def make_data(setup: BachSetup, B: int, K: int, generator: torch.Generator, spin_up: int = 2000) -> TwinData:
    """B trajectories of K cycles from random states spun up ``spin_up`` steps, observed with noise."""
    if B < 1 or K < 1:
        raise ValueError(f"make_data: need B >= 1 trajectories and K >= 1 cycles, got B={B}, K={K}")
    model = setup.model
    x = setup.F + torch.randn(B, setup.n, generator=generator, dtype=D)
    with torch.no_grad():
        x = model.forecast(x, spin_up)
        states = [x]
        for _ in range(K):
            x = model.forecast(x, setup.steps)
            states.append(x)
    truth = torch.stack(states)
    idx = setup.obs_index
    noise = torch.randn(K, B, len(idx), generator=generator, dtype=D)
    return TwinData(truth, truth[1:, :, idx] + setup.sigma * noise)


def initial_ensemble(data: TwinData, N: int, generator: torch.Generator, spread: float = 1.0) -> Tensor:
    """Start ensembles ``(B, N, n)``: the initial truth plus N(0, spread²) noise."""
    x0 = data.truth[0]
    return x0.unsqueeze(-2) + spread * torch.randn(x0.shape[0], N, x0.shape[-1], generator=generator, dtype=D)


def relative_errors(mean: Tensor, truth: Tensor) -> Tensor:
    """‖x̄ − x‖₂ / ‖x‖₂ over the last dimension."""
    return (mean - truth).norm(dim=-1) / truth.norm(dim=-1)


AnalysisFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def letkf_analysis(setup: BachSetup, infl: Tensor | float, loc_rad: Tensor | float) -> AnalysisFn:
    """The LETKF (Gaspari–Cohn taper, posterior inflation) as ``f(E, y, k) -> Eᵃ``; radius and inflation broadcast.

    ``infl`` and ``loc_rad`` may be tensors ``(G, 1)`` for G configurations of ensembles ``(G, B, N, n)``.
    """
    idx = setup.obs_index
    rad = torch.as_tensor(loc_rad, dtype=D)
    rho = dense_taper(setup.n, idx.to(D), rad.reshape(*rad.shape, 1, 1))  # (..., n, p)
    lam = torch.as_tensor(infl, dtype=D)
    lam = lam.reshape(*lam.shape, 1, 1)

    def analyse(E: Tensor, y: Tensor, k: int) -> Tensor:
        Ea = local_etkf_arrays(E, E[..., idx], y, setup.sig, rho)
        mean = Ea.mean(-2, keepdim=True)
        return mean + lam * (Ea - mean)

    return analyse


def adaptive_letkf_analysis(setup: BachSetup, loc_rad: float, infl: float = 1.0,
                            var_prior: float = 0.05**2) -> AnalysisFn:
    """The LETKF with hybrida's adaptive prior inflation (one :class:`AdaptiveInflation` per run) as ``f(E, y, k)``.

    Before each analysis λ of every run is updated from its pooled innovation statistics,
    λᵒ = (dᵀd − p) / tr(S Sᵀ) blended with the previous λ (Li et al. 2009; Miyoshi 2011),
    and the prior anomalies are multiplied by √λ; then the Gaspari–Cohn LETKF of radius
    ``loc_rad`` and a fixed posterior inflation ``infl`` (1: none). The same steps as
    :class:`~hybrida.assimilation.ensemble.letkf.LETKF` with ``adaptive=True``, batched over
    the leading dimensions of E (each run keeps its own λ). The function carries state: use a
    new one per cycled run.
    """
    idx = setup.obs_index
    rho = dense_taper(setup.n, idx.to(D), torch.as_tensor(loc_rad, dtype=D).reshape(1, 1))
    states: list[AdaptiveInflation] = []

    def analyse(E: Tensor, y: Tensor, k: int) -> Tensor:
        N, p = E.shape[-2], len(idx)
        HE = E[..., idx]
        ym = HE.mean(-2)
        S = ((HE - ym.unsqueeze(-2)) / (setup.sig * math.sqrt(N - 1))).reshape(-1, N, p)
        d = ((y - ym) / setup.sig).reshape(-1, p)
        if not states:
            states.extend(AdaptiveInflation(var_prior=var_prior) for _ in range(d.shape[0]))
        if len(states) != d.shape[0]:
            raise ValueError(f"adaptive_letkf_analysis: built for {len(states)} runs, got {d.shape[0]}")
        factor = torch.tensor([a.update(d[b], S[b]) for b, a in enumerate(states)], dtype=E.dtype).sqrt()
        E = inflate_multiplicative(E, factor.reshape(*E.shape[:-2], 1, 1))
        Ea = local_etkf_arrays(E, E[..., idx], y, setup.sig, rho)
        return inflate_multiplicative(Ea, infl)

    return analyse


def learned_analysis(setup: BachSetup, net: nn.Module) -> AnalysisFn:
    """A :class:`~hybrida.assimilation.ensemble.learned_filter.LearnedFilterNet` as ``f(E, y, k) -> Eᵃ``."""
    idx = setup.obs_index

    def analyse(E: Tensor, y: Tensor, k: int) -> Tensor:
        return net(E, E[..., idx], y, setup.sig, idx.to(D))

    return analyse


def cycle_r_rmse(setup: BachSetup, analyse: AnalysisFn, E0: Tensor, data: TwinData, burn_in: int = 100,
                 per_trajectory: bool = False) -> Tensor:
    """R-RMSE per run (leading dimensions of ``E0`` but the last two), mean over cycles after ``burn_in``, no gradients.

    Averaged over the trajectories (the last of those dimensions) unless ``per_trajectory``.
    A trajectory whose forecast becomes non-finite or exceeds 1e3 scores +inf.
    """
    K = data.y.shape[0]
    if burn_in >= K:
        raise ValueError(f"cycle_r_rmse: burn_in={burn_in} leaves no scored cycle of K={K}")
    model = setup.model
    total = torch.zeros(E0.shape[:-2], dtype=D)
    E = E0.clone()
    with torch.no_grad():
        for k in range(1, K + 1):
            Ef = model.forecast(E, setup.steps)
            bad = ~(torch.isfinite(Ef) & (Ef.abs() < 1e3)).all(-1).all(-1)  # diverged runs: scored +inf, then reset
            if bool(bad.any()):
                total = torch.where(bad, math.inf, total)
                Ef = torch.where(bad[..., None, None], data.truth[k].unsqueeze(-2), Ef)
            E = analyse(Ef, data.y[k - 1], k)
            if k > burn_in:
                total += relative_errors(E.mean(-2), data.truth[k])
    per = total / (K - burn_in)
    return per if per_trajectory else per.mean(-1)


def grid_search(setup: BachSetup, N: int, data: TwinData, infls: Sequence[float], radii: Sequence[float],
                generator: torch.Generator, burn_in: int = 100) -> dict:
    """R-RMSE of the LETKF for every (inflation, radius), all cycled at once; the best and the whole table.

    The best loses the fewest trajectories and, among those, has the lowest R-RMSE over the
    trajectories it kept (with every configuration losing one, a plain mean would be +inf for all).
    """
    pairs = [(i, r) for i in infls for r in radii]
    lam = torch.tensor([p[0] for p in pairs], dtype=D).unsqueeze(-1)  # (G, 1): broadcast over trajectories
    rad = torch.tensor([p[1] for p in pairs], dtype=D).unsqueeze(-1)
    E0 = initial_ensemble(data, N, generator).expand(len(pairs), -1, -1, -1)
    per = cycle_r_rmse(setup, letkf_analysis(setup, lam, rad), E0, data, burn_in, per_trajectory=True)
    kept = torch.isfinite(per)
    lost = (~kept).sum(-1)
    kept_mean = torch.where(kept, per, 0.0).sum(-1) / kept.sum(-1).clamp(min=1)
    kept_mean = torch.where(kept.any(-1), kept_mean, math.inf)
    scores = per.mean(-1)
    best = min(range(len(pairs)), key=lambda g: (int(lost[g]), float(kept_mean[g])))
    return {"infl": pairs[best][0], "loc_rad": pairs[best][1], "r_rmse": float(scores[best]),
            "lost": int(lost[best]), "r_rmse_kept": float(kept_mean[best]),
            "table": [{"infl": i, "loc_rad": r, "r_rmse": float(s), "lost": int(n), "r_rmse_kept": float(k)}
                      for (i, r), s, n, k in zip(pairs, scores, lost, kept_mean, strict=True)]}


def train_epoch(setup: BachSetup, net: nn.Module, opt: torch.optim.Optimizer, E0: Tensor, data: TwinData, *,
                loss: str = "truth", window: int = 10, burn_in: int = 20) -> float:
    """One pass of truncated BPTT over ``data``'s cycles (windows of ``window``); mean window loss.

    ``loss="truth"``: mean of |x̄ᵃ_k − x_k|² / n; ``"observations"``: mean of
    |(y_{k+1} − H x̄ᶠ_{k+1}) / σ|² / p (truth-free). The first ``burn_in`` cycles run
    without gradients (the ensemble has not yet converged). Raises a RuntimeError on a
    non-finite loss.
    """
    if loss not in LOSSES:
        raise ValueError(f"train_epoch: unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    model, idx, analyse = setup.model, setup.obs_index, learned_analysis(setup, net)
    K = data.y.shape[0]
    E = E0.clone()
    with torch.no_grad():
        for k in range(1, min(burn_in, K) + 1):
            E = analyse(model.forecast(E, setup.steps), data.y[k - 1], k)
    terms: list[Tensor] = []
    losses = []
    for k in range(burn_in + 1, K + 1):
        Ef = model.forecast(E, setup.steps)
        if not bool(torch.isfinite(Ef).all()) or float(Ef.detach().abs().max()) > 1e3:
            raise RuntimeError(f"train_epoch: the filter diverged at cycle {k} (lower the learning rate or inflation)")
        if loss == "observations" and k > burn_in + 1:
            r = (data.y[k - 1] - Ef.mean(-2)[..., idx]) / setup.sig
            terms.append((r * r).mean())
        E = analyse(Ef, data.y[k - 1], k)
        if loss == "truth":
            terms.append(((E.mean(-2) - data.truth[k]) ** 2).mean())
        if terms and (len(terms) == window or k == K):
            total = torch.stack(terms).mean()
            if not bool(torch.isfinite(total)):
                raise RuntimeError(f"train_epoch: non-finite loss at cycle {k} (the filter diverged)")
            opt.zero_grad()
            total.backward()
            opt.step()
            losses.append(float(total.detach()))
            terms = []
            E = E.detach()
    return sum(losses) / max(len(losses), 1)


@dataclass
class FitResult:
    """Training history (epoch, train loss, validation R-RMSE, CPU s), the best validation score and the cost."""

    history: list[dict[str, float]]
    best_valid: float
    cpu_s: float
    wall_s: float
    stopped_early: bool


def fit_filter(setup: BachSetup, net: nn.Module, N: int, train: TwinData, valid: TwinData, *,
               generator: torch.Generator, loss: str = "truth", epochs: int = 10, lr: float = 0.02,
               window: int = 10, patience: int = 3, burn_in: int = 100, checkpoint: Path | None = None,
               resume: bool = False, progress: Callable[[str], None] | None = None, fresh_data: bool = False,
               max_seconds: float = math.inf, lr_final: float | None = None) -> FitResult:
    """Train ``net`` (in place) at ensemble size N, epoch by epoch; keep the weights with the best validation R-RMSE.

    Each epoch starts the training trajectories from fresh ensembles (``generator``) and runs
    :func:`train_epoch`; validation is the R-RMSE on ``valid`` from fixed start ensembles.
    Stops after ``patience`` epochs without improvement. With ``checkpoint`` the state after
    every epoch is saved there and ``resume`` continues from it. Truth is used only by
    ``loss="truth"`` and by the validation score (early stopping). ``fresh_data``: every epoch
    after the first trains on new trajectories of the same size as ``train`` (drawn with
    ``generator``; a twin can make as many as it likes, which keeps a network from fitting
    the noise of one training set). Stops after ``max_seconds`` of wall time. ``lr_final``: the
    learning rate of epoch e follows a cosine from ``lr`` (epoch 1) towards ``lr_final`` (after
    epoch ``epochs``); None: constant.
    """
    from hybrida.io.checkpoint import atomic_torch_save

    say = progress or (lambda _msg: None)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    E_valid = initial_ensemble(valid, N, torch.Generator().manual_seed(int(torch.randint(2**31, (1,), generator=generator))))
    burn_valid = min(burn_in, valid.y.shape[0] // 2)
    history: list[dict[str, float]] = []
    best_valid = float(cycle_r_rmse(setup, learned_analysis(setup, net), E_valid, valid, burn_valid).mean())
    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    history.append({"epoch": 0.0, "train_loss": math.nan, "valid_r_rmse": best_valid, "cpu_s": 0.0})
    bad, start, cpu0, wall0 = 0, 1, 0.0, 0.0
    if resume and checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        generator.set_state(state["generator"])
        best_state, best_valid, bad = state["best_state"], float(state["best_valid"]), int(state["bad"])
        history, start = list(state["history"]), int(state["epoch"]) + 1
        cpu0, wall0 = float(state["cpu_s"]), float(state["wall_s"])
        say(f"resumed after epoch {start - 1} (best validation R-RMSE {best_valid:.4f})")
    c0, w0 = time.process_time(), time.perf_counter()
    stopped = False
    for epoch in range(start, epochs + 1):
        if bad >= patience:
            stopped = True
            break
        if wall0 + time.perf_counter() - w0 > max_seconds:
            say(f"training time budget of {max_seconds:.0f} s spent: stopping after epoch {epoch - 1}")
            break
        if fresh_data and epoch > 1:
            B, K = train.truth.shape[1], train.y.shape[0]
            train = make_data(setup, B, K, generator)
        if lr_final is not None:
            for group in opt.param_groups:
                group["lr"] = lr_final + (lr - lr_final) * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / epochs))
        E0 = initial_ensemble(train, N, generator)
        train_loss = train_epoch(setup, net, opt, E0, train, loss=loss, window=window, burn_in=min(20, burn_in))
        v = float(cycle_r_rmse(setup, learned_analysis(setup, net), E_valid, valid, burn_valid).mean())
        if v < best_valid:
            best_valid, bad = v, 0
            best_state = {k: t.detach().clone() for k, t in net.state_dict().items()}
        else:
            bad += 1
        cpu = cpu0 + time.process_time() - c0
        history.append({"epoch": float(epoch), "train_loss": train_loss, "valid_r_rmse": v, "cpu_s": cpu})
        say(f"{loss} loss, epoch {epoch}/{epochs}: train loss {train_loss:.4f}, validation R-RMSE {v:.4f} "
            f"(best {best_valid:.4f}), {cpu:.0f} CPU s")
        if checkpoint is not None:
            atomic_torch_save({"net": net.state_dict(), "opt": opt.state_dict(), "generator": generator.get_state(),
                               "best_state": best_state, "best_valid": best_valid, "bad": bad, "history": history,
                               "epoch": epoch, "cpu_s": cpu, "wall_s": wall0 + time.perf_counter() - w0}, checkpoint)
    else:
        stopped = bad >= patience
    net.load_state_dict(best_state)
    return FitResult(history, best_valid, cpu0 + time.process_time() - c0, wall0 + time.perf_counter() - w0, stopped)
