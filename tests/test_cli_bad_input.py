"""Bad command-line input: one line on stderr saying what to fix, exit code 2, existing output untouched."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from hybrida.cli import app
from hybrida.experiment.config import ConfigError, load_config, load_yaml
from hybrida.experiment.memory import check_run_memory
from hybrida.experiment.sweep import expand, load_sweep

runner = CliRunner()

L63 = ("lorenz63/sakov2012", "--cycles", "5", "-q", "--no-plots")


def _one_line_error(*args: str, needle: str) -> str:
    """Invoke ``hybrida args``; it must fail with exit 2 and exactly one stderr line holding ``needle``."""
    res = runner.invoke(app, list(args), catch_exceptions=False)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in res.output and "╭" not in res.output and res.stdout == ""
    return lines[0]


def _sweep_yaml(tmp_path: Path) -> Path:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        yaml.safe_dump({"name": "t", "base": "lorenz63/sakov2012", "set": {"cycles": 5, "burn_in": 0}})
    )
    return spec


def _command(kind: str, tmp_path: Path) -> tuple[str, ...]:
    """``hybrida run`` / ``sweep`` / ``learn surrogate`` up to (not including) ``--out``."""
    if kind == "run":
        return ("run", *L63)
    if kind == "sweep":
        return ("sweep", str(_sweep_yaml(tmp_path)), "--workers", "0", "-q")
    return ("learn", "surrogate", "demo", "-q", "--no-plots")


COMMANDS = ["run", "sweep", "learn"]


# --- --out ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", COMMANDS)
def test_out_under_a_file(kind, tmp_path):
    blocker = tmp_path / "somefile.txt"
    blocker.write_text("keep me")
    _one_line_error(
        *_command(kind, tmp_path), "--out", str(blocker / "sub"), needle="is a file, so no folder"
    )
    assert blocker.read_text() == "keep me"


@pytest.mark.parametrize("kind", COMMANDS)
def test_out_is_an_existing_file(kind, tmp_path):
    existing = tmp_path / "results.nc"
    existing.write_text("old results")
    _one_line_error(*_command(kind, tmp_path), "--out", str(existing), needle="is an existing file")
    assert existing.read_text() == "old results"


@pytest.fixture
def unwritable(tmp_path):
    """A folder path this process cannot create (root ignores permissions: use /proc there)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        yield locked / "out"
        locked.chmod(0o700)
    elif Path("/proc/self").is_dir():
        yield Path("/proc/hybrida-no-such-folder/out")
    else:  # pragma: no cover
        pytest.skip("no unwritable place to test with")


@pytest.mark.parametrize("kind", COMMANDS)
def test_out_in_an_unwritable_place(kind, tmp_path, unwritable):
    _one_line_error(*_command(kind, tmp_path), "--out", str(unwritable), needle="cannot write in")
    assert not unwritable.exists()


# --- --resume --------------------------------------------------------------------------------


def _bad_checkpoint(kind: str, path: Path) -> None:
    if kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(os.urandom(2048))
    elif kind == "no keys":
        torch.save({"format": 1}, path)
    elif kind == "empty dict":
        torch.save({}, path)
    else:  # not a dict at all
        torch.save(torch.zeros(3), path)


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("truncated", "not a readable checkpoint"),
        ("random", "not a readable checkpoint"),
        ("no keys", "checkpoint lacks cycle, state, records"),
        ("empty dict", "unsupported checkpoint format None"),
        ("tensor", "not a hybrida checkpoint"),
    ],
)
def test_resume_from_a_broken_checkpoint(kind, needle, tmp_path):
    out = tmp_path / "run"
    args = ("run", "lorenz63/sakov2012", "--cycles", "10", "-q", "--no-plots", "--out", str(out))
    args += ("--set", "checkpoint_every=5", "--set", "burn_in=0")
    res = runner.invoke(app, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    ckpt = out / "checkpoint.pt"
    _bad_checkpoint(kind, ckpt)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    line = _one_line_error(*args, "--resume", needle=needle)
    assert "delete it" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# --- sweep -----------------------------------------------------------------------------------


def test_sweep_unreachable_scheduler_fails_fast(tmp_path):
    out = tmp_path / "sw"
    t0 = time.perf_counter()
    _one_line_error(
        "sweep", str(_sweep_yaml(tmp_path)), "--scheduler", "tcp://127.0.0.1:1", "--out", str(out),
        needle="--scheduler tcp://127.0.0.1:1: cannot reach a Dask scheduler",
    )
    assert time.perf_counter() - t0 < 15
    assert not out.exists()


@pytest.mark.parametrize("workers", ["-1", "-5"])
def test_sweep_negative_workers(workers, tmp_path):
    out = tmp_path / "sw"
    _one_line_error(
        "sweep", str(_sweep_yaml(tmp_path)), "--workers", workers, "--out", str(out),
        needle=f"--workers: must be an integer >= 1 (or 0 to run serially in-process), got {workers}",
    )
    assert not out.exists()


# --- --cycles --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", [("--cycles", "1e4"), ("--set", "cycles=1e4")])
def test_a_run_too_big_for_memory_is_refused(how, tmp_path, monkeypatch):
    # 10 MB "available": 10^4 cycles (about 85 MB) do not fit, and if the check were gone
    # the run would still end quickly (and fail this test) instead of filling the machine
    monkeypatch.setattr("hybrida.experiment.memory.available_memory", lambda: 10_000_000)
    out = tmp_path / "big"
    line = _one_line_error(
        "run", "lorenz63/sakov2012", *how, "-q", "--out", str(out), needle="cycles: 10000 cycles need"
    )
    assert "of memory" in line and "use at most" in line and "10 MB available" in line
    assert not out.exists()


def test_ten_billion_cycles_exceed_any_machine():
    config = load_config("lorenz63/sakov2012", ["cycles=1e10", "burn_in=0"])
    with pytest.raises(ConfigError, match=r"10000000000 cycles need about [0-9.]+ TB of memory"):
        check_run_memory(config, n=3, n_truth=3, obs_bytes=100)


def test_a_dense_climatology_too_large_for_the_machine_is_refused_before_its_run(monkeypatch):
    """4D-Var with the dense climatological B on a 128x128x2 QG state would need three 32768^2
    matrices (26 GB): one-line error, no run (B homogeneous keeps anomalies and needs none)."""
    from hybrida.experiment import builder
    from hybrida.experiment.memory import check_climatology_memory

    big = load_config("qg/4dvar64", ["model.params.nx=128", "method.params.grid=[2,128,128]",
                                     "method.params.B=climatology"])
    with pytest.raises(ConfigError, match=r"'4dvar' needs the dense \(32768, 32768\) climatological covariance, "
                                          r"about 25.8 GB"):
        check_climatology_memory(big, n=32768, available=24 * 10**9)
    check_climatology_memory(big, n=8192, available=24 * 10**9)  # 64x64x2: 1.6 GB, fine

    def no_run(*args, **kwargs):
        raise AssertionError("the climatology run started")

    monkeypatch.setattr(builder, "climatology", no_run)
    monkeypatch.setattr("hybrida.experiment.memory.available_memory", lambda: 24 * 10**9)
    model = builder.build_model(big)
    with pytest.raises(ConfigError, match="climatological covariance"):
        builder.build_method(big, model, torch.zeros(model.n, dtype=torch.float64))


def test_negative_cycles_blame_only_cycles():
    line = _one_line_error("run", "lorenz63/sakov2012", "--cycles", "-5", needle="cycles:")
    assert "burn_in" not in line


@pytest.mark.parametrize("value", ["abc", "1.5", "true"])
def test_cycles_not_a_number_is_one_line(value):
    _one_line_error(
        "run", "lorenz63/sakov2012", "--cycles", value, needle=f"'--cycles': '{value}' is not a whole"
    )


def test_cycles_may_be_written_with_an_exponent(tmp_path):
    out = tmp_path / "e"
    res = runner.invoke(
        app, ["run", "lorenz63/sakov2012", "--cycles", "5e0", "-q", "--no-plots", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((out / "config.yaml").read_text())["cycles"] == 5


def test_usage_errors_are_one_line():
    _one_line_error("run", "--bogus", needle="No such option: --bogus")
    _one_line_error("learn", "surrogate", needle="Missing argument")


# --- numbers written with an exponent (YAML 1.1 reads 1e-3 as a string) ----------------------


def test_exponent_numbers_in_set_and_yaml(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("preset: lorenz63/sakov2012\nobservations: {params: {std: 1.0e6}}\n")
    out = tmp_path / "run"
    res = runner.invoke(
        app, ["run", str(cfg), *L63[1:], "--set", "initial.std=1e-3", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["observations"]["params"]["std"] == 1e6
    assert written["initial"]["std"] == 1e-3


@pytest.mark.parametrize(
    "text, value",
    [("1e-3", 0.001), ("1.0e6", 1e6), ("-2E+4", -2e4), (".5e1", 5.0), ("10", 10), ("1e", "1e")],
)
def test_config_yaml_reads_exponent_numbers(text, value):
    parsed = load_yaml(text)
    assert parsed == value and type(parsed) is type(value)
    assert load_yaml(f"'{text}'") == text  # quoted stays a string


def test_sweep_yaml_reads_exponent_numbers(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text("base: lorenz63/sakov2012\nset: {observations.params.std: 1e-3, cycles: 5, burn_in: 0}\n")
    (run,) = expand(load_sweep(spec))
    assert run.config.observations.params["std"] == 1e-3
