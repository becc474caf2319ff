"""Imperfect-model twins: the truth runs another model than the forecasts."""

from __future__ import annotations

import pytest
import torch

from hybrida.experiment.builder import build
from hybrida.experiment.config import ConfigError, validate_config
from hybrida.experiment.runner import run_experiment
from hybrida.models.lorenz96 import Lorenz96
from hybrida.models.lorenz96_two_scale import Lorenz96TwoScale


def _config(**changes):
    data = {
        "name": "imperfect",
        "model": {"name": "lorenz96", "params": {"n": 8, "F": 20.0, "dt": 0.005}},
        "truth_model": {"name": "lorenz96_two_scale", "params": {"K": 8, "J": 32}},
        "observations": {"name": "identity", "params": {"std": 0.3}, "every": 10},
        "method": {"name": "etkf", "params": {"N": 20, "adaptive": True}},
        "cycles": 150,
        "burn_in": 4.0,
        "initial": {"std": 0.1, "center": "truth", "truth_std": 0.0},
    }
    data.update(changes)
    return validate_config(data)


def test_two_scale_truth_cut_to_the_slow_variables():
    exp = build(_config())
    assert isinstance(exp.model, Lorenz96)
    assert exp.twin.truth.shape == (151, 8)
    # the stored truth is the slow part of a genuine two-scale run
    full = Lorenz96TwoScale(K=8, J=32)
    x0 = full.initial_state(torch.float64)
    x = full.forecast(x0, 10)
    torch.testing.assert_close(exp.twin.truth[1], x[:8], rtol=0, atol=0)
    assert exp.twin.observations[0].p == 8
    summary = run_experiment(exp.config, progress=False).summary
    assert summary["rmse_a"] < 1.0


def test_same_size_truth_with_other_forcing():
    exp = build(_config(truth_model={"name": "lorenz96", "params": {"n": 8, "F": 22.0, "dt": 0.005}}))
    assert exp.twin.truth.shape == (151, 8)
    free = Lorenz96(8, F=22.0, dt=0.005).forecast(exp.twin.truth[0], 10)
    torch.testing.assert_close(exp.twin.truth[1], free)


@pytest.mark.parametrize(
    ("truth", "match"),
    [
        ({"name": "lorenz96", "params": {"n": 8, "dt": 0.05}}, "truth_model.params.dt"),
        ({"name": "lorenz96", "params": {"n": 6, "dt": 0.005}}, "fewer than"),
        ({"name": "nosuch"}, "unknown model"),
    ],
)
def test_bad_truth_model(truth, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        build(_config(truth_model=truth))
