"""fit_obs_operator and collocated_pairs: data checks, NaN masking, determinism, early stopping."""

from __future__ import annotations

import pytest
import torch

from hybrida.learn.obs_operator import collocated_pairs, fit_obs_operator
from hybrida.observations.networks import RadianceObs

F64 = torch.float64


def _data(T: int = 400, seed: int = 0):
    system = RadianceObs(8, 4, 0.8, "tanh", scale=4.0, std=0.2)
    g = torch.Generator().manual_seed(seed)
    x = 2.0 + 3.0 * torch.randn(T, 8, generator=g, dtype=F64)
    y = system.operator(x) + 0.2 * torch.randn(T, 4, generator=g, dtype=F64)
    return system, x, y


def test_collocated_pairs_drops_cycle_zero_and_checks_the_network():
    system = RadianceObs(8, 4, 0.8, "tanh", scale=4.0, std=0.2)
    truth = torch.randn(6, 8, dtype=F64)
    obs = [system.observe(truth[k], k, torch.Generator().manual_seed(k)) for k in range(1, 6)]
    x, y, loc = collocated_pairs(truth, obs)
    assert torch.equal(x, truth[1:]) and y.shape == (5, 4) and torch.equal(loc, system.centres)
    assert torch.equal(collocated_pairs(truth[1:], obs)[0], truth[1:])
    with pytest.raises(ValueError, match="states must have shape"):
        collocated_pairs(truth[:3], obs)
    other = RadianceObs(8, 2, 0.8, "tanh").observe(truth[3], 3)
    with pytest.raises(ValueError, match="network changes at cycle 3"):
        collocated_pairs(truth, [*obs[:2], other, *obs[3:]])


def test_fit_is_seeded_masks_nan_and_learns():
    system, x, y = _data()
    y_missing = y.clone()
    y_missing[::3, 1] = float("nan")
    kw = {"hidden": 8, "half_window": 2, "epochs": 25, "batch_size": 64, "seed": 4}
    a, ra = fit_obs_operator(x, y_missing, system.centres, **kw)
    _, rb = fit_obs_operator(x, y_missing, system.centres, **kw)
    assert ra.history["valid"] == rb.history["valid"]  # same seed, same run
    assert all(torch.isfinite(torch.tensor(ra.history["train"])))
    assert not any(p.requires_grad for p in a.parameters())
    xt = x[-50:]
    err = float((a(xt) - system.operator(xt)).pow(2).mean().sqrt())
    # the normalised loss must drop well below the untrained start
    assert ra.best_loss < 0.2 * ra.history["valid"][0] and err < 0.5 * float(y.std())


def test_early_stopping_and_time_limit():
    system, x, y = _data(200)
    _, res = fit_obs_operator(x, y, system.centres, hidden=4, epochs=500, patience=3, lr=1e-9, seed=0)
    assert res.stopped == "patience" and res.epochs_run < 500
    _, res = fit_obs_operator(x, y, system.centres, hidden=4, epochs=500, time_limit_s=0.0, seed=0)
    assert res.stopped == "time_limit" and res.epochs_run == 1


def test_bad_inputs_refused():
    system, x, y = _data(50)
    with pytest.raises(ValueError, match="need states"):
        fit_obs_operator(x, y[:, :3], system.centres)
    with pytest.raises(ValueError, match="finite"):
        fit_obs_operator(x * float("nan"), y, system.centres)
