"""The `hybrida` command: run, presets, sweep, and clear one-line errors."""

from __future__ import annotations

import json
import sys
import types

import pytest
import yaml
from typer.testing import CliRunner

from hybrida.assimilation.base import AssimilationMethod
from hybrida.cli import app
from hybrida.experiment.presets import PRESETS

runner = CliRunner()


class Exploding(AssimilationMethod):
    """Keeps the prior for ``at - 1`` cycles, then returns NaN (a stand-in for a blown-up filter)."""

    kind = "ensemble"

    def __init__(self, N: int = 4, at: int = 3):
        self.N, self.at, self.count = N, at, 0

    def analyse(self, prior, obs, t=0.0, generator=None):
        self.count += 1
        return prior * float("nan") if self.count >= self.at else prior.clone()


@pytest.fixture
def plugin(monkeypatch):
    """Expose Exploding as the plugin 'hybrida_cli_test_plugins:Exploding'."""
    module = types.ModuleType("hybrida_cli_test_plugins")
    module.Exploding = Exploding
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return f"{module.__name__}:Exploding"


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_run_tiny_preset_writes_everything(tmp_path):
    out = tmp_path / "l63"
    res = _invoke("run", "lorenz63/sakov2012", "--cycles", "30", "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    for name in (
        "results.nc",
        "summary.json",
        "config.yaml",
        "rmse.png",
        "hovmoller.png",
        "rank_histogram.png",
    ):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert {"rmse_a", "rmse_f", "spread_a", "wall_s", "diverged"} <= set(summary)
    assert summary["n_cycles"] == 30 and summary["method"] == "etkf" and not summary["diverged"]
    assert summary["rmse_a"] < summary["clim_std"]
    # the preset burn-in (t=16) is longer than 30 cycles x 0.25: it was shortened and said so
    assert summary["burn_in"] == pytest.approx(1.5) and "burn_in" in res.output
    assert "rmse_a" in res.output and "wrote" in res.output
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["cycles"] == 30 and cfg["name"] == "lorenz63/sakov2012"


def test_run_default_preset_with_overrides_and_seed(tmp_path):
    res = _invoke(
        "run",
        "lorenz96/sakov2008",
        "--cycles",
        "20",
        "--seed",
        "11",
        "--set",
        "method.params.N=12",
        "--out",
        str(tmp_path),
        "-q",
        "--no-plots",
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (
        summary["preset"] == "lorenz96/sakov2008" and summary["seed"] == 11 and summary["N"] == 12
    )
    assert not (tmp_path / "rmse.png").exists()


def test_run_resume(tmp_path):
    args = (
        "run",
        "lorenz96/sakov2008",
        "--cycles",
        "20",
        "--set",
        "checkpoint_every=10",
        "--set",
        "method.params.N=10",
        "--out",
        str(tmp_path),
        "-q",
        "--no-plots",
    )
    assert _invoke(*args).exit_code == 0
    first = json.loads((tmp_path / "summary.json").read_text())
    res = _invoke(*args, "--resume")
    assert res.exit_code == 0 and "resumed after cycle 20" in res.output
    assert json.loads((tmp_path / "summary.json").read_text())["rmse_a"] == first["rmse_a"]


def test_presets_lists_all():
    res = _invoke("presets")
    assert res.exit_code == 0
    for name in PRESETS:
        assert name in res.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (("run", "lorenz96/nope"), "unknown preset 'lorenz96/nope'"),
        (("run", "lorenz96/sakov2008", "--set", "methodN"), "expected KEY=VALUE"),
        (("run", "lorenz96/sakov2008", "--set", "method.params.N=1"), "method.params.N"),
        (("run", "lorenz96/sakov2008", "--set", "method.name=foo"), "unknown method 'foo'"),
        (("run", "lorenz96/sakov2008", "--set", "colour=red"), "unknown key 'colour'"),
    ],
)
def test_bad_input_is_one_clear_line(args, needle):
    res = _invoke(*args)
    assert res.exit_code == 2
    assert needle in res.output and "error:" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {name: lorenz96\n")
    res = _invoke("run", str(path))
    assert res.exit_code == 2 and "invalid YAML" in res.output and "Traceback" not in res.output


def test_divergence_is_reported_with_exit_zero(tmp_path, plugin):
    path = tmp_path / "explode.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "explode",
                "model": {"name": "lorenz96", "params": {"n": 12}},
                "method": {"name": plugin, "params": {"N": 6, "at": 4}},
                "cycles": 10,
            }
        )
    )
    res = _invoke("run", str(path), "--out", str(tmp_path / "out"), "-q")
    assert res.exit_code == 0, res.output
    assert "diverged at cycle 4" in res.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (
        summary["diverged"] is True and summary["diverged_cycle"] == 4 and summary["n_cycles"] == 3
    )


def test_sweep_command_serial(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "cli",
                "base": "lorenz96/sakov2008",
                "set": {"model.params.n": 12, "cycles": 10, "burn_in": 0.1},
                "methods": ["etkf"],
                "N": [5, 6],
                "seeds": [1, 2],
            }
        )
    )
    res = _invoke("sweep", str(spec), "--workers", "0", "--out", str(tmp_path / "sw"), "-q")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "sw" / "table.csv").exists() and (tmp_path / "sw" / "runs.csv").exists()
    md = (tmp_path / "sw" / "table.md").read_text()
    assert md.count("| etkf") == 2 and "n_seeds" in md
    assert "rmse_a" in res.output


def test_sweep_bad_spec(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text("methods: [etkf]\nNs: [3]\n")
    res = _invoke("sweep", str(spec))
    assert res.exit_code == 2 and "unknown key 'Ns'" in res.output and "Traceback" not in res.output


# --- hybrida learn surrogate / hybrida run without arguments (the DA-ML demo) ---------------


def _tiny_surrogate_yaml(tmp_path):
    """A DA-ML experiment that runs in a few seconds (L96 n=12, a tiny CNN, 200 + 100 cycles)."""
    data = {
        "name": "tinycli",
        "source": "reanalysis",
        "experiment": {
            "model": {"name": "lorenz96", "params": {"n": 12}},
            "observations": {"name": "random_subset", "params": {"p": 0.5, "std": 1.0}},
            "method": {"name": "etkf", "params": {"N": 8, "adaptive": True}},
            "burn_in": 0.5,
        },
        "network": {"name": "BrajardCNN", "params": {"filters": 3, "hidden": 4}},
        "training": {"train_cycles": 200, "epochs": 2, "batch_size": 64},
        "evaluation": {
            "test_cycles": 100,
            "burn_in_cycles": 10,
            "lead": 1.0,
            "n_starts": 5,
            "lyapunov_steps": 30,
            "lyapunov_transient": 5,
            "free_run_cycles": 50,
        },
    }
    path = tmp_path / "tiny_surrogate.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_learn_surrogate_runs_a_yaml_config(tmp_path):
    path = _tiny_surrogate_yaml(tmp_path)
    out = tmp_path / "out"
    res = _invoke("learn", "surrogate", str(path), "--out", str(out), "-q", "--no-plots")
    assert res.exit_code == 0, res.output
    for name in ("surrogate.pt", "summary.json", "table.md"):
        assert (out / name).exists(), name
    assert not (out / "valid_time.png").exists()
    assert "DA rmse_a, test period" in res.output and "wrote" in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "reanalysis" and summary["name"] == "tinycli"


@pytest.mark.parametrize(
    "extra, needle",
    [
        (("--set", "network.name=Nope"), "unknown network 'Nope'"),
        (("--set", "training.epochs=0"), "training.epochs"),
        (("--set", "loop.colour=red"), "unknown key 'colour'"),
    ],
)
def test_learn_surrogate_bad_input_exits_2_with_one_line(tmp_path, extra, needle):
    path = _tiny_surrogate_yaml(tmp_path)
    res = _invoke("learn", "surrogate", str(path), *extra)
    assert res.exit_code == 2, res.output
    assert needle in res.output and "error:" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_learn_surrogate_bad_yaml_and_unknown_preset(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("network: {name: BrajardCNN\n")
    res = _invoke("learn", "surrogate", str(bad))
    assert res.exit_code == 2 and "invalid YAML" in res.output
    res = _invoke("learn", "surrogate", "brajard2021")
    assert res.exit_code == 2 and "unknown surrogate preset" in res.output


def test_learn_presets_lists_the_surrogate_experiments():
    res = _invoke("learn", "presets")
    assert res.exit_code == 0 and "brajard2020" in res.output and "demo" in res.output


def test_run_without_source_is_the_da_ml_demo(tmp_path, monkeypatch):
    import hybrida.cli

    path = _tiny_surrogate_yaml(tmp_path)
    monkeypatch.setattr(hybrida.cli, "DEMO_SOURCE", str(path))
    monkeypatch.chdir(tmp_path)
    res = _invoke("run", "--seed", "5", "-q")
    assert res.exit_code == 0, res.output
    out = tmp_path / "runs" / "demo-tinycli-5"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 5 and summary["training_seed"] == 5
    assert (out / "da_rmse.png").exists() and (out / "surrogate.pt").exists()
    assert "surrogate" in res.output and "true model" in res.output
    # preset-run options do not apply to the demo: one clear line, exit 2
    res = _invoke("run", "--cycles", "10")
    assert res.exit_code == 2 and "--cycles" in res.output and "Traceback" not in res.output
