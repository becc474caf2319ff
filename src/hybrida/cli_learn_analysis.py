"""``hybrida learn {analysis,latent,score,filter} PRESET``: train a learned DA part and compare it with the classical ones.

One command per family of ``hybrida.experiment.learned_analysis.FAMILIES``, plus
``hybrida learn FAMILY-presets`` listing each family's presets.
"""

# No `from __future__ import annotations`: typer evaluates the annotations, whose help texts
# name the family, a closure variable that string annotations could not see.

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hybrida.cli_errors import check_out, fail

out_console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

#: family -> (what it trains, the file its trained part is saved to)
FAMILY_HELP: dict[str, tuple[str, str]] = {
    "analysis": ("a learned analysis (AI-Var, CNN analysis, amortised filter, 4DVarNet)", "analysis.pt"),
    "latent": ("a reduced representation (POD, autoencoder) and DA in its latent space", "latent.pt"),
    "score": ("a score-based (diffusion) prior: posterior sampling and generated ensembles", "score.pt"),
    "filter": ("learned localisation and inflation inside the LETKF (Bach et al. 2025)", "filter.pt"),
    "subgrid": ("a subgrid parametrisation of a coarse model from high-resolution runs (Ross et al. 2023)",
                "subgrid.pt"),
}


def _score_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) rows of the headline scores and baselines, whatever their nesting."""
    rows: list[tuple[str, str]] = []

    def add(name: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                add(f"{name} {key}", sub)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((name, f"{value:.4f}"))

    for key in ("rmse", "r_rmse"):
        if key in summary:
            add(f"learned {key}", summary[key])
    for name, value in (summary.get("baselines") or {}).items():
        add(name, value)
    return rows


def make_learn_command(family: str) -> Callable[..., None]:
    """The ``hybrida learn FAMILY PRESET`` command."""
    what, saved = FAMILY_HELP[family]

    def learn(
        preset: Annotated[str, typer.Argument(help=f"a preset of `hybrida learn {family}-presets`")],
        seed: Annotated[int, typer.Option("--seed", help="seed of the twin and of the training")] = 1,
        out: Annotated[Path | None, typer.Option("--out", help=f"output folder (default runs/{family}-<preset>-<seed>)")] = None,
        quick: Annotated[bool, typer.Option("--quick", help="the ≤5-minute variant with its looser bar")] = False,
        set_: Annotated[
            list[str] | None, typer.Option("--set", "-s", help="override KEY=VALUE (dotted keys, YAML values); repeatable")
        ] = None,
        resume: Annotated[bool, typer.Option("--resume", help="continue from the checkpoint in --out")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress display")] = False,
    ) -> None:
        from hybrida.experiment.config import ConfigError
        from hybrida.experiment.learned_analysis import run_learned_analysis

        out_dir = out or Path("runs") / f"{family}-{preset}-{seed}"
        check_out(out_dir)
        t0 = time.perf_counter()

        def say(message: str) -> None:
            err_console.print(f"[dim]{time.perf_counter() - t0:6.1f} s[/]  {message}", soft_wrap=True)

        try:
            summary = run_learned_analysis(
                preset, out_dir, family=family, seed=seed, quick=quick, overrides=set_ or [], resume=resume,
                progress=None if quiet else say,
            )
        except ConfigError as err:
            raise fail(str(err)) from None
        table = Table(title=f"{preset}{' (quick)' if quick else ''}: test scores", show_header=True, header_style="bold")
        table.add_column("method")
        table.add_column("score", justify="right")
        for name, value in _score_rows(summary):
            table.add_row(name, value)
        out_console.print(table)
        verdict = "met" if summary.get("met") else "NOT met"
        out_console.print(f"bar {summary.get('bar')}: {verdict}; training {summary.get('train_s', float('nan')):.0f} s")
        out_console.print(f"wrote {out_dir}/", soft_wrap=True)

    learn.__doc__ = (
        f"Train {what}, evaluate it beside the classical methods, write summary.json.\n\n"
        f"Writes {saved} (load it with --set method.name=learned --set method.params.path=...), "
        "summary.json (scores, baselines, train_s, bar, met) and plots."
    )
    return learn


def make_presets_command(family: str) -> Callable[[], None]:
    """The ``hybrida learn FAMILY-presets`` command."""

    def presets() -> None:
        from hybrida.experiment.learned_analysis import descriptions

        table = Table(show_header=True, header_style="bold")
        table.add_column("preset")
        table.add_column("description")
        for name, text in descriptions(family).items():
            table.add_row(name, text)
        out_console.print(table)

    presets.__doc__ = f"List the presets of `hybrida learn {family}`."
    return presets


def register(learn_app: typer.Typer) -> None:
    """Add ``FAMILY`` and ``FAMILY-presets`` commands for every family to ``learn_app``."""
    for family in FAMILY_HELP:
        learn_app.command(family)(make_learn_command(family))
        learn_app.command(f"{family}-presets")(make_presets_command(family))
