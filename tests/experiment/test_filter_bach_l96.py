"""``hybrida learn filter bach2025_l96``: a small run meets its bar, fails it untrained, writes its outputs, resumes."""

from __future__ import annotations

import json

import pytest
import torch

from hybrida.assimilation.ensemble.learned_filter import LearnedLETKF
from hybrida.experiment.config import ConfigError
from hybrida.experiment.filter_bach_l96 import make_config, run

#: smaller than --quick so that a test stays within ~30 s
TINY = ["sizes=[20]", "infls=[1.02,1.06]", "radii=[2.0,4.0]", "grid_trajectories=2", "grid_cycles=120",
        "train_trajectories=4", "train_cycles=120", "valid_trajectories=2", "valid_cycles=100",
        "test_trajectories=4", "test_cycles=250", "burn_in=30", "epochs=3"]


def test_quick_training_brings_a_poor_start_back_to_the_tuned_letkf(tmp_path):
    """Starting at radius 6 and inflation 1.15, training must end within 3% of the grid-searched LETKF."""
    s = run(tmp_path, seed=1, quick=True, overrides=TINY)
    assert s["met"], s["bar"]
    assert set(s) >= {"r_rmse", "baselines", "train_s", "bar", "met", "rmse"}
    assert s["r_rmse"]["20"] <= 1.03 * s["baselines"]["letkf_N20"]
    for name in ("summary.json", "filter.pt", "grid.json", "taper_inflation.png", "r_rmse_vs_N.png"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "summary.json").read_text())["met"] is True
    payload = torch.load(tmp_path / "filter.pt", weights_only=True)
    method = LearnedLETKF.from_payload(payload)
    assert method.n == 40 and method.p == 10


def test_without_training_the_quick_bar_fails(tmp_path):
    s = run(tmp_path, seed=1, quick=True, overrides=[*TINY, "epochs=0"])
    assert not s["met"]
    assert s["r_rmse"]["20"] > 1.03 * s["baselines"]["letkf_N20"]


def test_bad_overrides_are_config_errors():
    with pytest.raises(ConfigError, match="sigma"):
        make_config(True, ["sigma=-1"])
    with pytest.raises(ConfigError):
        make_config(True, ["no_such_key=1"])
    assert 20 in make_config(True, ["sizes=[5]", "train_N=20"]).sizes
