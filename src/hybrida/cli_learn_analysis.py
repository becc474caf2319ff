"""``hybrida learn analysis PRESET``: train a learned analysis (AI-Var, CNN analysis, amortised filter, 4DVarNet)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hybrida.cli_errors import check_out, fail

out_console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def learn_analysis(
    preset: Annotated[str, typer.Argument(help="aivar, cnn_analysis, amortised or 4dvarnet")],
    seed: Annotated[int, typer.Option("--seed", help="seed of the twin and of the training")] = 1,
    out: Annotated[Path | None, typer.Option("--out", help="output folder (default runs/analysis-<preset>-<seed>)")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="the ≤5-minute variant with its looser bar")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="override KEY=VALUE (dotted keys, YAML values); repeatable")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the checkpoint in --out")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress display")] = False,
) -> None:
    """Train a learned analysis, cycle it on a test period beside the classical methods, write summary.json.

    Writes analysis.pt (load it with --set method.name=learned --set method.params.path=...),
    summary.json (rmse, baselines, train_s, bar, met) and plots.
    """
    from hybrida.experiment.config import ConfigError
    from hybrida.experiment.learned_analysis import run_learned_analysis

    out_dir = out or Path("runs") / f"analysis-{preset}-{seed}"
    check_out(out_dir)
    t0 = time.perf_counter()

    def say(message: str) -> None:
        err_console.print(f"[dim]{time.perf_counter() - t0:6.1f} s[/]  {message}", soft_wrap=True)

    try:
        summary = run_learned_analysis(
            preset, out_dir, seed=seed, quick=quick, overrides=set_ or [], resume=resume,
            progress=None if quiet else say,
        )
    except ConfigError as err:
        raise fail(str(err)) from None
    table = Table(title=f"{preset}{' (quick)' if quick else ''}: test rmse", show_header=True, header_style="bold")
    table.add_column("method")
    table.add_column("rmse", justify="right")
    table.add_row(f"learned ({preset})", f"{summary['rmse']:.4f}")
    for name, value in summary.get("baselines", {}).items():
        table.add_row(name, f"{value:.4f}")
    out_console.print(table)
    verdict = "met" if summary.get("met") else "NOT met"
    out_console.print(f"bar {summary.get('bar')}: {verdict}; training {summary.get('train_s', float('nan')):.0f} s")
    out_console.print(f"wrote {out_dir}/", soft_wrap=True)


def learn_analysis_presets() -> None:
    """List the learned-analysis presets."""
    from hybrida.experiment.learned_analysis import descriptions

    table = Table(show_header=True, header_style="bold")
    table.add_column("preset")
    table.add_column("description")
    for name, text in descriptions().items():
        table.add_row(name, text)
    out_console.print(table)
