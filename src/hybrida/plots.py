"""Figures of an experiment's results: error time series, Hovmöller diagrams, rank histogram."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, safe in workers

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from hybrida.io.atomic import atomic_write


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` atomically (format from the suffix, tight bounding box) and close it."""
    path = Path(path)
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix[1:] or "png", dpi=110,
                                                          bbox_inches="tight"))
    finally:
        plt.close(fig)


def plot_rmse(ds: xr.Dataset, path: str | Path, burn_in: float | None = None) -> Path:
    """Analysis/forecast RMSE and spread over time, with the burn-in shaded."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    t = ds["time"].values
    styles = {
        "rmse_f": ("C1", "-"),
        "rmse_a": ("C0", "-"),
        "spread_f": ("C1", ":"),
        "spread_a": ("C0", ":"),
    }
    for name, (color, ls) in styles.items():
        if name in ds:
            ax.plot(t, ds[name].values, color=color, ls=ls, lw=1, label=name)
    if burn_in:
        ax.axvspan(t.min() if t.size else 0, burn_in, color="0.9", zorder=0, label="burn-in")
    ax.set_yscale("log")
    ax.set_xlabel(f"time [{ds['time'].attrs.get('units', '')}]")
    ax.set_ylabel("RMSE / spread")
    ax.legend(ncol=5, fontsize=8, loc="upper right")
    ax.set_title(str(ds.attrs.get("title", "")), fontsize=9)
    return save_figure(fig, Path(path))


def running_mean(values: Sequence[float], window: int) -> tuple[np.ndarray, np.ndarray]:
    """(cycle index, mean of the ``window`` values ending there); NaN (a lost cycle) makes its windows infinite."""
    a = np.asarray(values, dtype=float)
    if a.size < window:
        return np.arange(a.size), a
    smooth = np.convolve(np.nan_to_num(a, nan=np.inf), np.ones(window) / window, mode="valid")
    return np.arange(window - 1, a.size), smooth


def plot_rmse_series(
    series: Mapping[str, Sequence[float]], path: str | Path, burn_in: int = 0, window: int = 25
) -> Path:
    """Per-cycle analysis rmse of several methods on the same test run, as ``window``-cycle running means."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for name, values in series.items():
        ax.plot(*running_mean(values, window), lw=1, label=name)
    if burn_in:
        ax.axvline(burn_in, color="k", ls=":", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("test cycle")
    ax.set_ylabel(f"rmse_a ({window}-cycle running mean)")
    ax.legend(fontsize=8)
    return save_figure(fig, Path(path))


def plot_hovmoller(ds: xr.Dataset, path: str | Path) -> Path:
    """Truth, analysis mean and analysis error as time–space images."""
    truth = ds["truth"].values
    ana = ds["posterior_mean"].values
    err = ana - truth
    t, x = ds["time"].values, ds["x"].values
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharey=True)
    vmax = float(np.nanmax(np.abs(truth))) if truth.size else 1.0
    emax = float(np.nanmax(np.abs(err))) if err.size and np.isfinite(err).any() else 1.0
    extent = [x.min() - 0.5, x.max() + 0.5, t.max() if t.size else 1, t.min() if t.size else 0]
    for ax, data, title, lim in (
        (axes[0], truth, "truth", vmax),
        (axes[1], ana, "analysis mean", vmax),
        (axes[2], err, "analysis - truth", emax),
    ):
        im = ax.imshow(
            data,
            aspect="auto",
            cmap="RdBu_r",
            vmin=-lim,
            vmax=lim,
            extent=extent,
            interpolation="nearest",
        )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x")
        fig.colorbar(im, ax=ax, fraction=0.046)
    axes[0].set_ylabel("time")
    return save_figure(fig, Path(path))


def plot_rank_histogram(ds: xr.Dataset, path: str | Path) -> Path:
    """Rank (Talagrand) histogram of the truth among the analysis members, normalised."""
    counts = ds["rank_histogram"].values.astype(float)
    freq = counts / counts.sum() if counts.sum() else counts
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(ds["rank"].values, freq, color="C0")
    if freq.size:
        ax.axhline(1.0 / freq.size, color="k", lw=1, ls="--", label="flat")
        ax.legend(fontsize=8)
    ax.set_xlabel("rank of truth")
    ax.set_ylabel("frequency")
    return save_figure(fig, Path(path))


def plot_all(ds: xr.Dataset, out_dir: str | Path, burn_in: float | None = None) -> list[Path]:
    """Every figure the dataset supports, as PNGs in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    paths = [plot_rmse(ds, out / "rmse.png", burn_in)]
    if ds.sizes.get("time", 0) > 0:
        paths.append(plot_hovmoller(ds, out / "hovmoller.png"))
    if "rank_histogram" in ds:
        paths.append(plot_rank_histogram(ds, out / "rank_histogram.png"))
    return paths
