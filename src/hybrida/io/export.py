"""Export learned parts to TorchScript or ONNX, with a JSON manifest beside the file, and load them back.

What is exported (see :mod:`hybrida.io.export_parts`): a surrogate's model step,
a model-error correction's learned term (the physics stays the host's code) and
a learned observation operator; each is one function ``x`` (batch, n_in) ->
``y`` (batch, n_out) with a dynamic batch dimension and every constant inside.

Every export is checked before it is reported done: the written file is
loaded back and run on random inputs from a fixed generator against the
in-Python part; the maximum difference is written to the manifest and an
export that differs by more than 1e-12 (float64) or 1e-6 (float32) is refused.

ONNX: needs ``onnx``, ``onnxscript`` (exporter) and ``onnxruntime`` (check)
(``pip install hybrida[export]``). What cannot be exported there is found by
that check, not assumed: a part whose operators onnxruntime does not
implement in the chosen dtype (e.g. a float64 operator with only a float32
kernel) is refused with onnxruntime's reason; export it in float32 or as
TorchScript. Measured with onnxruntime 1.32 (CPU): float64 ``Conv`` (the CNN
networks: BrajardCNN, ResidualCNN) and float64 ``Erf`` (GELU, the default
activation of ResidualMLP) have no kernel, so those parts go to ONNX only in
float32 (agreement ~1e-7); PolyConv corrections and LocalChannelNet operators
run in float64 (agreement ~1e-15). TorchScript takes every part in both dtypes. Nothing of the per-member online weights of a correction
(``theta``) is exported: only the weights stored in the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hybrida.io.atomic import atomic_write
from hybrida.io.export_parts import ExportError, Part, part_of, part_of_file

__all__ = ["FORMATS", "ExportError", "Exported", "export", "export_file", "load_exported", "manifest_path"]

FORMATS = ("torchscript", "onnx")
MANIFEST_FORMAT = "hybrida.export"
MANIFEST_VERSION = 1
TOL = {torch.float64: 1e-12, torch.float32: 1e-6}
_SUFFIX = {"torchscript": ".torchscript.pt", "onnx": ".onnx"}


def manifest_path(path: str | Path) -> Path:
    """Where the manifest of an exported file lies: ``model.onnx`` -> ``model.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def default_out(source: str | Path, fmt: str) -> Path:
    """``surrogate.pt`` -> ``surrogate.torchscript.pt`` / ``surrogate.onnx`` beside the source."""
    source = Path(source)
    return source.with_name(source.name.removesuffix(".pt") + _SUFFIX[fmt])


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the tracer's and exporters' own warnings and progress prints (torch.jit is deprecated in 2.13)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*(TorchScript|torch\.jit|jit).*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            yield
        finally:
            logger.setLevel(level)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


def _write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _onnx_runtime() -> Any:
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ExportError(
            f"ONNX export needs onnx, onnxscript and onnxruntime ({err.name} is missing): "
            "pip install 'hybrida[export]'"
        ) from None
    return onnxruntime


class _ShapeChecked(nn.Module):
    """The traced part behind a scripted check: a host passing another shape or dtype gets an error, not garbage."""

    def __init__(self, inner: nn.Module, n: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner, self.n, self.dtype = inner, n, dtype
        self.message = f"hybrida exported part: input must be a (batch, {n}) {str(dtype)[6:]} tensor"

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.size(1) != self.n or x.dtype != self.dtype:
            raise RuntimeError(self.message)
        return self.inner(x)


def _write_torchscript(module: nn.Module, example: Tensor, out: Path, manifest: dict[str, Any]) -> None:
    with _quiet():
        traced = torch.jit.trace(module, (example,), check_trace=False)
        checked = torch.jit.script(_ShapeChecked(traced, example.shape[1], example.dtype))
        buf = io.BytesIO()
        torch.jit.save(checked, buf, _extra_files={"hybrida_manifest.json": json.dumps(manifest)})
    _write_bytes(out, buf.getvalue())


def _write_onnx(module: nn.Module, example: Tensor, out: Path) -> None:
    _onnx_runtime()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    try:
        with _quiet():
            program = torch.onnx.export(
                module, (example,), None, input_names=["x"], output_names=["y"],
                dynamic_shapes=({0: batch},), dynamo=True, external_data=False,
                verbose=False, report=False, optimize=False,
            )
            data = program.model_proto.SerializeToString()
    except Exception as err:  # noqa: BLE001 - the exporter raises many types; report the first line
        raise ExportError(f"ONNX export failed: {_first_line(err)}") from None
    _write_bytes(out, data)


@dataclass
class Exported:
    """An exported part loaded back: call it on (batch, n_in) tensors; ``manifest`` describes it."""

    path: Path
    manifest: dict[str, Any]
    runner: Any

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.manifest["dtype"])

    def __call__(self, x: Tensor) -> Tensor:
        n_in = self.manifest["inputs"][0]["shape"][1]
        if x.ndim != 2 or x.shape[1] != n_in:
            raise ExportError(f"{self.path.name}: input must have shape (batch, {n_in}), got {tuple(x.shape)}")
        x = x.detach().to(self.dtype).cpu()
        if self.manifest["format"] == "torchscript":
            with torch.no_grad():
                return self.runner(x)
        return torch.from_numpy(self.runner.run(["y"], {"x": x.numpy()})[0])


def _random_inputs(n: int, dtype: torch.dtype, batch: int = 5) -> Tensor:
    g = torch.Generator().manual_seed(17)
    return (2.0 * torch.randn(batch, n, generator=g, dtype=torch.float64)).to(dtype)


def _manifest(part: Part, fmt: str, dtype: torch.dtype, source: str | None) -> dict[str, Any]:
    from importlib.metadata import version

    dims_out = "channel" if part.kind == "obs_operator" else "state"
    return {
        "manifest": MANIFEST_FORMAT, "manifest_version": MANIFEST_VERSION, "kind": part.kind,
        "format": fmt, "dtype": str(dtype).removeprefix("torch."), "source": source,
        "inputs": [{"name": "x", "shape": ["batch", part.n_in], "dims": ["batch", "state"]}],
        "outputs": [{"name": "y", "shape": ["batch", part.n_out], "dims": ["batch", dims_out]}],
        "hybrida_version": version("hybrida"), "torch_version": torch.__version__,
        **part.info,
    }


def _finish(part: Part, out: Path, fmt: str, dtype: torch.dtype, source: str | None) -> Path:
    if fmt not in FORMATS:
        raise ExportError(f"unsupported format {fmt!r}; use one of {', '.join(FORMATS)}")
    if dtype not in TOL:
        raise ExportError(f"dtype must be float64 or float32, got {dtype}")
    out = Path(out)
    if out.name.endswith(".json"):
        raise ExportError(f"{out}: the exported file cannot be a .json (that name is for the manifest)")
    if source is not None and out.resolve() == Path(source).resolve():
        raise ExportError(f"{out}: would overwrite the source file; pass another --out")
    manifest = _manifest(part, fmt, dtype, source)
    part.module.eval()
    example = _random_inputs(part.n_in, dtype, batch=3)
    if fmt == "torchscript":
        _write_torchscript(part.module, example, out, manifest)
    else:
        _write_onnx(part.module, example, out)
    manifest["file"] = out.name
    manifest["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    _write_bytes(manifest_path(out), json.dumps(manifest, indent=2).encode())
    x = _random_inputs(part.n_in, dtype)
    try:
        got = load_exported(out)(x)
    except Exception as err:  # noqa: BLE001 - onnxruntime's NOT_IMPLEMENTED and the like
        out.unlink(missing_ok=True)
        manifest_path(out).unlink(missing_ok=True)
        hint = "; export it as float32 or as torchscript" if fmt == "onnx" else ""
        raise ExportError(f"the exported {fmt} file does not run: {_first_line(err)}{hint}") from None
    with torch.no_grad():
        want = part.module(x)
    diff = float((got - want).abs().max())
    if not diff <= TOL[dtype]:
        out.unlink(missing_ok=True)
        manifest_path(out).unlink(missing_ok=True)
        raise ExportError(f"the exported {fmt} file differs from Python by {diff:.3g} > {TOL[dtype]:g}")
    manifest["verified"] = {"max_abs_diff": diff, "inputs": list(x.shape), "generator_seed": 17}
    _write_bytes(manifest_path(out), json.dumps(manifest, indent=2).encode())
    return out


def export(obj: Any, out: str | Path, fmt: str = "torchscript", dtype: torch.dtype = torch.float64) -> Path:
    """Export an in-memory SurrogateModel, CorrectedModel or LearnedOperator to ``out`` (+ ``out``.json)."""
    return _finish(part_of(obj, dtype), Path(out), fmt, dtype, None)


def export_file(
    path: str | Path, out: str | Path | None = None, fmt: str = "torchscript",
    dtype: torch.dtype = torch.float64,
) -> Path:
    """Export a saved surrogate / correction / learned-operator file; ``out`` defaults to beside it."""
    if fmt not in FORMATS:
        raise ExportError(f"unsupported format {fmt!r}; use one of {', '.join(FORMATS)}")
    part, _ = part_of_file(path, dtype)
    return _finish(part, Path(out) if out is not None else default_out(path, fmt), fmt, dtype, str(path))


def load_exported(path: str | Path) -> Exported:
    """Load an exported file and its manifest and check them against each other (:class:`ExportError` if not).

    Checked: the manifest exists and is a hybrida export manifest; it names
    this file and its sha256 matches; the format matches the file; a probe
    input of the manifest's input shape gives the manifest's output shape and dtype.
    """
    path = Path(path)
    mpath = manifest_path(path)
    if not path.is_file() or not mpath.is_file():
        raise ExportError(f"{path}: need the exported file and its manifest {mpath.name}")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as err:
        raise ExportError(f"{mpath}: unreadable manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("manifest") != MANIFEST_FORMAT:
        raise ExportError(f"{mpath}: not a hybrida export manifest")
    if manifest.get("file") != path.name or manifest.get("sha256") != hashlib.sha256(path.read_bytes()).hexdigest():
        raise ExportError(f"{path}: the manifest {mpath.name} was written for another file (name or sha256 differ)")
    fmt = manifest.get("format")
    try:
        if fmt == "torchscript":
            with _quiet():
                runner = torch.jit.load(str(path), map_location="cpu")
        elif fmt == "onnx":
            ort = _onnx_runtime()
            runner = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        else:
            raise ExportError(f"{mpath}: unknown format {fmt!r}")
    except ExportError:
        raise
    except Exception as err:  # noqa: BLE001 - a corrupt file raises many types
        raise ExportError(f"{path.name}: cannot load as {fmt}: {_first_line(err)}") from None
    part = Exported(path, manifest, runner)
    n_out = manifest["outputs"][0]["shape"][1]
    probe = part(torch.zeros(2, manifest["inputs"][0]["shape"][1]))
    if tuple(probe.shape) != (2, n_out) or probe.dtype != part.dtype:
        raise ExportError(
            f"{path}: the model returns {tuple(probe.shape)} {probe.dtype}, the manifest says (batch, {n_out}) "
            f"{manifest['dtype']}"
        )
    return part

