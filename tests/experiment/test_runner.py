"""Runner: reproducibility, checkpoint/resume bit-identity, divergence reporting, summary."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hybrida.experiment.config import validate_config
from hybrida.experiment.runner import run_experiment
from hybrida.io.results import read_dataset


class Crash(Exception):
    pass


def _series(result, name="rmse_a"):
    return [getattr(r, name) for r in result.records]


def test_same_seed_identical_different_seed_differs(tiny_config):
    init = {"std": 1.0, "truth_std": 0.1}
    cfg = validate_config(tiny_config(initial=init))
    a = run_experiment(cfg, progress=False)
    b = run_experiment(cfg, progress=False)
    assert _series(a) == _series(b) and _series(a, "spread_a") == _series(b, "spread_a")
    assert torch.equal(a.final_state, b.final_state)
    c = run_experiment(validate_config(tiny_config(seed=8, initial=init)), progress=False)
    assert _series(a) != _series(c)
    assert not torch.equal(a.records[0].truth, c.records[0].truth)


def test_filter_is_scored_after_burn_in(tiny_config, summary_keys):
    cfg = validate_config(tiny_config(cycles=40, burn_in=0.5))
    res = run_experiment(cfg, progress=False)
    s = res.summary
    assert summary_keys <= set(s)
    assert s["n_cycles"] == 40 and s["n_scored"] == 30  # t = 0.55 .. 2.0
    scored = [r.rmse_a for r in res.records if r.time > 0.5]
    assert math.isclose(s["rmse_a"], sum(scored) / len(scored), rel_tol=1e-12)
    assert s["spread_skill"] == pytest.approx(s["spread_a"] / s["rmse_a"])
    # the stand-in EnKF with obs std 1 does far better than climatology
    assert s["rmse_a"] < 0.8 < s["clim_std"] and not s["diverged"]


def test_resume_is_bit_identical(tiny_config, tmp_path):
    full = run_experiment(
        validate_config(tiny_config(cycles=30)), tmp_path / "full", progress=False
    )
    cfg = validate_config(tiny_config(cycles=30, checkpoint_every=10))

    def crash_at_17(record, state):
        if record.cycle == 17:
            raise Crash

    with pytest.raises(Crash):
        run_experiment(cfg, tmp_path / "run", progress=False, callback=crash_at_17)
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    assert not (tmp_path / "run" / "results.nc").exists()
    resumed = run_experiment(cfg, tmp_path / "run", resume=True, progress=False)
    assert resumed.resumed_from == 10
    assert len(resumed.records) == 30
    assert _series(resumed) == _series(full)
    assert _series(resumed, "rmse_f") == _series(full, "rmse_f")
    assert _series(resumed, "crps_a") == _series(full, "crps_a")
    assert [r.diagnostics["history"] for r in resumed.records] == [
        r.diagnostics["history"] for r in full.records
    ]
    assert torch.equal(resumed.final_state, full.final_state)
    ds = read_dataset(tmp_path / "run" / "results.nc")
    assert ds.sizes["time"] == 30


def test_resume_without_method_state_would_differ(tiny_config, tmp_path):
    """Guard for the test above: the stand-in's history really changes the numbers."""
    cfg = validate_config(tiny_config(cycles=20, checkpoint_every=10))
    full = run_experiment(cfg, tmp_path / "a", progress=False)
    ckpt = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert ckpt["cycle"] == 20 and ckpt["method_state"]["history"] > 0
    cfg10 = validate_config(tiny_config(cycles=20, checkpoint_every=10))

    def crash(record, state):
        if record.cycle == 12:
            raise Crash

    with pytest.raises(Crash):
        run_experiment(cfg10, tmp_path / "b", progress=False, callback=crash)
    path = tmp_path / "b" / "checkpoint.pt"
    payload = torch.load(path, weights_only=False)
    payload["method_state"] = None
    torch.save(payload, path)
    broken = run_experiment(cfg10, tmp_path / "b", resume=True, progress=False)
    assert _series(broken)[:10] == _series(full)[:10]
    assert _series(broken)[10:] != _series(full)[10:]


def test_resume_refuses_other_config(tiny_config, tmp_path):
    run_experiment(validate_config(tiny_config(checkpoint_every=10)), tmp_path, progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        run_experiment(
            validate_config(tiny_config(checkpoint_every=10, seed=99)),
            tmp_path,
            resume=True,
            progress=False,
        )


def test_nonfinite_analysis_is_reported_and_written(tiny_config, tmp_path):
    cfg = validate_config(tiny_config(method={"name": "explode", "params": {"N": 6, "at": 12}}))
    res = run_experiment(cfg, tmp_path, progress=False)
    s = res.summary
    assert s["diverged"] is True and s["diverged_cycle"] == 12 and len(res.records) == 11
    assert "non-finite" in s["diverged_reason"]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["diverged"] is True and on_disk["diverged_cycle"] == 12
    assert read_dataset(tmp_path / "results.nc").sizes["time"] == 11
    assert torch.isfinite(res.final_state).all()


def test_worse_than_climatology_is_flagged(tiny_config):
    cfg = validate_config(tiny_config(method={"name": "biased", "params": {"offset": 30.0}}))
    s = run_experiment(cfg, progress=False).summary
    assert math.isfinite(s["rmse_a"]) and s["rmse_a"] > s["clim_std"]
    assert s["diverged"] is True and s["diverged_cycle"] is None
    assert "climatological" in s["diverged_reason"]
