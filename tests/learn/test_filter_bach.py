"""The batched Bach et al. (2025) L96 twin: data, R-RMSE, the batched grid equal to single runs, training steps."""

from __future__ import annotations

import math

import pytest
import torch

from hybrida.assimilation.ensemble.learned_filter import LearnedFilterNet
from hybrida.assimilation.ensemble.letkf import LETKF
from hybrida.learn.filter_bach import (
    BachSetup,
    TwinData,
    adaptive_letkf_analysis,
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


def test_the_grid_prefers_the_fewest_lost_trajectories_then_the_lowest_score(monkeypatch):
    """With every configuration losing a trajectory the plain mean is +inf for all; the choice must still be made."""
    import hybrida.learn.filter_bach as fb

    setup = BachSetup()
    data = make_data(setup, 2, 20, torch.Generator().manual_seed(1), spin_up=100)
    inf = math.inf
    for per, want in (([[inf, 0.1], [0.5, 0.6], [inf, inf], [0.4, inf]], 1),  # the only one that keeps both
                      ([[inf, 0.3], [inf, inf], [0.2, inf], [inf, 0.25]], 2)):  # all lose one: lowest kept mean
        monkeypatch.setattr(fb, "cycle_r_rmse", lambda *a, per=per, **k: torch.tensor(per, dtype=D))
        result = grid_search(setup, 5, data, (1.0, 1.1), (1.0, 2.0), torch.Generator().manual_seed(0), burn_in=5)
        pairs = [(i, r) for i in (1.0, 1.1) for r in (1.0, 2.0)]
        assert (result["infl"], result["loc_rad"]) == pairs[want]
        assert result["lost"] == sum(math.isinf(v) for v in per[want])


def test_an_untrained_learned_filter_is_the_letkf_with_its_start_values():
    """Up to the taper's floor of 1e-7 beyond the Gaspari–Cohn support."""
    setup = BachSetup()
    data = make_data(setup, 2, 40, torch.Generator().manual_seed(3), spin_up=500)
    E0 = initial_ensemble(data, 10, torch.Generator().manual_seed(4))
    a = cycle_r_rmse(setup, letkf_analysis(setup, 1.05, 2.0), E0, data, burn_in=5)
    b = cycle_r_rmse(setup, learned_analysis(setup, LearnedFilterNet(40, loc_rad=2.0, infl=1.05, sites=3)), E0, data,
                     burn_in=5)
    torch.testing.assert_close(b, a, rtol=2e-3, atol=0)


def test_the_batched_adaptive_letkf_equals_the_letkf_class_with_adaptive_inflation():
    """Two runs cycled at once, each with its own λ, equal hybrida's LETKF(adaptive=True) run per trajectory."""
    from hybrida.observations.networks import EveryKthObs

    setup = BachSetup(sigma=0.7)
    data = make_data(setup, 2, 12, torch.Generator().manual_seed(9), spin_up=500)
    E = initial_ensemble(data, 10, torch.Generator().manual_seed(10), spread=0.3)  # under-dispersed: λ must grow
    batched = adaptive_letkf_analysis(setup, loc_rad=2.0)
    alone = [LETKF(N=10, loc_rad=2.0, adaptive=True, solver="eigh") for _ in range(2)]
    Es = [E[b].clone() for b in range(2)]
    net = EveryKthObs(40, k=4, std=0.7)
    for k in range(1, 13):
        E = batched(setup.model.forecast(E, setup.steps), data.y[k - 1], k)
        for b in range(2):
            obs = net.observe(torch.zeros(40, dtype=D), 1, torch.Generator().manual_seed(0))
            obs.y = data.y[k - 1, b]
            Es[b] = alone[b].analyse(setup.model.forecast(Es[b], setup.steps), obs)
    torch.testing.assert_close(E, torch.stack(Es), rtol=0, atol=1e-9)
    factors = [m.adaptive_inflation.value for m in alone]
    assert min(factors) > 1.0 and factors[0] != factors[1]  # the inflation adapted, per run


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


def test_the_learning_rate_follows_a_cosine_to_lr_final(monkeypatch):
    """fit_filter with lr_final: epoch e trains at lr_final + (lr - lr_final)(1 + cos(pi (e - 1) / epochs)) / 2."""
    import hybrida.learn.filter_bach as fb

    seen: list[float] = []

    def record(setup, net, opt, E0, data, **kwargs):
        seen.append(opt.param_groups[0]["lr"])
        return 0.0

    monkeypatch.setattr(fb, "train_epoch", record)
    setup = BachSetup()
    data = make_data(setup, 2, 30, torch.Generator().manual_seed(1), spin_up=200)
    fb.fit_filter(setup, LearnedFilterNet(40, loc_rad=3.0, infl=1.05), 5, data, data,
                  generator=torch.Generator().manual_seed(2), epochs=4, lr=0.1, lr_final=0.01, patience=10, burn_in=10)
    assert seen == pytest.approx([0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)], rel=1e-12)
    assert seen[0] == pytest.approx(0.1) and seen[-1] > 0.01
    seen.clear()
    fb.fit_filter(setup, LearnedFilterNet(40, loc_rad=3.0, infl=1.05), 5, data, data,
                  generator=torch.Generator().manual_seed(2), epochs=3, lr=0.1, patience=10, burn_in=10)
    assert seen == [0.1, 0.1, 0.1]  # no lr_final: constant
