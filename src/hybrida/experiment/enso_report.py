"""Summary, tables, analyses file and plots of the ENSO pipeline (:mod:`hybrida.experiment.enso`)."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from hybrida.experiment.enso_scores import (
    forecast_skill,
    independent_checks,
    innovation_checks,
    period_mask,
)
from hybrida.io.atomic import atomic_write
from hybrida.io.results import hybrida_version, write_summary

if TYPE_CHECKING:
    from hybrida.experiment.enso import EnsoConfig, EnsoRun

__all__ = ["skill_table", "summarise", "write_outputs"]

#: the issue's targets (issue 18): ACC(6) >= persistence + 0.1; RMSE below persistence from 3 months
ACC_MARGIN = 0.1
ACC_LEAD = 6
RMSE_FROM = 3


def _periods(cfg: EnsoConfig) -> dict[str, list[int]]:
    return {"fit": list(cfg.fit), "verify": list(cfg.verify), "test": list(cfg.test)}


def summarise(
    cfg: EnsoConfig,
    runs: dict[str, EnsoRun],
    extra: dict[str, np.ndarray],
    sigma_o: float,
    noise: list[float],
    history: list[dict[str, float]],
    fit_info: dict[str, float] | None,
) -> dict[str, Any]:
    """Innovation checks, skill vs lead, independent checks and targets of every run, per period."""
    from hybrida.experiment.enso import SPIN_UP, years_of

    summary: dict[str, Any] = {"name": cfg.name, "seed": cfg.seed, "members": cfg.members, "config": asdict(cfg),
                               "sigma_o_tuned": sigma_o, "noise_std_tuned": noise, "desroziers_history": history,
                               "innovations": {}, "skill": {}, "independent": {}, "parameters": {}, "oscillator": {}, "targets": {}}
    if fit_info is not None:
        summary["correction_fit"] = fit_info
    for name, run in runs.items():
        years = years_of(run.times)
        spun = np.arange(run.times.size) >= SPIN_UP
        summary["innovations"][name], summary["skill"][name], summary["independent"][name] = {}, {}, {}
        for period, (a, b) in _periods(cfg).items():
            mask = period_mask(years, a, b) & spun
            if not mask.any():
                continue
            summary["innovations"][name][period] = innovation_checks(run.omb, run.oma, run.hbh, run.r, mask)
            summary["independent"][name][period] = independent_checks(run.mean_a[:, 0], run.mean_a[:, 1], extra, mask)
            if run.forecasts is not None:
                summary["skill"][name][period] = forecast_skill(run.forecasts, extra["nino3"], mask, sigma_o)
        fit = period_mask(years, *cfg.fit)
        last_fit = int(np.flatnonzero(fit)[-1])
        summary["parameters"][name] = {
            k: {"end_of_fit": float(v[last_fit, 0]), "end": float(v[-1, 0]), "spread_end": float(v[-1, 1]),
                "mean_after_spin_up": float(v[SPIN_UP:, 0].mean())} for k, v in run.params.items()}
        summary["oscillator"][name] = _linear_mode(cfg, summary["parameters"][name])
        summary["targets"][name] = _targets(summary["skill"][name])
        summary["wall_s_" + name] = run.wall_s
    if "learned" in runs:
        for period in ("verify", "test"):
            if period in summary["skill"].get("learned", {}) and len(summary["skill"]["learned"][period]["acc"]) >= ACC_LEAD:
                acc_l = summary["skill"]["learned"][period]["acc"][ACC_LEAD - 1]
                acc_p = summary["skill"]["recharge"][period]["acc"][ACC_LEAD - 1]
                summary["targets"]["learned"][f"{period}_improves_acc6"] = bool(acc_l > acc_p)
    return summary


def _linear_mode(cfg: EnsoConfig, parameters: dict[str, dict[str, float]]) -> dict[str, float]:
    """Period and h-T lead (months) of the linear oscillator with the parameters at the end of the fit period.

    The analysed h can only lead T as the model's own free mode makes it (h is never
    observed), so ``h_leads_T_months`` of the independent checks is compared with this.
    """
    from hybrida.models.recharge import RechargeOscillator, h_lead_months, linear_frequency

    defaults = RechargeOscillator()
    value = {k: float(cfg.fixed.get(k, getattr(defaults, k))) for k in ("R", "gamma", "r", "alpha")}
    value.update({k: v["end_of_fit"] for k, v in parameters.items() if k in value})
    try:
        omega = linear_frequency(**value)[1]
        return {"period_months": 2 * math.pi / omega, "h_leads_T_months": h_lead_months(**value), **value}
    except ValueError:  # no oscillation with these parameters
        return {"period_months": math.inf, "h_leads_T_months": math.nan, **value}


def _targets(skill: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """ACC(6) >= persistence + 0.1 and RMSE < persistence for every lead >= 3, per period."""
    out: dict[str, Any] = {}
    for period in ("verify", "test"):
        if period not in skill:
            continue
        s = skill[period]
        i = ACC_LEAD - 1
        if len(s["acc"]) < ACC_LEAD:
            continue
        out[f"{period}_acc6"] = s["acc"][i]
        out[f"{period}_persistence_acc6"] = s["persistence_acc"][i]
        out[f"{period}_acc6_target_met"] = bool(s["acc"][i] >= s["persistence_acc"][i] + ACC_MARGIN)
        leads = range(RMSE_FROM - 1, len(s["rmse"]))
        out[f"{period}_rmse_target_met"] = bool(all(s["rmse"][j] < s["persistence_rmse"][j] for j in leads))
    return out


def skill_table(summary: dict[str, Any], leads: tuple[int, ...] = (1, 3, 6, 9, 12)) -> str:
    """Markdown table: ACC and RMSE per lead for each run and period, with persistence."""
    n_leads = max((len(p[q]["acc"]) for p in summary["skill"].values() for q in p), default=0)
    leads = tuple(k for k in leads if k <= n_leads)
    lines = ["| run | period | score | " + " | ".join(f"{k} mo" for k in leads) + " |",
             "|---|---|---|" + "---:|" * len(leads)]
    for period in ("verify", "test"):
        first = True
        for run, per in summary["skill"].items():
            if period not in per:
                continue
            s = per[period]
            rows = [(run, "ACC", s["acc"]), (run, "RMSE", s["rmse"]), (run, "CRPS", s["crps"]),
                    (run, "spread/skill", s["spread_skill"])]
            if first:
                rows = [("persistence", "ACC", s["persistence_acc"]), ("persistence", "RMSE", s["persistence_rmse"]),
                        *rows]
                first = False
            for who, score, vals in rows:
                cells = " | ".join(f"{vals[k - 1]:.2f}" if math.isfinite(vals[k - 1]) else "-" for k in leads)
                lines.append(f"| {who} | {period} | {score} | {cells} |")
    return "\n".join(lines) + "\n"


def _dataset(cfg: EnsoConfig, runs: dict[str, EnsoRun], extra: dict[str, np.ndarray], summary: dict) -> xr.Dataset:
    run0 = next(iter(runs.values()))
    months = np.rint(run0.times).astype(np.int64) - 1
    coords = {"time": ("time", run0.times, {"long_name": "model time, months since 1949-12 (t = 1 is 1950-01)"}),
              "year": ("time", 1950 + months // 12), "month": ("time", 1 + months % 12)}
    data: dict[str, Any] = {
        "T_obs": ("time", extra["nino3"], {"long_name": "observed Nino-3 anomaly", "units": "degC"}),
        "nino34_obs": ("time", extra["nino34"], {"long_name": "Nino-3.4 anomaly (not assimilated)", "units": "degC"}),
        "nino4_obs": ("time", extra["nino4"], {"long_name": "Nino-4 anomaly (not assimilated)", "units": "degC"}),
    }
    for name, run in runs.items():
        p = "" if name == "recharge" else f"{name}_"
        data[f"{p}T_a"] = ("time", run.mean_a[:, 0], {"long_name": "analysed T (ensemble mean)", "units": "degC"})
        data[f"{p}h_a"] = ("time", run.mean_a[:, 1], {"long_name": "analysed h (ensemble mean, unobserved)"})
        data[f"{p}T_a_spread"] = ("time", run.spread_a[:, 0], {"long_name": "analysis spread of T"})
        data[f"{p}h_a_spread"] = ("time", run.spread_a[:, 1], {"long_name": "analysis spread of h"})
        data[f"{p}T_b"] = ("time", run.mean_b[:, 0], {"long_name": "background T (ensemble mean)"})
        data[f"{p}omb"] = ("time", run.omb, {"long_name": "O-B"})
        data[f"{p}oma"] = ("time", run.oma, {"long_name": "O-A"})
        for k, v in run.params.items():
            data[f"{p}param_{k}"] = ("time", v[:, 0], {"long_name": f"analysed parameter {k} (mean)"})
            data[f"{p}param_{k}_spread"] = ("time", v[:, 1], {"long_name": f"spread of parameter {k}"})
    return xr.Dataset(data, coords=coords, attrs={"title": f"hybrida ENSO analyses ({cfg.name})",
                                                    "sigma_o_tuned": summary["sigma_o_tuned"],
                                                    "hybrida_version": hybrida_version()})


def write_outputs(
    cfg: EnsoConfig, runs: dict[str, EnsoRun], extra: dict[str, np.ndarray], summary: dict[str, Any],
    out: Path, plots: bool = True,
) -> list[str]:
    """Write analyses.nc, summary.json, skill.md and (with ``plots``) the PNG figures into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    ds = _dataset(cfg, runs, extra, summary)
    files = [atomic_write(out / "analyses.nc", lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))]
    text = skill_table(summary)
    files.append(atomic_write(out / "skill.md", lambda tmp: Path(tmp).write_text(text)))
    if plots:
        from hybrida.experiment.enso_plots import plot_enso

        files += plot_enso(ds, summary, out)
    if (out / "correction.pt").is_file():
        files.append(out / "correction.pt")
    files.append(write_summary(summary, out / "summary.json"))
    return [Path(f).name for f in files]
