"""Figures of the ENSO pipeline: observed vs analysed T, the unobserved h, parameters, skill vs lead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from hybrida.plots import save_figure

__all__ = ["plot_enso"]


def _years(ds: xr.Dataset) -> np.ndarray:
    return 1950 + (ds["time"].values - 1) / 12.0


def plot_enso(ds: xr.Dataset, summary: dict[str, Any], out: Path) -> list[Path]:
    """enso_T.png, enso_h.png, enso_params.png and enso_skill.png in ``out``."""
    yr = _years(ds)
    files = []
    fig, ax = plt.subplots(figsize=(11, 3.5))
    ax.plot(yr, ds["T_obs"], "k.", ms=2, label="observed Niño-3")
    ax.plot(yr, ds["T_a"], "C0", lw=0.8, label="analysis")
    s = ds["T_a_spread"].values
    ax.fill_between(yr, ds["T_a"] - 2 * s, ds["T_a"] + 2 * s, color="C0", alpha=0.3, label="±2 spread")
    ax.set(xlabel="year", ylabel="T (°C)", title="Niño-3 anomaly: observed vs analysed")
    ax.legend(loc="upper left", fontsize=8)
    files.append(save_figure(fig, out / "enso_T.png"))

    fig, ax = plt.subplots(figsize=(11, 3.5))
    ax.plot(yr, ds["h_a"], "C1", lw=0.8, label="analysed h (never observed)")
    s = ds["h_a_spread"].values
    ax.fill_between(yr, ds["h_a"] - 2 * s, ds["h_a"] + 2 * s, color="C1", alpha=0.3)
    ax.plot(yr, ds["T_a"], "C0", lw=0.5, alpha=0.6, label="analysed T")
    ind = summary["independent"]["recharge"].get("verify", {})
    lag = ind.get("h_leads_T_months")
    ax.set(xlabel="year", ylabel="h (°C-equivalent)", title=f"thermocline depth h (leads T by {lag} months, 1991-2010)")
    ax.legend(loc="upper left", fontsize=8)
    files.append(save_figure(fig, out / "enso_h.png"))

    names = [str(v)[len("param_"):] for v in ds.data_vars if str(v).startswith("param_") and not str(v).endswith("_spread")]
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 2 * len(names)), sharex=True, squeeze=False)
    for a, name in zip(axes[:, 0], names, strict=True):
        m, sp = ds[f"param_{name}"].values, ds[f"param_{name}_spread"].values
        a.plot(yr, m, "C2", lw=0.8)
        a.fill_between(yr, m - sp, m + sp, color="C2", alpha=0.3)
        if f"learned_param_{name}" in ds:
            a.plot(yr, ds[f"learned_param_{name}"], "C3", lw=0.8, label="with learned correction")
            a.legend(fontsize=7)
        a.set_ylabel(name)
    axes[-1, 0].set_xlabel("year")
    axes[0, 0].set_title("estimated parameters (mean ± spread, 1/month)")
    files.append(save_figure(fig, out / "enso_params.png"))

    periods = [p for p in ("verify", "test") if p in summary["skill"].get("recharge", {})]
    fig, axes = plt.subplots(1, max(1, len(periods)), figsize=(5.5 * max(1, len(periods)), 3.8), squeeze=False)
    for a, period in zip(axes[0], periods, strict=False):
        base = summary["skill"]["recharge"][period]
        leads = np.arange(1, len(base["acc"]) + 1)
        a.plot(leads, base["persistence_acc"], "k--", label="persistence")
        lowest = float(np.nanmin(base["persistence_acc"]))
        for run, style in (("recharge", "C0-o"), ("learned", "C3-s")):
            if period in summary["skill"].get(run, {}):
                acc = summary["skill"][run][period]["acc"]
                a.plot(leads, acc, style, ms=3, label=run)
                lowest = min(lowest, float(np.nanmin(acc)))
        a.axhline(0.0, color="0.7", lw=0.5)
        bottom = min(-0.2, lowest - 0.05)
        a.set(xlabel="lead (months)", ylabel="anomaly correlation", title=f"skill vs lead, {period}", ylim=(bottom, 1))
        a.legend(fontsize=8)
    files.append(save_figure(fig, out / "enso_skill.png"))
    return files
