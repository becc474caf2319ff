"""The score_l96 pipeline end to end (a tiny configuration) and its failure with training disabled."""

from __future__ import annotations

import json

import pytest

from hybrida.experiment.config import ConfigError
from hybrida.experiment.score_l96 import run

#: a tiny run: 120 training steps of a 16-channel network, one 8-state test window, 3 generated cycles
TINY = ["free_run=2000", "valid_run=300", "channels=16", "depth=2", "batch=32", "max_steps=120",
        "valid_every=40", "test_windows=1", "test_length=8", "spin_cycles=50", "sample_steps=16", "members=10",
        "cycles=3", "cycle_burn_in=0", "gen_steps=8", "bar_generated=1000"]


def test_quick_pipeline_meets_its_bar_and_fails_untrained(tmp_path) -> None:
    """Trained: score rmse within the quick bar (2.5x EnKS); lr=0 (untrained network): far outside it."""
    s = run(tmp_path / "trained", seed=1, quick=True, overrides=TINY)
    for key in ("rmse", "baselines", "spread_ratio", "crps", "bar", "met", "train_s"):
        assert key in s
    assert json.loads((tmp_path / "trained" / "summary.json").read_text())["rmse"] == pytest.approx(s["rmse"])
    for name in ("prior.pt", "posterior.png", "rank_histogram.png", "training.png"):
        assert (tmp_path / "trained" / name).is_file()
    assert s["met_each"]["rmse"], s["rmse_ratio"]  # measured ratio 1.03 (0.92 vs EnKS N=10 0.89)
    untrained = run(tmp_path / "untrained", seed=1, quick=True, overrides=[*TINY, "lr=0", "max_steps=1"])
    assert not untrained["met"] and untrained["rmse_ratio"] > 2.5, untrained["rmse_ratio"]  # measured 5.6
    # a finished training is reused with resume
    again = run(tmp_path / "trained", seed=1, quick=True, overrides=TINY, resume=True)
    assert again["rmse"] == pytest.approx(s["rmse"])


def test_bad_config_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="obs_fraction"):
        run(tmp_path, quick=True, overrides=["obs_fraction=1.5"])
