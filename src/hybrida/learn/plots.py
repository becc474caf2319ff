"""Figures of a DA–ML experiment: valid time, spectra, Lyapunov exponents, DA error, loop history."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt
import numpy as np

from hybrida.learn.diagnostics import SkillCurve
from hybrida.plots import save_figure


def plot_valid_time(
    curve: SkillCurve,
    path: str | Path,
    threshold: float = 0.5,
    lyapunov_exponent: float | None = None,
    reference: SkillCurve | None = None,
    upper: SkillCurve | None = None,
) -> Path:
    """Normalised forecast RMSE against lead (Lyapunov times when the exponent is known), with the threshold.

    ``curve``: the surrogate from DA analyses; ``reference``: the true model from the same
    analyses; ``upper``: the surrogate from the truth (an upper bound on its skill).
    """
    scale = lyapunov_exponent if lyapunov_exponent else 1.0
    fig, ax = plt.subplots(figsize=(6, 3.8))
    t = curve.times.numpy() * scale
    lo, hi = np.quantile(curve.nrmse_starts.numpy(), [0.1, 0.9], axis=0)
    ax.fill_between(t, lo, hi, color="C0", alpha=0.2, lw=0)
    ax.plot(t, curve.nrmse.numpy(), color="C0", label="surrogate (from DA analyses)")
    if reference is not None:
        ax.plot(
            t, reference.nrmse.numpy(), color="C1", ls="--", label="true model (from the same analyses)"
        )
    if upper is not None:
        ax.plot(
            t, upper.nrmse.numpy(), color="C0", ls=":", label="surrogate from the truth (upper bound)"
        )
    ax.axhline(threshold, color="k", lw=0.8, ls=":", label=f"threshold {threshold:g}")
    ax.set_xlabel("lead [Lyapunov times]" if lyapunov_exponent else "lead [model time]")
    ax.set_ylabel("RMSE / climatological std")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return save_figure(fig, Path(path))


def plot_spectra(spectrum: np.ndarray, reference: np.ndarray, path: str | Path) -> Path:
    """Time-mean spatial power spectrum of the surrogate's free run against the truth's."""
    fig, ax = plt.subplots(figsize=(5, 3.8))
    k = np.arange(len(reference))
    ax.semilogy(k[1:], reference[1:], color="k", label="truth")
    if np.isfinite(spectrum).all():
        ax.semilogy(k[1:], spectrum[1:], color="C0", ls="--", label="surrogate free run")
    else:
        ax.text(0.5, 0.5, "surrogate free run blew up", transform=ax.transAxes, ha="center")
    ax.set_xlabel("wavenumber")
    ax.set_ylabel("power")
    ax.legend(fontsize=8)
    return save_figure(fig, Path(path))


def plot_lyapunov(surrogate: float, truth: float, path: str | Path) -> Path:
    """Bar chart of the leading Lyapunov exponent of the surrogate and of the true model."""
    fig, ax = plt.subplots(figsize=(3.5, 3.5))
    vals = [surrogate if math.isfinite(surrogate) else 0.0, truth]
    ax.bar(["surrogate", "true model"], vals, color=["C0", "0.4"])
    for i, v in enumerate((surrogate, truth)):
        ax.text(i, vals[i], f"{v:.3g}", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("leading Lyapunov exponent [1/time]")
    return save_figure(fig, Path(path))


def plot_da_rmse(
    rmse_surrogate: np.ndarray,
    rmse_model: np.ndarray,
    dt: float,
    path: str | Path,
    burn_in: int = 0,
) -> Path:
    """Analysis RMSE over the test period: DA with the surrogate vs DA with the true model."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    t = np.arange(len(rmse_model)) * dt
    for series, label, color in (
        (rmse_model, "true model", "0.3"),
        (rmse_surrogate, "surrogate", "C0"),
    ):
        mean = float(np.nanmean(series[1 + burn_in :]))
        ax.plot(t, series, color=color, lw=0.8, label=f"{label} (mean {mean:.3g})")
    if burn_in:
        ax.axvspan(0, burn_in * dt, color="0.9", zorder=0, label="burn-in")
    ax.set_yscale("log")
    ax.set_xlabel("time since the end of training [model time]")
    ax.set_ylabel("analysis RMSE")
    ax.legend(fontsize=8, loc="upper right")
    return save_figure(fig, Path(path))


def plot_training(history: dict[str, list[float]], path: str | Path) -> Path:
    """Training and validation loss per epoch."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, color in (("train", "C0"), ("valid", "C1")):
        v = np.asarray(history.get(key, []), dtype=float)
        if v.size and np.isfinite(v).any():
            ax.semilogy(np.arange(1, v.size + 1), v, color=color, marker=".", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("rollout loss")
    ax.legend(fontsize=8)
    return save_figure(fig, Path(path))


def plot_loop_history(steps: list[dict[str, Any]], path: str | Path) -> Path:
    """Observation score and analysis RMSE of each DA–ML iteration (Brajard et al. 2020 loop)."""
    it = [s["iteration"] for s in steps]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(it, [s["obs_score"] for s in steps], "o-", color="C0", label="observation score")
    ax.set_xlabel("iteration")
    ax.set_ylabel("observation score", color="C0")
    ax2 = ax.twinx()
    ax2.plot(it, [s["rmse_a"] for s in steps], "s--", color="C3", label="rmse_a")
    ax2.set_ylabel("analysis RMSE (truth)", color="C3")
    ax.set_xticks(it)
    return save_figure(fig, Path(path))


def plot_surrogate_experiment(
    summary: dict[str, Any], art: dict[str, Any], out_dir: Path
) -> list[Path]:
    """Every figure of :func:`hybrida.experiment.surrogate_pipeline.run_surrogate_experiment`; returns their paths."""
    out = Path(out_dir)
    lam = art.get("lyapunov")
    paths = [
        plot_valid_time(
            art["skill"],
            out / "valid_time.png",
            summary["threshold"],
            lam,
            art.get("skill_reference"),
            art.get("skill_upper"),
        ),
        plot_spectra(
            art["spectrum_surrogate"].numpy(), art["spectrum_truth"].numpy(), out / "spectra.png"
        ),
        plot_lyapunov(
            summary["lyapunov_surrogate"], summary["lyapunov_truth"], out / "lyapunov.png"
        ),
        plot_da_rmse(
            art["da_surrogate"].numpy(),
            art["da_model"].numpy(),
            art["dt_cycle"],
            out / "da_rmse.png",
            art["config"].evaluation.burn_in_cycles,
        ),
        plot_training(art["fit"].history, out / "training.png"),
    ]
    if summary.get("loop"):
        paths.append(plot_loop_history(summary["loop"], out / "loop_history.png"))
    return paths
