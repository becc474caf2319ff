"""``hybrida learn filter bach2025_l96``: a small run meets its bar, fails it untrained, writes its outputs, resumes."""

from __future__ import annotations

import json

import pytest
import torch

from hybrida.assimilation.ensemble.learned_filter import LearnedLETKF
from hybrida.experiment.config import ConfigError
from hybrida.experiment.filter_bach_config import make_config
from hybrida.experiment.filter_bach_l96 import run

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


def test_fine_tuning_at_another_size_repairs_a_poor_network_and_resume_reuses_everything(tmp_path, monkeypatch):
    """An untrained network (radius 6, inflation 1.15) fine-tuned 2 epochs at N=10 closes at least half its gap to the
    LETKF there; a resumed run recomputes neither the grid nor any test score and gives the same numbers."""
    import hybrida.experiment.filter_bach_l96 as pipeline

    settings = [*TINY, "sizes=[10,20]", "epochs=0", "finetune_epochs=2", "finetune_sizes=[10]"]
    s = run(tmp_path, seed=1, quick=True, overrides=settings)
    at10 = s["r_rmse_common"]["10"]  # on the trajectories every filter kept
    assert at10["trajectories"] >= 3
    assert at10["truth"] > 1.05 * at10["letkf"]  # the untrained network is poor at N=10
    assert at10["truth"] - at10["finetuned"] >= 0.5 * (at10["truth"] - at10["letkf"])  # half the gap closed
    assert s["diverged"].get("10", {}).get("finetuned", 0) <= s["diverged"].get("10", {}).get("letkf", 0)
    assert s["finetune"]["10"]["cpu_s"] > 0 and (tmp_path / "filter_finetuned_N10.pt").is_file()
    assert set(s["r_rmse_adaptive"]) == {"10", "20"}
    scores = json.loads((tmp_path / "test_scores.json").read_text())["scores"]
    assert len(scores) == 2 * 3 + 1  # LETKF, adaptive, learned at each N; fine-tuned at 10

    def must_not_run(*args, **kwargs):
        raise AssertionError("recomputed on resume")

    monkeypatch.setattr(pipeline, "grid_search", must_not_run)
    monkeypatch.setattr(pipeline, "cycle_r_rmse", must_not_run)
    again = run(tmp_path, seed=1, quick=True, overrides=settings, resume=True)
    for key in ("r_rmse", "r_rmse_finetuned", "r_rmse_adaptive", "baselines"):
        assert again[key] == s[key], key


def test_a_network_trained_at_another_size_from_the_start_closes_its_gap_there_and_not_untrained(tmp_path):
    """at_N_sizes: a network of its own trained 2 epochs at N=40 (lr 0.05) from the poor quick start (radius 6,
    inflation 1.15) closes at least half its gap to the LETKF there and meets a large-N bar of -3% at N=40; with
    training disabled it is that start and fails the bar."""
    settings = [*TINY, "sizes=[20,40]", "epochs=2", "at_N_sizes=[40]", "at_N_lr=0.05", "bar_large_sizes=[40]",
                "bar_large=-0.03"]
    s = run(tmp_path / "trained", seed=1, quick=True, overrides=settings)
    untrained = run(tmp_path / "untrained", seed=1, quick=True, overrides=[*settings, "epochs=0"])
    at, before = s["r_rmse_common"]["40"], untrained["r_rmse_common"]["40"]
    assert before["at_N"] > 1.05 * before["letkf"]  # the untrained start is poor at N=40
    assert before["at_N"] == pytest.approx(before["truth"], rel=1e-12)  # ... and the same network as at N=20
    assert at["letkf"] == pytest.approx(before["letkf"], rel=1e-12)
    assert before["at_N"] - at["at_N"] >= 0.5 * (before["at_N"] - before["letkf"])  # half the gap closed
    assert s["trained_at_N"]["40"]["cpu_s"] > 0 and (tmp_path / "trained" / "filter_N40.pt").is_file()
    assert s["bar"]["checks"]["large_N40"] and not untrained["bar"]["checks"]["large_N40"]
