"""``hybrida sweep``: a grid of experiments on Dask, or vectorised (runs as one tensor program)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hybrida.cli_errors import check_out, err_console, fail, sanitise
from hybrida.experiment.config import ConfigError

out_console = Console(highlight=False)


def sweep(
    config: Annotated[
        Path, typer.Argument(help="sweep YAML: base, set, methods, N, infl, loc_rad, seeds, grid")
    ],
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="address of a running Dask scheduler")
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", help="local worker processes (0: run serially in-process)")
    ] = 2,
    out: Annotated[
        Path | None, typer.Option("--out", help="output folder (default runs/sweep-<name>)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    vectorize: Annotated[
        bool,
        typer.Option("--vectorize", help="run points differing only in seed/infl as tensor programs (ETKF, LETKF, "
                     "DEnKF): up to --workers batches side by side in local processes"),
    ] = False,
) -> None:
    """Run a grid of experiments on Dask and write runs.csv, table.csv, table.md (medians over seeds)."""
    from hybrida.experiment.sweep import expand, load_sweep, run_sweep

    try:
        spec = load_sweep(config)
        n_runs = len(expand(spec))
    except ConfigError as err:
        raise fail(str(err)) from None
    out_dir = out or Path("runs") / f"sweep-{sanitise(spec.name)}"
    check_out(out_dir)
    try:
        result = run_sweep(
            spec,
            out_dir,
            scheduler=scheduler,
            workers=workers,
            vectorize=vectorize,
            progress=not quiet,
            on_start=lambda: err_console.print(f"{n_runs} runs -> {out_dir}"),
        )
    except ConfigError as err:  # --workers, an unreachable --scheduler
        raise fail(str(err)) from None
    out_console.print(result.files["table_md"].read_text(), soft_wrap=True, markup=False)
    if "error" in result.runs:
        failed = result.runs["error"].notna().sum()
        if failed:
            err_console.print(
                f"[bold yellow]warning:[/] {failed} run(s) failed; see runs.csv", soft_wrap=True
            )
    out_console.print("wrote " + ", ".join(str(p) for p in result.files.values()), soft_wrap=True)
