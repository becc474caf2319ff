"""One-line errors of the ``hybrida`` command: ``error: <what to fix>`` on stderr, exit code 2.

Bad option values, unknown options and missing arguments are reported the
same way as invalid configs (no boxed usage panel, no traceback).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from hybrida.io.outdir import OutDirError, check_out_dir

try:  # typer >= 0.2x ships its own copy of click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on click
    from click.exceptions import NoArgsIsHelpError, UsageError

err_console = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, markup=True)
    return typer.Exit(code)


@contextlib.contextmanager
def _usage_errors_in_one_line() -> Iterator[None]:
    try:
        yield
    except NoArgsIsHelpError:
        raise
    except UsageError as err:
        ctx = err.ctx
        see = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        raise fail(err.format_message().replace("\n", " ") + see) from None


class OneLineErrors(TyperGroup):
    """Usage errors (bad option values, unknown options) in the one-line style of :func:`fail`."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _usage_errors_in_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _usage_errors_in_one_line():
            return super().invoke(ctx)


def whole_number(text: str) -> int:
    """An integer option value; also written as 1e4 or 2.0e5 (YAML numbers)."""
    from hybrida.experiment.config import load_yaml

    try:
        value = load_yaml(text)
    except Exception:  # noqa: BLE001 - any unparsable text is simply not a number
        value = None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise typer.BadParameter(f"{text!r} is not a whole number (e.g. 200 or 1e4)")
    return value


def check_out(out_dir: Path) -> None:
    """Fail in one line, before any work, when the output folder cannot be written."""
    try:
        check_out_dir(out_dir)
    except OutDirError as err:
        raise fail(str(err)) from None


def sanitise(name: str) -> str:
    """``name`` as a folder name: runs of other characters than letters, digits, ``._-`` become ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"
