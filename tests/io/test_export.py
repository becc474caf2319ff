"""hybrida export: TorchScript/ONNX round trips of the learned parts, the manifest, and one-line errors."""

from __future__ import annotations

import importlib.util
import json
import warnings

import pytest
import torch
from typer.testing import CliRunner

from hybrida.cli import app
from hybrida.io.export import ExportError, export, export_file, load_exported, manifest_path
from hybrida.learn.correction_persist import load_correction, save_correction
from hybrida.learn.persist import save_surrogate
from hybrida.models.corrected import CorrectedModel
from hybrida.models.lorenz96 import Lorenz96
from hybrida.models.surrogate import SurrogateModel
from hybrida.nn import PolyConv, ResidualCNN
from hybrida.observations.learned import LearnedOperator, LocalChannelNet, save_learned_operator

N = 8
HAS_ORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="ONNX export needs onnx, onnxruntime, onnxscript (pip install hybrida[export])")
runner = CliRunner()


def _x(batch: int = 7, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(2026)
    return (3.0 + 2.0 * torch.randn(batch, N, generator=g, dtype=torch.float64)).to(dtype)


def _surrogate() -> SurrogateModel:
    net = ResidualCNN(channels=4, blocks=1, kernel_size=3, seed=1)
    return SurrogateModel(net, N, 0.05, "rk4", in_mean=2.0, in_std=3.5, out_mean=0.1, out_std=4.0)


def _corrected() -> CorrectedModel:
    return CorrectedModel(Lorenz96(N), PolyConv(degree=2, kernel_size=3, seed=3, scale=0.1), "resolvent", 2.3, 3.6, 0.2).requires_grad_(False)


def _operator() -> LearnedOperator:
    loc = [0.5, 3.0, 6.25]
    net = LocalChannelNet(N, loc, half_window=2, hidden=8, depth=1, seed=4)
    return LearnedOperator(net, N, loc, x_mean=2.0, x_std=3.0, y_mean=0.5, y_std=2.0).requires_grad_(False)


def test_surrogate_torchscript_step_and_forecast(tmp_path):
    model = _surrogate()
    src = save_surrogate(tmp_path / "sur.pt", model, {"epochs": 3})
    out = export_file(src)
    assert out.name == "sur.torchscript.pt" and manifest_path(out).is_file()
    part = load_exported(out)
    m = part.manifest
    assert m["kind"] == "surrogate" and m["dt"] == 0.05 and m["scheme"] == "rk4" and m["dtype"] == "float64"
    assert m["inputs"][0]["shape"] == ["batch", N] and m["training_config"] == {"epochs": 3}
    assert m["verified"]["max_abs_diff"] <= 1e-12
    x = _x()
    assert float((part(x) - model.step(x)).abs().max()) <= 1e-12
    xe, xp = x[:2], x[:2]
    for _ in range(5):  # a short forecast: the exported step iterated equals the Python forecast
        xe, xp = part(xe), model.step(xp)
    assert float((xe - xp).abs().max()) <= 1e-12


def test_surrogate_torchscript_float32(tmp_path):
    model = _surrogate()
    part = load_exported(export(model, tmp_path / "s32.pt", "torchscript", torch.float32))
    x = _x(dtype=torch.float32)
    assert part(x).dtype == torch.float32
    assert float((part(x) - model.step(x)).abs().max()) <= 1e-6


def test_correction_torchscript_host_step(tmp_path):
    model = _corrected()
    src = save_correction(tmp_path / "corr.pt", model, {"lr": 1e-3})
    assert float((load_correction(src, Lorenz96(N)).step(_x()) - model.step(_x())).abs().max()) == 0.0
    part = load_exported(export_file(src, tmp_path / "c.pt"))
    assert part.manifest["kind"] == "correction" and part.manifest["correction_kind"] == "resolvent"
    assert part.manifest["normalisation"] == {"in_mean": 2.3, "in_std": 3.6, "out_std": 0.2}
    x = _x()
    host = model.physics.step(x) + part(x)  # what a Fortran/C++ host does every step
    assert float((host - model.step(x)).abs().max()) <= 1e-12
    with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit
        warnings.simplefilter("ignore", DeprecationWarning)
        raw = torch.jit.load(str(tmp_path / "c.pt"))  # as a host sees it: wrong shapes/dtypes refused inside
    for bad in (torch.zeros(2, N + 1, dtype=torch.float64), torch.zeros(2, N), torch.zeros(N, dtype=torch.float64)):
        with pytest.raises(torch.jit.Error, match=f"input must be a \\(batch, {N}\\) float64"):
            raw(bad)


def test_obs_operator_torchscript(tmp_path):
    op = _operator()
    part = load_exported(export_file(save_learned_operator(tmp_path / "h.pt", op), tmp_path / "h.ts"))
    assert part.manifest["outputs"][0]["shape"] == ["batch", 3] and part.manifest["locations"] == [0.5, 3.0, 6.25]
    x = _x()
    assert float((part(x) - op(x)).abs().max()) <= 1e-12


@needs_ort
def test_onnx_round_trips(tmp_path):
    model = _corrected()
    part = load_exported(export(model, tmp_path / "c.onnx", "onnx"))
    x = _x()
    assert float((model.physics.step(x) + part(x) - model.step(x)).abs().max()) <= 1e-12
    op = _operator()
    part = load_exported(export(op, tmp_path / "h.onnx", "onnx"))
    assert float((part(x) - op(x)).abs().max()) <= 1e-12
    sur = _surrogate()
    part = load_exported(export(sur, tmp_path / "s.onnx", "onnx", torch.float32))
    x32 = _x(dtype=torch.float32)
    assert float((part(x32) - sur.step(x32)).abs().max()) <= 1e-6


@needs_ort
def test_onnx_float64_conv_is_refused_with_the_reason(tmp_path):
    with pytest.raises(ExportError, match="Conv.*float32"):
        export(_surrogate(), tmp_path / "s.onnx", "onnx")
    assert not (tmp_path / "s.onnx").exists() and not manifest_path(tmp_path / "s.onnx").exists()


def test_manifest_mismatch_is_refused(tmp_path):
    out = export(_corrected(), tmp_path / "c.pt")
    mpath = manifest_path(out)
    good = json.loads(mpath.read_text())
    bad = dict(good, outputs=[{"name": "y", "shape": ["batch", N + 1], "dims": ["batch", "state"]}])
    mpath.write_text(json.dumps(bad))
    with pytest.raises(ExportError, match="manifest says"):
        load_exported(out)
    mpath.write_text(json.dumps(dict(good, sha256="0" * 64)))
    with pytest.raises(ExportError, match="another file"):
        load_exported(out)
    mpath.unlink()
    with pytest.raises(ExportError, match="manifest"):
        load_exported(out)


def test_cli_export_writes_file_and_manifest(tmp_path):
    src = save_surrogate(tmp_path / "sur.pt", _surrogate())
    res = runner.invoke(app, ["export", str(src), "--out", str(tmp_path / "e.pt")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e.pt").is_file() and (tmp_path / "e.pt.json").is_file()
    assert "max |exported - python|" in res.stdout
    assert load_exported(tmp_path / "e.pt").manifest["source"] == str(src)


def _one_line_error(args: list[str]) -> str:
    res = runner.invoke(app, ["export", *args])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    return lines[0]


def test_cli_bad_inputs_are_one_line_errors(tmp_path):
    src = save_surrogate(tmp_path / "sur.pt", _surrogate())
    assert "unsupported format" in _one_line_error([str(src), "--format", "tflite"])
    assert "unsupported dtype" in _one_line_error([str(src), "--dtype", "float16"])
    assert "no such file" in _one_line_error([str(tmp_path / "missing.pt")])
    torch.save({"format": "something.else"}, tmp_path / "other.pt")
    assert "unknown file kind" in _one_line_error([str(tmp_path / "other.pt")])
    (tmp_path / "junk.pt").write_text("not a model")
    assert "not a hybrida model file" in _one_line_error([str(tmp_path / "junk.pt")])
    assert "overwrite the source" in _one_line_error([str(src), "--out", str(src)])
    broken = _surrogate()
    with torch.no_grad():
        next(broken.net.parameters()).fill_(float("nan"))
    bad = save_surrogate(tmp_path / "nan.pt", broken)
    assert "non-finite weights" in _one_line_error([str(bad)])
