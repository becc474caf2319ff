"""Reporting of a DA–ML experiment: the summary table (Markdown and CLI rows) and the output files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hybrida.experiment.surrogate_config import SurrogateExperimentConfig
from hybrida.io.atomic import atomic_write
from hybrida.io.results import write_summary
from hybrida.learn.persist import save_surrogate
from hybrida.models.surrogate import SurrogateModel

__all__ = ["summary_rows", "table_markdown", "write_outputs"]


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(quantity, surrogate, true model) rows shared by table.md and the CLI table."""

    def f(v: Any, digits: int = 3) -> str:
        if v is None:
            return "—"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.{digits}g}"
        return str(v)

    s = summary
    rows = [
        ("training source", f(s.get("source")), ""),
        ("valid time from DA analyses (model time)", f(s.get("valid_time")), f(s.get("valid_time_model"))),
        (
            "valid time from DA analyses (Lyapunov times)",
            f(s.get("valid_time_lyapunov")),
            f(s.get("valid_time_model_lyapunov")),
        ),
        (
            "upper bound: valid time from the truth (Lyapunov times)",
            f(s.get("valid_time_from_truth_lyapunov")),
            "—",
        ),
        (
            f"forecast error / clim std after 1 cycle (persistence {f(s.get('skill_cycle1_persistence'))})",
            f(s.get("skill_cycle1_surrogate")),
            f(s.get("skill_cycle1_model")),
        ),
        (
            (f"upper bound: the same from the truth (persistence "
            f"{f(s.get('skill_cycle1_persistence_from_truth'))})"),
            f(s.get("skill_cycle1_from_truth")),
            "—",
        ),
        (
            f"forecast error / clim std at the lead (persistence {f(s.get('skill_lead_persistence'))})",
            f(s.get("skill_lead_surrogate")),
            f(s.get("skill_lead_model")),
        ),
        ("leading Lyapunov exponent", f(s.get("lyapunov_surrogate")), f(s.get("lyapunov_truth"))),
        ("spectrum log10 distance", f(s.get("spectrum_log_distance")), "0"),
        ("DA rmse_a, test period", f(s.get("rmse_a_surrogate")), f(s.get("rmse_a_model"))),
        ("rmse_a ratio (target <= 1.15)", f(s.get("rmse_ratio")), ""),
        ("ratio of time-median rmse_a", f(s.get("rmse_ratio_median")), ""),
        ("model noise std in the surrogate DA", f(s.get("model_noise")), ""),
        (
            "TL Taylor slope / adjoint error",
            f"{f(s.get('taylor_slope'))} / {f(s.get('adjoint_error'), 2)}",
            "",
        ),
    ]
    if "reanalysis_rmse_a" in s:
        rows.append(("training reanalysis rmse_a", f(s.get("reanalysis_rmse_a")), ""))
    if "loop" in s:
        rows.append(
            ("loop iterations (best)", f"{len(s['loop'])} ({s['loop_best_iteration']})", "")
        )
        rows.append(("first-guess rmse (interpolation)", f(s.get("first_guess_rmse")), ""))
    rows.append(("fit epochs / stopped", f"{s.get('fit_epochs')} / {s.get('fit_stopped')}", ""))
    walls = s.get("wall_s", {})
    rows.append(("wall time [s]", " ".join(f"{k} {v:.0f}" for k, v in walls.items()), ""))
    return rows


def table_markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table: surrogate vs true model, forecasts from the same analyses."""
    lines = [
        f"# {summary.get('name')} ({summary.get('source')}, {summary.get('network')})",
        "",
        "| quantity | surrogate | true model |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in summary_rows(summary)]
    lines += [
        "",
        f"Valid time: first lead where RMSE / clim_std > {summary.get('threshold')} (mean over "
        + "starts). Both columns forecast from the same analyses: those of the DA with the true "
        + "model on the test period, after its burn-in. The upper bound starts the surrogate "
        + "from the truth itself (no initial error); the true model from the truth never errs.",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(
    config: SurrogateExperimentConfig,
    surrogate: SurrogateModel,
    summary: dict[str, Any],
    art: dict[str, Any],
    out: Path,
    plots: bool = True,
) -> list[Path]:
    """surrogate.pt, config.yaml, table.md, PNGs and (last) summary.json, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    files = [save_surrogate(out / "surrogate.pt", surrogate, config.model_dump(mode="json"))]
    files.append(
        atomic_write(out / "config.yaml", lambda tmp: Path(tmp).write_text(config.to_yaml()))
    )
    files.append(
        atomic_write(out / "table.md", lambda tmp: Path(tmp).write_text(table_markdown(summary)))
    )
    if plots:
        from hybrida.learn.plots import plot_surrogate_experiment

        files += plot_surrogate_experiment(summary, art, out)
    summary["files"] = [p.name for p in files] + ["summary.json"]
    files.append(write_summary(summary, out / "summary.json"))
    return files
