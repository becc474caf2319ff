"""``hybrida assimilate``: cycle a method over an observation file, no truth needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hybrida.cli_errors import check_out, err_console, fail
from hybrida.experiment.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    parse_override,
    read_source,
    switch_method,
    validate_config,
)
from hybrida.io.checkpoint import CheckpointError

out_console = Console(highlight=False)

#: summary keys shown after an assimilation (all are in summary.json)
SHOWN = (
    "method",
    "N",
    "n_cycles",
    "n_scored",
    "n_innovations",
    "omb_mean",
    "omb_rms",
    "oma_rms",
    "chi2_per_obs",
    "sigma_o_assumed",
    "desroziers_sigma_o",
    "desroziers_sigma_b",
    "dfs_per_cycle",
    "spread_a",
    "wall_s",
    "diverged",
)


def _table(summary: dict[str, Any], title: str) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for key in SHOWN:
        v = summary.get(key)
        if v is not None:
            table.add_row(key, f"{v:.4g}" if isinstance(v, float) else str(v))
    return table


def assimilate(
    source: Annotated[str, typer.Argument(help="preset name or config YAML: model, method, seed")],
    obs: Annotated[Path, typer.Option("--obs", help="observation file (hybrida/IODA-like NetCDF)")],
    out: Annotated[Path | None, typer.Option("--out", help="output folder (default runs/<file>-assim)")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="override KEY=VALUE (dotted keys, YAML values); repeatable"),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="master seed (initial background, analysis noise)")] = None,
    members: Annotated[
        bool | None, typer.Option("--members/--no-members", help="write the analysis members (default: config)")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from OUT/checkpoint.pt")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Assimilate the observations in --obs with the config's model and method; no truth needed.

    The file sets the cycles and the time between them; the config the model,
    the method and the seed of the initial background (initial.center must be
    'reference'). Writes analyses.nc (or analyses.zarr when large),
    observations.nc (the input plus O-B, O-A and QC flags per observation),
    summary.json (omb_rms, oma_rms, chi2_per_obs, desroziers_sigma_o, ...)
    and config.yaml. `hybrida run PRESET --write-obs` writes such a file from
    a twin.
    """
    if not obs.is_file():
        raise fail(f"--obs: {obs} is not a file")
    try:
        data = read_source(source)
        for o in set_ or []:
            parts, value = parse_override(o)
            if parts == ["method", "name"]:
                data = switch_method(data, value)
        data = apply_overrides(data, list(set_ or []))
        if seed is not None:
            data["seed"] = seed
        data.setdefault("observations", {})["file"] = str(obs)
        config = validate_config(data)
    except ConfigError as err:
        raise fail(str(err)) from None
    assimilate_config(config, out, resume, quiet, members)


def assimilate_config(
    config: ExperimentConfig, out: Path | None, resume: bool, quiet: bool, members: bool | None = None
) -> None:
    """Assimilate ``config.observations.file``; print the innovation statistics; one-line errors."""
    from hybrida.experiment.assimilate import assimilate_file, check_source_is_not_output
    from hybrida.io.obsfile import ObsFileError

    obs = Path(str(config.observations.file))
    if not obs.is_file():
        raise fail(f"observations.file: {obs} is not a file (write one with `hybrida run PRESET --write-obs`)")
    out_dir = out or Path("runs") / f"{obs.stem}-assim"
    check_out(out_dir)
    try:
        check_source_is_not_output(obs, out_dir)
        result = assimilate_file(config, obs, out_dir, store_members=members, resume=resume, progress=not quiet)
    except (ConfigError, ObsFileError, CheckpointError) as err:
        raise fail(str(err)) from None
    summary = result.summary
    out_console.print(_table(summary, f"{obs.name} / {config.method.name}"))
    if summary["diverged"]:
        err_console.print(
            f"[bold yellow]warning:[/] analysis diverged at cycle {summary['diverged_cycle']}: "
            f"{summary['diverged_reason']}",
            soft_wrap=True,
        )
    files = ", ".join(p.name for p in result.files.values())
    out_console.print(f"wrote {out_dir}/: {files}", soft_wrap=True)
