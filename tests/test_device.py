"""The device option: config validation, moving run state, CPU bit-identity, and (with a GPU) CUDA = CPU."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from hybrida.assimilation.base import GaussianState
from hybrida.cli import app
from hybrida.device import (
    available_devices,
    check_available,
    move_attributes,
    parse_device,
    to_device,
)
from hybrida.experiment.config import ConfigError, ExperimentConfig, load_config
from hybrida.experiment.runner import run_experiment
from hybrida.observations.errors import CorrelatedError, DiagonalError
from hybrida.observations.networks import IdentityObs, SubsetObs

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

SMALL = ["cycles=8", "burn_in=0"]


# --- names and availability -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["cpu", "CPU", " cuda ", "cuda:0", "cuda:12", "mps"])
def test_known_names_parse(name):
    assert parse_device(name) == name.strip().lower()


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "cpu:0", "tpu", ""])
def test_unknown_names_are_a_pydantic_error_naming_the_field(name):
    with pytest.raises(ValueError, match="device: unknown device"):
        parse_device(name)
    with pytest.raises(ConfigError, match=r"device: unknown device .*choose one of: cpu, cuda, cuda:K"):
        load_config("lorenz63/sakov2012", [f"device={name!r}" if name else "device=''"])


def test_mps_needs_float32():
    with pytest.raises(ConfigError, match="device: 'mps' has no float64 tensors; set dtype: float32"):
        load_config("lorenz63/sakov2012", ["device=mps"])


def test_default_is_cpu_and_always_available():
    assert ExperimentConfig().device == "cpu"
    assert available_devices()[0] == "cpu" and check_available("cpu") == "cpu"


def test_unavailable_cuda_is_one_line_listing_what_is_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        load_config("lorenz63/sakov2012", ["device=cuda"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("device: 'cuda' is not available")
    assert "torch.cuda.is_available() is False" in msg and msg.endswith("available devices: " + ", ".join(available_devices()))


def test_cuda_index_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_available("cuda:1") == "cuda:1" and check_available("cuda") == "cuda"
    with pytest.raises(ValueError, match=r"'cuda:2' is not available \(this machine has 2 CUDA device\(s\)\); "
                       r"available devices: cpu, cuda, cuda:0, cuda:1"):
        check_available("cuda:2")


def test_a_config_built_in_python_is_checked_before_the_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = ExperimentConfig(device="cuda", cycles=3)  # skips validate_config's check
    with pytest.raises(ConfigError, match="device: 'cuda' is not available"):
        run_experiment(cfg, progress=False)


def test_the_surrogate_pipeline_says_it_runs_on_the_cpu_only(monkeypatch):
    from hybrida.experiment.surrogate_config import load_surrogate_config

    assert load_surrogate_config(None, ["experiment.device=cpu"]).twin_config().device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"experiment.device: the surrogate pipeline runs on the CPU only, got 'cuda'"):
        load_surrogate_config(None, ["experiment.device=cuda"])


def test_a_sweep_carries_the_device_to_every_run(monkeypatch):
    from hybrida.experiment.sweep import expand, load_sweep

    spec = {"name": "d", "base": "lorenz63/sakov2012", "set": {"cycles": 4, "burn_in": 0, "device": "cpu"},
            "seeds": [1, 2]}
    assert [r.config.device for r in expand(load_sweep(spec))] == ["cpu", "cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device: 'cuda' is not available"):
        expand(load_sweep({**spec, "set": {**spec["set"], "device": "cuda"}}))


# --- the CLI: one line, exit 2, nothing written -----------------------------------------------


@pytest.mark.parametrize("device", ["cuda:99", *([] if CUDA else ["cuda"]), "gpu"])
def test_cli_unavailable_or_unknown_device(device, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app, ["run", "lorenz96/sakov2008", "--set", f"device={device}", "--cycles", "3", "-q", "--no-plots",
              "--out", str(out)], catch_exceptions=False,
    )
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: device: "), res.stderr
    assert ("unknown device" if device == "gpu" else "is not available") in lines[0]
    assert "available devices: cpu" in lines[0] or "choose one of" in lines[0]
    assert not out.exists() and res.stdout == ""


# --- moving tensors (the meta device stands in for a second device on a CPU-only machine) ------


def test_to_device_moves_nested_tensors_and_leaves_others():
    g = GaussianState(torch.zeros(3), torch.eye(3))
    moved = to_device({"s": g, "xs": [torch.ones(2), 4.0], "name": "x"}, "meta")
    assert moved["s"].mean.is_meta and moved["s"].cov.is_meta and moved["xs"][0].is_meta
    assert moved["xs"][1] == 4.0 and moved["name"] == "x"
    assert not g.mean.is_meta  # a copy, not in place
    same = {"a": torch.ones(2)}
    assert to_device(same, "cpu") is same and to_device(g, "cpu") is g  # already there: untouched


def test_move_attributes_in_place():
    class Method:
        def __init__(self):
            self.B = torch.eye(4)
            self.infl = 1.02
            self.net = torch.nn.Linear(2, 2)

    m = Method()
    B = m.B
    assert move_attributes(m, "cpu").B is B  # a no-op on the CPU
    move_attributes(m, "meta")
    assert m.B.is_meta and m.net.weight.is_meta and m.infl == 1.02


@pytest.mark.parametrize("err", [DiagonalError(torch.tensor([1.0, 4.0])), CorrelatedError(torch.tensor([[2.0, 0.5], [0.5, 1.0]]))])
def test_errors_draw_on_the_generators_device(err):
    """A CPU generator serves an error model on another device: the same numbers, then moved."""
    assert err.to_device("cpu") is err
    on_meta = err.to_device("meta")
    assert on_meta.variance.is_meta and not err.variance.is_meta
    z = on_meta.sample((3,), torch.Generator().manual_seed(1))  # randn(device=meta, generator=cpu) would raise
    assert z.is_meta and z.shape == (3, 2)


def test_observe_puts_the_network_on_the_truths_device():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, dtype=torch.float64)
    for system in (IdentityObs(6), SubsetObs(6, [1, 4], std=0.5)):
        obs = system.observe(x.to("meta"), 1, gen)
        assert obs.y.is_meta and obs.error.variance.is_meta
        assert obs.locations.is_meta and obs.indices.is_meta
        cpu = system.observe(x, 1, torch.Generator().manual_seed(0))
        assert cpu.to_device("cpu") is cpu and not cpu.y.is_meta
    flagged = IdentityObs(6).observe(x, 1, gen)
    flagged.meta = {**flagged.meta, "gross": torch.zeros(6, dtype=torch.bool)}
    assert flagged.to_device("meta").meta["gross"].is_meta and not flagged.meta["gross"].is_meta


# --- runs ------------------------------------------------------------------------------------


def _means(result):
    return torch.stack([r.posterior_mean for r in result.records])


@pytest.mark.parametrize("method", ["etkf", "letkf"])
def test_device_cpu_is_bit_identical_to_the_default(method):
    base = load_config("lorenz96/sakov2008", [*SMALL, f"method.name={method}"])
    explicit = load_config("lorenz96/sakov2008", [*SMALL, f"method.name={method}", "device=cpu"])
    assert "device" not in base.model_fields_set and explicit.device == "cpu"
    a, b = run_experiment(base, progress=False), run_experiment(explicit, progress=False)
    assert torch.equal(_means(a), _means(b)) and torch.equal(a.final_state, b.final_state)
    assert [r.rmse_a for r in a.records] == [r.rmse_a for r in b.records]
    assert a.final_state.device.type == "cpu"


@needs_cuda
@pytest.mark.parametrize(
    ("preset", "extra"),
    [
        ("lorenz96/sakov2008", ["method.name=etkf"]),
        ("lorenz96/sakov2008", ["method.name=letkf"]),
        ("lorenz96/sakov2008", ["method.name=enkf"]),  # perturbed observations: draws in the analysis
        ("lorenz96/sakov2008", ["method.name=3dvar", "climatology.steps=400"]),  # a B on the device
    ],
)
def test_cuda_matches_cpu(preset, extra, tmp_path):
    cpu = run_experiment(load_config(preset, [*SMALL, *extra]), progress=False)
    gpu = run_experiment(load_config(preset, [*SMALL, *extra, "device=cuda"]), tmp_path / "gpu", progress=False)
    final = gpu.final_state
    final = final if isinstance(final, torch.Tensor) else final.mean
    assert final.device.type == "cuda"
    torch.testing.assert_close(_means(gpu).cpu(), _means(cpu), rtol=0, atol=1e-10)
    assert abs(gpu.summary["rmse_a"] - cpu.summary["rmse_a"]) < 1e-10
    assert (tmp_path / "gpu" / "results.nc").exists()  # the writer moved the records to the CPU


@needs_cuda
def test_cuda_vectorised_sweep_matches_cpu():
    from hybrida.experiment.vectorized import run_vectorized

    def runs(device):
        return [load_config("lorenz63/sakov2012", [*SMALL, f"seed={s}", f"device={device}"]) for s in (1, 2)]

    for c, g in zip(run_vectorized(runs("cpu")), run_vectorized(runs("cuda"))):
        assert abs(c["rmse_a"] - g["rmse_a"]) < 1e-10 and abs(c["spread_a"] - g["spread_a"]) < 1e-10


@needs_cuda
def test_cuda_assimilates_an_observation_file_as_the_cpu(tmp_path):
    """Observations read from a file (on the CPU) join the run's device."""
    from hybrida.experiment.assimilate import assimilate_file

    cfg = load_config("lorenz96/sakov2008", SMALL)
    run_experiment(cfg, tmp_path / "twin", progress=False, write_observations_file=True)
    path = tmp_path / "twin" / "observations.nc"
    cpu = assimilate_file(cfg, path, tmp_path / "cpu", progress=False)
    gpu = assimilate_file(cfg.model_copy(update={"device": "cuda"}), path, tmp_path / "gpu", progress=False)
    assert gpu.final_state.device.type == "cuda"
    torch.testing.assert_close(_means(gpu).cpu(), _means(cpu), rtol=0, atol=1e-10)


@needs_cuda
def test_cuda_resume_from_a_checkpoint_continues_on_the_gpu(tmp_path):
    """A checkpoint is read onto the CPU; the resumed state (and adaptive inflation) go back to the GPU."""
    sets = ["cycles=12", "burn_in=0", "device=cuda", "method.params.adaptive=true"]
    full = run_experiment(load_config("lorenz96/sakov2008", sets), tmp_path / "full", progress=False)
    cfg = load_config("lorenz96/sakov2008", [*sets, "checkpoint_every=5"])

    class Crash(Exception):
        pass

    def crash(record, state):
        if record.cycle == 7:
            raise Crash

    with pytest.raises(Crash):
        run_experiment(cfg, tmp_path / "run", progress=False, callback=crash)
    resumed = run_experiment(cfg, tmp_path / "run", resume=True, progress=False)
    assert resumed.resumed_from == 5 and resumed.final_state.device.type == "cuda"
    assert all(r.posterior_mean.device.type == "cuda" for r in resumed.records)  # the checkpoint's too
    torch.testing.assert_close(_means(resumed).cpu(), _means(full).cpu(), rtol=0, atol=1e-12)
    assert (tmp_path / "run" / "results.nc").exists()


def test_to_device_leaves_numpy_arrays_alone():
    """numpy 2 arrays have an array-API ``to_device`` of their own (a device string): not ours to call."""
    import numpy as np

    from hybrida.device import to_device

    times = np.arange(3.0)
    moved = to_device({"times": times, "y": torch.ones(2)}, torch.device("cpu"))
    assert moved["times"] is times
