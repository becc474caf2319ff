"""Figures of the QG subgrid pipeline: forcing maps, free-run energy, and cycled rmse_a."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from hybrida.learn.subgrid import SubgridSamples
from hybrida.models.qg import QGModel
from hybrida.models.qg_subgrid import ParametrizedQG
from hybrida.plots import plot_rmse_series, plt, save_figure


def plot_forcing(param: ParametrizedQG, samples: SubgridSamples, path: Path) -> Path:
    """Upper-layer coarse PV, true subgrid forcing and the network's, at the last validation time."""
    q = samples.q[-1, 0]
    with torch.no_grad():
        pred = param.forcing(q)
    fields = [param.to_grid(q)[0], param.to_grid(samples.S[-1, 0])[0], param.to_grid(pred)[0]]
    titles = ["coarse PV q₁", "subgrid forcing S₁", "network S_θ(q)₁"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    lim = float(fields[1].abs().max())
    for i, (ax, f, t) in enumerate(zip(axes, fields, titles)):
        vmax = float(f.abs().max()) if i == 0 else lim
        im = ax.imshow(f.numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, origin="lower")
        ax.set_title(t)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8)
    return save_figure(fig, path)


def plot_energy(series: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Eddy kinetic energy of the free low-resolution runs against the coarse-grained truth."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for name, ke in series.items():
        ax.plot(range(1, len(ke) + 1), ke, label=name, lw=1.2 if name != "truth" else 2.0)
    ax.set_xlabel("day")
    ax.set_ylabel("eddy KE (m²/s²)")
    ax.set_yscale("log")
    ax.legend()
    return save_figure(fig, path)


def plot_all(out: Path, plain: QGModel, param: ParametrizedQG, valid: SubgridSamples,
             ke: Mapping[str, Sequence[float]], rmse: Mapping[str, Sequence[float]], burn_in: int) -> None:
    """All figures of one run into ``out``."""
    plot_forcing(param, valid, out / "forcing.png")
    plot_energy(ke, out / "energy.png")
    plot_rmse_series(rmse, out / "rmse.png", burn_in=burn_in, window=5)
