"""Short cycled runs on Lorenz-96 (Sakov & Oke 2008 setup, shortened): the filters track the truth."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from ens_helpers import subset_obs

from hybrida.assimilation.ensemble import ETKF, LETKF, DEnKF
from hybrida.cycle import run_cycle
from hybrida.models.lorenz96 import Lorenz96

F64 = torch.float64


@lru_cache(maxsize=1)
def _twin(n_cycles: int, seed: int = 0):
    model = Lorenz96(n=40)
    g = torch.Generator().manual_seed(seed)
    x = 8.0 + torch.randn(40, generator=g, dtype=F64)
    x = model.forecast(x, 500)  # onto the attractor
    truth = model.forecast(x, n_cycles, trajectory=True)
    idx = torch.arange(40)
    obs = [
        subset_obs(idx, truth[k] + torch.randn(40, generator=g, dtype=F64), 1.0, 40)
        for k in range(1, n_cycles + 1)
    ]
    return model, truth, obs


@pytest.mark.parametrize(
    "method, bound",
    [
        (ETKF(20, infl=1.02), 0.3),
        (LETKF(10, loc_rad=4.0, infl=1.04), 0.35),
        (DEnKF(20, infl=1.02), 0.35),
        (ETKF(20, adaptive=True), 0.35),
    ],
    ids=["etkf", "letkf", "denkf", "etkf-adaptive"],
)
def test_cycled_l96_rmse(method, bound):
    n_cycles, burn = 150, 50
    model, truth, obs = _twin(n_cycles)
    g = torch.Generator().manual_seed(1)
    E0 = method.initial_state(truth[0], 1.0, g)
    rmse = [rec.rmse_a for rec, _ in run_cycle(model, method, E0, truth, obs, 1, generator=g)]
    mean_rmse = sum(rmse[burn:]) / (n_cycles - burn)
    assert mean_rmse < bound, mean_rmse
