"""Real data on the command line: ``hybrida data enso|nile`` writes packaged series as observation files,
and ``hybrida run enso/...`` runs the ENSO pipeline (:mod:`hybrida.experiment.enso`) on one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hybrida.cli_errors import check_out, err_console, fail

__all__ = ["data_app", "run_enso_preset"]

out_console = Console(highlight=False)

data_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Packaged real datasets (no download) written as hybrida observation files.",
)


def _refuse_existing_dir(out: Path) -> None:
    if out.is_dir():
        raise fail(f"--out: {out} is a folder; give a file name such as {out / 'obs.nc'}")
    if out.parent.exists() and not out.parent.is_dir():
        raise fail(f"--out: {out.parent} is not a folder")


@data_app.command("enso")
def enso(
    out: Annotated[Path, typer.Option("--out", help="observation file to write (NetCDF)")] = Path("data/enso.nc"),
    source: Annotated[
        str, typer.Option("--source", help="pywavelets (ERSST v4, 1950-01..2016-08) or statsmodels (v3b, ..2010-12)")
    ] = "pywavelets",
    obs_error: Annotated[float, typer.Option("--obs-error", help="initial error std (degC), tuned later")] = 0.3,
) -> None:
    """Write the observed monthly Nino-3 SST anomaly (NOAA CPC) as an observation file of T in [T, h]."""
    from hybrida.datasets.enso import ENSO_SOURCES, write_enso_observations

    if source not in ENSO_SOURCES:
        raise fail(f"--source: choose one of {', '.join(ENSO_SOURCES)}, got {source!r}")
    _refuse_existing_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        path = write_enso_observations(out, source, obs_error)
    except (ImportError, ValueError) as err:
        raise fail(str(err)) from None
    out_console.print(f"wrote {path} (Nino-3 anomaly, {source}); next: hybrida run enso/recharge --obs {path}",
                      soft_wrap=True)


@data_app.command("nile")
def nile(
    out: Annotated[Path, typer.Option("--out", help="observation file to write (NetCDF)")] = Path("data/nile.nc"),
) -> None:
    """Write the annual Nile flow at Aswan 1871-1970 (statsmodels) as an observation file."""
    from hybrida.datasets.nile import write_nile_observations

    _refuse_existing_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        path = write_nile_observations(out)
    except (ImportError, ValueError) as err:
        raise fail(str(err)) from None
    out_console.print(f"wrote {path} (Nile flow at Aswan, 1871-1970)", soft_wrap=True)


def run_enso_preset(
    source: str,
    set_: list[str],
    seed: int | None,
    out: Path | None,
    obs: Path | None,
    no_plots: bool,
    quiet: bool,
    twin_only_options: bool = False,
) -> None:
    """``hybrida run enso/...``: validate, run :func:`hybrida.experiment.enso.run_enso`, print the skill table."""
    from hybrida.experiment.config import ConfigError
    from hybrida.experiment.enso import EnsoConfig, run_enso
    from hybrida.experiment.enso_report import skill_table
    from hybrida.experiment.presets import ENSO_PRESETS

    if source not in ENSO_PRESETS:
        raise fail(f"unknown preset '{source}'; the ENSO presets are {', '.join(ENSO_PRESETS)}")
    if twin_only_options:
        raise fail("--cycles/--resume/--write-obs apply to twin runs; the ENSO run takes its months from the file")
    overrides = list(set_) + ([f"seed={seed}"] if seed is not None else [])
    try:
        cfg = EnsoConfig.from_overrides(ENSO_PRESETS[source], overrides)
    except ConfigError as err:
        raise fail(str(err)) from None
    obs_path = obs or Path(cfg.obs_file)
    if not obs_path.is_file():
        raise fail(f"observation file {obs_path} not found: write it with `hybrida data enso --out {obs_path}`")
    out_dir = out or Path("runs") / f"{source.replace('/', '-')}-{cfg.seed}"
    check_out(out_dir)
    t0 = time.perf_counter()

    def say(message: str) -> None:
        if not quiet:
            err_console.print(f"[dim]{time.perf_counter() - t0:6.1f} s[/]  {message}", soft_wrap=True)

    try:
        summary = run_enso(cfg, obs_path, out_dir, progress=say, plots=not no_plots)
    except ConfigError as err:
        raise fail(str(err)) from None
    out_console.print(skill_table(summary), soft_wrap=True, markup=False)
    for run, targets in summary["targets"].items():
        met = ", ".join(f"{k}={v}" for k, v in targets.items() if k.endswith(("met", "acc6")) and isinstance(v, bool))
        out_console.print(f"{run}: {met}", soft_wrap=True, markup=False)
    out_console.print(f"wrote {out_dir}/: " + ", ".join(summary.get("files", [])), soft_wrap=True)
