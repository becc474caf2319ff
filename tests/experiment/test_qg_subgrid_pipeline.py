"""The QG subgrid pipeline end to end on a tiny grid: data, training, offline skill, free runs, LETKF.

The grid is too coarse and the spin-up too short for developed eddies, so this checks the wiring
(summary, files, --resume); that training learns a forcing (and fails with learning switched off)
is tested in tests/models/test_qg_subgrid.py.
"""

from __future__ import annotations

import json
import math

import pytest

from hybrida.experiment.config import ConfigError
from hybrida.experiment.learned_analysis import run_learned_analysis

TINY = [
    "hi_nx=32", "hi_dt=7200", "lo_nx=16", "lo_dt=7200", "train_trajectories=2", "train_days=20", "valid_days=6",
    "spinup_days=30", "adjust_days=2", "channels=[4]", "kernels=[3,3]", "epochs=4", "test_days=10",
    "da_cycles=8", "da_burn_in=2", "members=6", "obs_p=64", "loc_rad=2.0", "obs_std=[1e-8,1e-8]", "init_std=1e-6",
]


def test_tiny_subgrid_pipeline_writes_its_summary_and_resumes(tmp_path) -> None:
    out = tmp_path / "run"
    s = run_learned_analysis("qg_subgrid", out, family="subgrid", seed=1, quick=True, overrides=TINY)
    for key in ("rmse", "baselines", "gain", "bar", "met", "offline", "free_run", "train_s", "no_da_rmse"):
        assert key in s
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["rmse"] == s["rmse"] and set(on_disk["baselines"]) == {"low_res"}
    assert on_disk["config"]["hi_nx"] == 32 and on_disk["da"]["cycles"] == 8
    for f in ("subgrid.pt", "data.pt", "forcing.png", "energy.png", "rmse.png", "series.json"):
        assert (out / f).exists(), f
    assert all(math.isfinite(v) for v in s["offline"]["trained"]["r2"] + [s["rmse"], s["baselines"]["low_res"]])
    series = json.loads((out / "series.json").read_text())["rmse_a"]
    # the LETKF pulls the initial ensemble (error std 1e-6) towards the truth with either model
    assert all(max(v) < 0.5e-6 for v in series.values()), {k: max(v) for k, v in series.items()}
    # --resume reuses the data and the saved network: the same offline skill and scores
    again = run_learned_analysis("qg_subgrid", out, family="subgrid", seed=1, quick=True, overrides=TINY,
                                 resume=True)
    assert again["offline"]["trained"] == s["offline"]["trained"] and again["rmse"] == s["rmse"]
    # data made with other settings are not reused silently
    with pytest.raises(ConfigError, match="without --resume"):
        run_learned_analysis("qg_subgrid", out, family="subgrid", seed=1, quick=True,
                             overrides=[*TINY, "train_days=21"], resume=True)


def test_subgrid_pipeline_rejects_unknown_settings(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no_such_key"):
        run_learned_analysis("qg_subgrid", tmp_path, family="subgrid", overrides=["no_such_key=1"])
    assert not (tmp_path / "summary.json").exists()
