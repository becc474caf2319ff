"""Plots of the latent-DA pipelines: reconstructions, latent spectrum, autoencoder training, rmse series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hybrida.assimilation.learned.latent_space import PODReduction, Reduction
from hybrida.plots import plot_rmse_series, save_figure


def plot_latent(out: Path, reds: dict[str, Reduction], free: Tensor, truth: Tensor,
                history: list[dict[str, float]], series: dict[str, list[float]], burn_in: int) -> None:
    """Write ``reconstructions.png``, ``spectrum.png`` and ``rmse.png`` into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = truth[len(truth) // 2]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    ax.plot(x.numpy(), "k", lw=1.5, label="test truth")
    with torch.no_grad():
        for key, red in reds.items():
            ax.plot(red.reconstruct(x).numpy(), lw=1, label=f"{key.upper()} k={red.k}")
    ax.set_xlabel("grid index")
    ax.legend()
    save_figure(fig, out / "reconstructions.png")

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    pod = reds.get("pod")
    if isinstance(pod, PODReduction) and pod.singular_values is not None:
        ev = pod.explained_variance().numpy()
        ax[0].plot(np.arange(1, ev.size + 1), ev, label="POD cumulative explained variance")
        ax[0].axvline(pod.k, color="k", ls=":", lw=0.8)
        ax[0].set_xlabel("number of EOFs")
        ax[0].legend()
    if history:
        ax[1].plot([h["epoch"] for h in history], [h["train_rmse"] for h in history], label="AE train")
        ax[1].plot([h["epoch"] for h in history], [h["valid_rmse"] for h in history], label="AE valid")
        ax[1].set_xlabel("epoch")
        ax[1].set_ylabel("reconstruction rmse")
        ax[1].legend()
    save_figure(fig, out / "spectrum.png")

    plot_rmse_series(series, out / "rmse.png", burn_in, window=1)
