"""``hybrida export``: a saved learned part as TorchScript or ONNX, with a JSON manifest beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console

from hybrida.cli_errors import fail

out_console = Console(highlight=False)
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def export(
    path: Annotated[Path, typer.Argument(help="a saved surrogate, model-error correction or learned observation operator (.pt)")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="torchscript or onnx")] = "torchscript",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="exported file (default: beside PATH); the manifest is OUT.json")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="float64 or float32 (onnxruntime has no float64 Conv/Erf)")] = "float64",
) -> None:
    """Export a learned part for a Fortran/C++ host: the file, a manifest OUT.json, and a checked round trip.

    The exported file is loaded back and compared with the Python part on
    random inputs (to 1e-12 in float64, 1e-6 in float32) before it is kept.
    """
    from hybrida.io.export import FORMATS, ExportError, export_file, manifest_path

    if fmt not in FORMATS:
        raise fail(f"unsupported format {fmt!r}; use one of {', '.join(FORMATS)}")
    if dtype not in _DTYPES:
        raise fail(f"unsupported dtype {dtype!r}; use float64 or float32")
    try:
        written = export_file(path, out, fmt, _DTYPES[dtype])
    except ExportError as err:
        raise fail(str(err)) from None
    import json

    manifest = json.loads(manifest_path(written).read_text())
    diff = manifest["verified"]["max_abs_diff"]
    out_console.print(
        f"exported {manifest['kind']} ({manifest['dtype']}, {fmt}) to {written}; "
        f"manifest {manifest_path(written)}; max |exported - python| = {diff:.3g}",
        soft_wrap=True,
    )
