"""The batched Bach et al. (2025) L96 twin: data, R-RMSE, the batched grid equal to single runs, training steps."""

from __future__ import annotations

import math

import pytest
import torch

from hybrida.assimilation.ensemble.learned_filter import LearnedFilterNet
from hybrida.learn.filter_bach import (
    BachSetup,
    TwinData,
    cycle_r_rmse,
    grid_search,
    initial_ensemble,
    learned_analysis,
    letkf_analysis,
    make_data,
    relative_errors,
    train_epoch,
)

D = torch.float64


def test_data_follow_the_setup():
    setup = BachSetup(sigma=0.7)
    data = make_data(setup, 3, 50, torch.Generator().manual_seed(0), spin_up=500)
    assert data.truth.shape == (51, 3, 40) and data.y.shape == (50, 3, 10)
    assert setup.obs_index.tolist() == list(range(0, 40, 4))
    noise = data.y - data.truth[1:, :, setup.obs_index]
    assert noise.std().item() == pytest.approx(0.7, rel=0.1)
    step = setup.model.forecast(data.truth[4], 3)
    torch.testing.assert_close(step, data.truth[5], rtol=0, atol=1e-12)  # 0.15 time units between observations


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="sigma"):
        BachSetup(sigma=0.0)
    with pytest.raises(ValueError, match="trajectories"):
        make_data(BachSetup(), 0, 10, torch.Generator())
    with pytest.raises(ValueError, match="truth"):
        TwinData(torch.zeros(5, 2, 40), torch.zeros(5, 2, 10))
    data = make_data(BachSetup(), 2, 20, torch.Generator().manual_seed(0), spin_up=100)
    with pytest.raises(ValueError, match="burn_in"):
        cycle_r_rmse(BachSetup(), letkf_analysis(BachSetup(), 1.05, 2.0), initial_ensemble(data, 5, torch.Generator()),
                     data, burn_in=20)
    net = LearnedFilterNet(40)
    opt = torch.optim.Adam(net.parameters())
    with pytest.raises(ValueError, match="unknown loss"):
        train_epoch(BachSetup(), net, opt, initial_ensemble(data, 5, torch.Generator()), data, loss="mse")


def test_relative_error_is_the_normalised_distance():
    x = torch.tensor([[3.0, 4.0]], dtype=D)
    assert relative_errors(x + torch.tensor([[0.0, 1.0]], dtype=D), x).item() == pytest.approx(0.2)


def test_the_batched_grid_equals_each_configuration_run_alone():
    setup = BachSetup()
    data = make_data(setup, 2, 60, torch.Generator().manual_seed(1), spin_up=500)
    infls, radii = (1.02, 1.1), (1.5, 4.0)
    result = grid_search(setup, 12, data, infls, radii, torch.Generator().manual_seed(2), burn_in=10)
    E0 = initial_ensemble(data, 12, torch.Generator().manual_seed(2))
    for row in result["table"]:
        alone = cycle_r_rmse(setup, letkf_analysis(setup, row["infl"], row["loc_rad"]), E0, data, burn_in=10)
        assert row["r_rmse"] == pytest.approx(float(alone.mean()), rel=0, abs=1e-12)
    assert result["r_rmse"] == min(r["r_rmse"] for r in result["table"])


def test_an_untrained_learned_filter_is_the_letkf_with_its_start_values():
    """Up to the taper's floor of 1e-7 beyond the Gaspari–Cohn support."""
    setup = BachSetup()
    data = make_data(setup, 2, 40, torch.Generator().manual_seed(3), spin_up=500)
    E0 = initial_ensemble(data, 10, torch.Generator().manual_seed(4))
    a = cycle_r_rmse(setup, letkf_analysis(setup, 1.05, 2.0), E0, data, burn_in=5)
    b = cycle_r_rmse(setup, learned_analysis(setup, LearnedFilterNet(40, loc_rad=2.0, infl=1.05, sites=3)), E0, data,
                     burn_in=5)
    torch.testing.assert_close(b, a, rtol=2e-3, atol=0)


def test_a_diverging_configuration_scores_infinity():
    setup = BachSetup()
    data = make_data(setup, 2, 60, torch.Generator().manual_seed(5), spin_up=500)
    E0 = initial_ensemble(data, 5, torch.Generator().manual_seed(6))

    def explode(E, y, k):
        return E * 1e4 if k == 3 else E

    score = cycle_r_rmse(setup, explode, E0, data, burn_in=10)
    assert math.isinf(float(score))  # the mean over trajectories


@pytest.mark.parametrize("loss", ["truth", "observations"])
def test_a_training_epoch_moves_the_filter_from_a_poor_start(loss):
    """From radius 6 and inflation 1.2, one epoch lowers both the far taper and the inflation."""
    setup = BachSetup()
    data = make_data(setup, 4, 80, torch.Generator().manual_seed(7), spin_up=500)
    net = LearnedFilterNet(40, loc_rad=6.0, infl=1.2)
    start_infl = float(net.infl.detach()[0])
    start_far = float(net.taper.values().detach()[0, 8])
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    value = train_epoch(setup, net, opt, initial_ensemble(data, 10, torch.Generator().manual_seed(8)), data,
                        loss=loss, window=10, burn_in=10)
    assert math.isfinite(value)
    assert float(net.infl.detach()[0]) < start_infl
    assert float(net.taper.values().detach()[0, 8]) < start_far
