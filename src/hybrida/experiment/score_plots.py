"""Plots of the score-based DA pipeline: training curve, posterior samples vs truth, rank histograms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hybrida.plots import save_figure


def score_plots(out: Path, post: dict[str, Any], score: dict[str, Any], enks: dict[str, Any],
                history: list[dict[str, float]]) -> None:
    """``training.png`` (denoising loss), ``posterior.png`` (samples of window 0) and ``rank_histogram.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if history:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.plot([h["step"] for h in history[1:]], [h["train"] for h in history[1:]], label="train")
        ax.plot([h["step"] for h in history], [h["valid"] for h in history], label="validation")
        ax.set_xlabel("step")
        ax.set_ylabel("denoising loss")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        save_figure(fig, out / "training.png")
    truth, X, E, y = (post[k][0].numpy() for k in ("truth", "score", "enks", "y"))  # (T, n), (T, N, n)
    T = truth.shape[0]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    for ax, i in zip(axes.flat, (0, 9, 19, 29)):
        t = np.arange(T)
        ax.plot(t, X[:, :, i], color="C0", lw=0.5, alpha=0.4)
        ax.plot(t, X[:, :, i].mean(1), color="C0", lw=1.5, label="score posterior (samples, mean)")
        ax.plot(t, E[:, :, i].mean(1), color="C1", lw=1.5, ls="--", label="EnKS mean")
        ax.plot(t, truth[:, i], color="k", lw=1.5, label="truth")
        ax.plot(t, y[:, i], "x", color="C3", label="observations")
        ax.set_title(f"x_{i}")
    axes[1, 0].set_xlabel("state in window (0.05 apart)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "posterior.png")
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for k, (name, s) in enumerate((("score", score), ("EnKS", enks))):
        h = np.asarray(s["rank_histogram"], dtype=float)
        ax.bar(np.arange(h.size) + (k - 0.5) * 0.4, h / h.sum(), width=0.4, label=name)
    ax.axhline(1 / len(score["rank_histogram"]), color="k", lw=0.8)
    ax.set_xlabel("rank of the truth among the members")
    ax.set_ylabel("frequency")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "rank_histogram.png")
