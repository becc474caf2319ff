"""The ``hybrida`` command: run presets or YAML experiments, list presets, run sweeps, learn surrogates.

``hybrida run`` without arguments runs the DA–ML demo (classical DA on sparse
observations → reanalysis → surrogate → DA with the surrogate); ``hybrida
learn surrogate CONFIG`` runs any such experiment.

Exit codes: 0 success (also when the filter diverged: the summary says
``diverged: true`` and a yellow warning line is printed), 2 bad input
(unknown preset, invalid YAML, validation error), 1 unexpected failure.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hybrida.cli_assimilate import assimilate, assimilate_config
from hybrida.cli_data import data_app, run_enso_preset
from hybrida.cli_errors import OneLineErrors, check_out, err_console, fail, sanitise, whole_number
from hybrida.cli_export import export
from hybrida.cli_learn_analysis import register as register_learn_commands
from hybrida.cli_sweep import sweep
from hybrida.experiment.config import (
    ConfigError,
    apply_overrides,
    parse_override,
    read_source,
    switch_method,
    validate_config,
)
from hybrida.io.checkpoint import CheckpointError

#: what ``hybrida run`` without SOURCE runs: a surrogate preset (or YAML path) of hybrida.experiment.surrogate_pipeline
DEMO_SOURCE = "demo"
out_console = Console(highlight=False)


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="hybrida: hybrid data assimilation + machine learning, on twins and on real observations.",
)
learn_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Learned components: surrogates (the DA-ML loop), learned analyses, latent and score-based DA, learned filters, subgrid parametrisations.",
)
app.add_typer(learn_app, name="learn")
app.add_typer(data_app, name="data")
app.command(name="assimilate")(assimilate)
app.command(name="export")(export)
app.command(name="sweep")(sweep)
register_learn_commands(learn_app)


def _model_dt(data: dict[str, Any]) -> float | None:
    """The model time step: from the params, else the model class default."""
    model = data.get("model") or {}
    dt = (model.get("params") or {}).get("dt")
    if isinstance(dt, (int, float)):
        return float(dt)
    from hybrida import registry
    from hybrida.experiment.builder import resolve

    try:
        cls = resolve(registry.MODELS, model.get("name", "lorenz96"), "model")
        default = inspect.signature(cls.__init__).parameters["dt"].default
        return float(default)
    except (ValueError, KeyError, TypeError):  # validation reports the real problem
        return None


def _fit_burn_in(data: dict[str, Any]) -> str | None:
    """Shorten a preset's burn-in that is longer than a shortened run (returns a note)."""
    dt = _model_dt(data)
    if dt is None:
        return None
    every = (data.get("observations") or {}).get("every", 1)
    total = data.get("cycles", 1) * every * dt
    burn = data.get("burn_in", 0.0)
    numbers = isinstance(burn, (int, float)) and isinstance(total, (int, float))
    if numbers and 0 < total <= burn:  # a bad cycles value is validation's to report
        data["burn_in"] = round(0.2 * total, 10)
        return f"burn_in {burn:g} >= run length {total:g}: using {data['burn_in']:g} (set burn_in to change)"
    return None


#: share of "lost" cycles above which `hybrida run` warns
LOST_WARNING = 0.05


def _summary_table(summary: dict[str, Any], title: str) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("score")
    table.add_column("value", justify="right")
    for key in (
        "method",
        "seed",
        "N",
        "n_cycles",
        "n_scored",
        "rmse_a",
        "rmse_f",
        "spread_a",
        "spread_f",
        "spread_skill",
        "crps_a",
        "lost_fraction",
        "clim_std",
        "wall_s",
        "diverged",
    ):
        v = summary.get(key)
        if v is None:
            continue
        table.add_row(key, f"{v:.4g}" if isinstance(v, float) else str(v))
    return table


@app.command()
def run(
    source: Annotated[
        str | None, typer.Argument(help="preset name (see `hybrida presets`) or config YAML path")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", help="override KEY=VALUE (dotted keys, YAML values); repeatable"
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="master seed")] = None,
    cycles: Annotated[
        int | None,
        typer.Option("--cycles", help="number of analysis cycles", parser=whole_number),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="output folder (default runs/<name>-<seed>)")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue from OUT/checkpoint.pt")
    ] = False,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="skip the PNG figures")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    write_obs: Annotated[
        bool, typer.Option("--write-obs", help="also write the observations to OUT/observations.nc")
    ] = False,
    obs: Annotated[
        Path | None, typer.Option("--obs", help="assimilate this observation file (sets observations.file)")
    ] = None,
) -> None:
    """Run one twin experiment; write results.nc, summary.json, config.yaml and plots.

    --write-obs writes the twin's observations as a file that `hybrida
    assimilate` reads (the same config and seed then give the same analyses).

    Without SOURCE it runs the DA-ML demo (1-4 minutes): LETKF on half of the
    Lorenz-96 grid observed at random -> reanalysis -> CNN surrogate trained on
    it -> LETKF with the surrogate vs with the true model; --set then takes keys
    of `hybrida learn surrogate` configs. A diverged filter is reported
    (summary and warning) with exit code 0.
    """
    from hybrida.experiment.runner import run_experiment

    set_ = set_ or []
    if source is None:
        if cycles is not None or resume or write_obs:
            raise fail(
                "--cycles/--resume/--write-obs apply to a preset or config run; the demo takes "
                "--set training.train_cycles=N / --set evaluation.test_cycles=N"
            )
        _run_surrogate(DEMO_SOURCE, set_, seed, out, no_plots, quiet, prefix="demo")
        return
    if source.startswith("enso/"):  # the real-data ENSO pipeline (hybrida.experiment.enso)
        run_enso_preset(source, set_, seed, out, obs, no_plots, quiet, cycles is not None or resume or write_obs)
        return
    notes = []
    try:
        data = read_source(source)
        for o in set_:
            parts, value = parse_override(o)
            if parts == ["method", "name"]:
                data = switch_method(data, value)
        data = apply_overrides(data, list(set_))
        if cycles is not None:
            data["cycles"] = cycles
            if not any(o.split("=", 1)[0].strip() == "burn_in" for o in set_):
                note = _fit_burn_in(data)
                if note:
                    notes.append(note)
        if seed is not None:
            data["seed"] = seed
        if obs is not None:
            data.setdefault("observations", {})["file"] = str(obs)
        config = validate_config(data)
    except ConfigError as err:
        raise fail(str(err)) from None
    if config.observations.file is not None:
        assimilate_config(config, out, resume, quiet)
        return

    out_dir = out or Path("runs") / f"{sanitise(config.name)}-{config.seed}"
    check_out(out_dir)
    for note in notes:
        err_console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    try:
        result = run_experiment(
            config, out_dir, resume=resume, progress=not quiet, write_observations_file=write_obs
        )
    except (ConfigError, CheckpointError) as err:  # too big for memory; a broken checkpoint
        raise fail(str(err)) from None
    files = list(result.files.values())
    if not no_plots:
        from hybrida.plots import plot_all

        files += plot_all(result.dataset(), out_dir, burn_in=config.burn_in)
    summary = result.summary
    out_console.print(_summary_table(summary, f"{config.name} / {config.method.name}"))
    if result.resumed_from is not None:
        out_console.print(f"resumed after cycle {result.resumed_from}")
    if summary["diverged"]:
        where = f" at cycle {summary['diverged_cycle']}" if summary.get("diverged_cycle") else ""
        err_console.print(
            f"[bold yellow]warning:[/] filter diverged{where}: {summary['diverged_reason']}",
            soft_wrap=True,
        )
    lost = summary.get("lost_fraction")
    if isinstance(lost, float) and lost > LOST_WARNING:
        err_console.print(
            f"[bold yellow]warning:[/] the analysis error exceeded 4x the spread in "
            f"{100 * lost:.0f}% of the scored cycles: the filter lost track for a while",
            soft_wrap=True,
        )
    out_console.print(f"wrote {out_dir}/: " + ", ".join(p.name for p in files), soft_wrap=True)


@app.command()
def presets() -> None:
    """List the built-in presets."""
    from hybrida.experiment.presets import list_presets

    table = Table(show_header=True, header_style="bold")
    table.add_column("preset")
    table.add_column("description")
    from hybrida.experiment.presets import ENSO_DESCRIPTIONS

    for name, desc in [*list_presets(), *ENSO_DESCRIPTIONS.items()]:
        table.add_row(name, desc)
    out_console.print(table)


def _surrogate_table(summary: dict[str, Any], title: str) -> Table:
    from hybrida.experiment.surrogate_pipeline import summary_rows

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("quantity")
    table.add_column("surrogate", justify="right")
    table.add_column("true model", justify="right")
    for row in summary_rows(summary):
        table.add_row(*row)
    return table


def _run_surrogate(
    source: str,
    set_: list[str],
    seed: int | None,
    out: Path | None,
    no_plots: bool,
    quiet: bool,
    prefix: str = "surrogate",
) -> None:
    """Validate, run and report one DA-ML experiment of :mod:`hybrida.experiment.surrogate_pipeline`."""
    import time

    from hybrida.experiment.surrogate_pipeline import (
        load_surrogate_config,
        run_surrogate_experiment,
    )

    overrides = list(set_)
    if seed is not None:
        overrides += [f"experiment.seed={seed}", f"training.seed={seed}"]
    try:
        config = load_surrogate_config(source, overrides)
    except ConfigError as err:
        raise fail(str(err)) from None
    exp_seed = config.twin_config().seed
    name = config.name if config.name.startswith(prefix) else f"{prefix}-{config.name}"
    out_dir = out or Path("runs") / f"{sanitise(name)}-{exp_seed}"
    check_out(out_dir)
    t0 = time.perf_counter()

    def say(message: str) -> None:
        if not quiet:
            err_console.print(
                f"[dim]{time.perf_counter() - t0:6.1f} s[/]  {message}", soft_wrap=True
            )

    try:
        summary = run_surrogate_experiment(
            config, out_dir, progress=say if not quiet else False, plots=not no_plots
        )
    except ConfigError as err:
        raise fail(str(err)) from None
    title = f"{config.name}: surrogate ({config.source}) vs true model"
    out_console.print(_surrogate_table(summary, title))
    if summary.get("surrogate_da_diverged_at") is not None:
        err_console.print(
            f"[bold yellow]warning:[/] DA with the surrogate diverged at test cycle "
            f"{summary['surrogate_da_diverged_at']}",
            soft_wrap=True,
        )
    out_console.print(f"wrote {out_dir}/: " + ", ".join(summary.get("files", [])), soft_wrap=True)


@learn_app.command("surrogate")
def learn_surrogate(
    source: Annotated[
        str,
        typer.Argument(help="surrogate preset (see `hybrida learn presets`) or config YAML path"),
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", help="override KEY=VALUE (dotted keys, YAML values); repeatable"
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="seed of the twin and of the training")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="output folder (default runs/surrogate-<name>-<seed>)"),
    ] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="skip the PNG figures")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress display")] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="the preset's scaled-down variant (minutes; presets that have one)")
    ] = False,
) -> None:
    """Train a surrogate on truth / reanalysis / the DA-ML loop and compare it with the true model.

    Writes surrogate.pt, summary.json, table.md, config.yaml and plots.
    """
    overrides = set_ or []
    if quick:
        from hybrida.experiment.surrogate_config import quick_overrides

        try:
            overrides = [*quick_overrides(source), *overrides]
        except ConfigError as err:
            raise fail(str(err)) from None
    _run_surrogate(source, overrides, seed, out, no_plots, quiet)


@learn_app.command("presets")
def learn_presets() -> None:
    """List the built-in surrogate experiments."""
    from hybrida.experiment.surrogate_pipeline import DESCRIPTIONS, PRESETS

    table = Table(show_header=True, header_style="bold")
    table.add_column("preset")
    table.add_column("description")
    for name in PRESETS:
        table.add_row(name, DESCRIPTIONS.get(name, ""))
    out_console.print(table)


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
