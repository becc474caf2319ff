"""Gradient-tuned LETKF inflation and radius reach the grid-searched LETKF (issue 13, part 1 oracle)."""

from __future__ import annotations

import pytest
import torch

from hybrida.assimilation.ensemble.differentiable import TrainableLETKF
from hybrida.assimilation.ensemble.letkf import LETKF
from hybrida.experiment.twin import make_twin
from hybrida.learn.filter_tuning import rmse_of, tune_filter
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.networks import IdentityObs

D = torch.float64
N_TRAIN, N_TEST, N = 150, 300, 10


@pytest.fixture(scope="module")
def twin():
    """Sakov–Oke L96 (n=40, all observed every step, R = I): training then test cycles."""
    model = Lorenz96(n=40)
    g = torch.Generator().manual_seed(0)
    x0 = model.initial_state() + 0.1 * torch.randn(40, generator=g, dtype=D)
    tw = make_twin(model, IdentityObs(40, std=1.0), x0, N_TRAIN + N_TEST, g)
    start = tw.truth[0] + torch.randn(N, 40, generator=g, dtype=D)
    test_start = tw.truth[N_TRAIN] + 0.3 * torch.randn(N, 40, generator=g, dtype=D)
    return model, tw, start, test_start


def _tuned_rmse(twin, lr: float, loss: str = "truth") -> tuple[float, TrainableLETKF]:
    model, tw, start, test_start = twin
    f = TrainableLETKF(N=N, loc_rad=8.0, infl=1.2)  # far from the tuned (1.02, 4)
    tune_filter(f, model, start, tw.observations[:N_TRAIN], 1, tw.truth[: N_TRAIN + 1],
                loss=loss, window=10, epochs=2, lr=lr)
    return rmse_of(f, model, test_start, tw.observations[N_TRAIN:], 1, tw.truth[N_TRAIN:], burn_in=50), f


@pytest.fixture(scope="module")
def grid_best(twin) -> float:
    """The best test rmse of the LETKF over inflation x radius, on the same test cycles."""
    model, tw, _, test_start = twin
    return min(
        rmse_of(LETKF(N=N, loc_rad=r, infl=i), model, test_start, tw.observations[N_TRAIN:], 1,
                tw.truth[N_TRAIN:], burn_in=50)
        for i in (1.02, 1.04) for r in (4.0, 6.0)  # holds the tuned (1.02, 4) of REFERENCES.md
    )


def test_gradient_tuning_reaches_the_grid_searched_letkf(twin, grid_best):
    best = grid_best
    tuned, f = _tuned_rmse(twin, lr=0.1)
    # headline (benchmarks/learn/filter_tuning.py, longer runs): within 2%; this short run: 5%
    assert tuned <= 1.05 * best, (tuned, best, f)
    assert float(f.infl.detach()) < 1.1  # moved from 1.2 towards the tuned ~1.02-1.04


def test_without_learning_the_start_parameters_stay_worse(twin, grid_best):
    best = grid_best
    untrained, _ = _tuned_rmse(twin, lr=1e-12)
    assert untrained > 1.05 * best


def test_bad_arguments():
    model = Lorenz96(n=8)
    f = TrainableLETKF(N=4, loc_rad=2.0)
    E = torch.zeros(4, 8, dtype=D)
    with pytest.raises(ValueError, match="unknown loss"):
        tune_filter(f, model, E, [], 1, loss="mse")
    with pytest.raises(ValueError, match="needs the truth"):
        tune_filter(f, model, E, [], 1)
    with pytest.raises(TypeError, match="no trainable"):
        tune_filter(LETKF(N=4, loc_rad=2.0), model, E, [], 1, torch.zeros(1, 8, dtype=D))
