"""Figures of the ``bach2025_l96`` pipeline: the learned taper and inflation, R-RMSE against N.

:func:`fields_vs_spread` collects the learned inflation and distance scale per grid point
against the forecast spread over test cycles; :func:`plot_outputs` writes
``taper_inflation.png`` (taper rows against Gaspari–Cohn of the tuned radius, inflation
against spread) and ``r_rmse_vs_N.png`` (every filter's R-RMSE per ensemble size).
"""

from __future__ import annotations

from pathlib import Path

import torch

from hybrida.assimilation.ensemble.learned_filter import LearnedFilterNet
from hybrida.learn.filter_bach import BachSetup, TwinData, initial_ensemble, learned_analysis
from hybrida.plots import save_figure

#: Bach et al. (2025) tuned-LETKF R-RMSE (their table), by σ_y and N
PAPER_LETKF = {1.0: {5: 0.609, 10: 0.467, 20: 0.364, 40: 0.322, 100: 0.301},
               0.7: {5: 0.601, 10: 0.375, 20: 0.248, 40: 0.206, 100: 0.198}}

#: labels of the filters in the R-RMSE plot
LABELS = {"letkf": "grid-searched LETKF", "adaptive": "LETKF, adaptive inflation", "truth": "learned (truth)",
          "observations": "learned (next obs)", "finetuned": "learned (truth), fine-tuned at N",
          "at_N": "learned (truth), trained at N"}


def fields_vs_spread(setup: BachSetup, net: LearnedFilterNet, data: TwinData, N: int, seed: int) -> dict[str, list]:
    """Inflation and distance scale per grid point against the forecast spread, over the first test cycles."""
    E = initial_ensemble(data, N, torch.Generator().manual_seed(seed))[:2]
    model, analyse = setup.model, learned_analysis(setup, net)
    spread, infl, scale = [], [], []
    with torch.no_grad():
        for k in range(1, min(150, data.y.shape[0]) + 1):
            Ef = model.forecast(E, setup.steps)
            if k > 50:
                s, lam = net.fields(Ef, setup.obs_index.to(Ef))
                spread.append(Ef.std(-2).flatten())
                infl.append(lam.flatten())
                scale.append(s.flatten())
            E = analyse(Ef, data.y[k - 1, :2], k)
    return {"spread": torch.cat(spread).tolist(), "infl": torch.cat(infl).tolist(), "scale": torch.cat(scale).tolist()}


def plot_outputs(out: Path, setup: BachSetup, nets: dict[str, LearnedFilterNet], grid: dict, results: dict,
                 fields: dict[str, list]) -> None:
    """``taper_inflation.png`` and ``r_rmse_vs_N.png`` in ``out``; ``results[N][filter]`` are R-RMSEs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hybrida.assimilation.ensemble.letkf import GC_HALF_WIDTH_FACTOR
    from hybrida.assimilation.ensemble.localization import gaspari_cohn, periodic_distance

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    d = torch.arange(nets["truth"].taper.max_dist + 1, dtype=torch.float64)
    ax[0].plot(d, gaspari_cohn(d / (GC_HALF_WIDTH_FACTOR * grid["loc_rad"])), "k--",
               label=f"GC, tuned radius {grid['loc_rad']:g}")
    locations = setup.obs_index.to(torch.float64)
    grid_points = torch.arange(setup.n, dtype=torch.float64)
    dist = periodic_distance(grid_points.unsqueeze(-1), locations.unsqueeze(-2), float(setup.n)).round().long()
    for name, net in nets.items():
        site = net.site_classes(locations)
        for c, row in enumerate(net.taper.values().detach()):
            used = sorted({int(v) for v in dist[site == c].flatten() if v <= net.taper.max_dist})  # distances that occur
            ax[0].plot(used, row[used], "o-", ms=3, label=f"learned ({name}, {c} from the nearest obs)")
    ax[0].set_xlabel("state-observation distance (grid points)")
    ax[0].set_ylabel("taper ρ(d)")
    ax[0].set_xlim(0, 12)
    ax[0].legend()
    ax[1].scatter(fields["spread"], fields["infl"], s=2, alpha=0.3)
    ax[1].axhline(grid["infl"], color="k", ls="--", lw=0.8, label=f"tuned LETKF {grid['infl']:g}")
    ax[1].set_xlabel("forecast spread at the grid point")
    ax[1].set_ylabel("learned inflation λ_i (truth-trained)")
    ax[1].legend()
    fig.tight_layout()
    save_figure(fig, out / "taper_inflation.png")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    sizes = sorted(results)
    for key, label in LABELS.items():
        have = [N for N in sizes if key in results[N]]
        if have:
            ax.plot(have, [results[N][key] for N in have], "ks-" if key == "letkf" else "o-", label=label)
    paper = PAPER_LETKF.get(setup.sigma)
    if paper:
        ax.plot(sorted(paper), [paper[N] for N in sorted(paper)], "x:", color="gray", label="Bach et al. LETKF")
    ax.set_xscale("log")
    ax.set_xlabel("ensemble size N")
    ax.set_ylabel("R-RMSE")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "r_rmse_vs_N.png")
