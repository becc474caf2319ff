"""Training: datasets from trajectories/archives, rollout loss, early stopping, reproducibility."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hybrida.learn import (
    TrajectoryDataset,
    fit,
    forecast_skill,
    free_run,
    rollout_loss,
    split_trajectory,
)
from hybrida.models import Lorenz96, SurrogateModel
from hybrida.nn import BrajardCNN, ResidualCNN


class Scale(nn.Module):
    """x -> a x with one learnable scalar (a bare network: fit rolls it out directly)."""

    def __init__(self, a: float = 0.0) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, x):
        return self.a * x


def _geometric(rate: float, T: int = 40, n: int = 3) -> torch.Tensor:
    x0 = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)[:n]
    return x0 * rate ** torch.arange(T, dtype=torch.float64).unsqueeze(-1)


def test_dataset_indexing_rollout_and_multiple_trajectories():
    a = torch.arange(20.0).reshape(10, 2)
    b = 100 + torch.arange(12.0).reshape(6, 2)
    ds = TrajectoryDataset([a, b], rollout=2, steps_between=2)
    assert len(ds) == (10 - 4) + (6 - 4)
    x, y, w = ds.batch(torch.arange(len(ds)))
    assert x.shape == (8, 2) and y.shape == (8, 2, 2) and w.shape == (8, 2, 2)
    torch.testing.assert_close(y[0], torch.stack((a[2], a[4])))
    torch.testing.assert_close(x[6], b[0])
    torch.testing.assert_close(y[-1], torch.stack((b[3], b[5])))  # never straddles a -> b
    assert torch.equal(ds[7][0], b[1])


def test_dataset_nan_targets_get_zero_weight_and_nan_inputs_are_dropped():
    traj = torch.arange(12.0).reshape(6, 2)
    traj[2, 1] = float("nan")
    ds = TrajectoryDataset(traj, rollout=1)
    assert ds.starts.tolist() == [0, 1, 3, 4]  # start 2 has a NaN input
    _, y, w = ds.batch(torch.tensor([1]))
    assert w[0, 0].tolist() == [1.0, 0.0] and bool(torch.isfinite(y).all())
    mask = torch.zeros_like(traj)
    mask[:, 0] = 1.0
    ds_w = TrajectoryDataset(traj, rollout=1, weights=mask)
    assert bool((ds_w.weights[:, 1] == 0).all())
    with pytest.raises(ValueError, match="weights"):
        TrajectoryDataset(traj, weights=-mask)
    with pytest.raises(ValueError, match="no usable samples"):
        TrajectoryDataset(traj[:2], rollout=3)


def test_dataset_with_separate_targets():
    inputs = torch.arange(12.0).reshape(6, 2)
    targets = -inputs.clone()
    targets[3, 0] = float("nan")  # e.g. an unobserved entry
    ds = TrajectoryDataset(inputs, rollout=2, targets=targets)
    x, y, w = ds.batch(torch.arange(len(ds)))
    torch.testing.assert_close(x, inputs[:4])
    # start 1: targets are rows 2 and 3 of ``targets``; the NaN becomes 0 with weight 0
    torch.testing.assert_close(y[1], torch.stack((-inputs[2], torch.tensor([0.0, -7.0]))))
    assert w[1, 0].tolist() == [1.0, 1.0] and w[1, 1].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="targets must match"):
        TrajectoryDataset(inputs, targets=targets[:5])
    # a map fitted to inputs -> targets is the one that links them, not the inputs' own dynamics
    traj = _geometric(0.9)
    m = Scale(0.0)
    fit(m, TrajectoryDataset(traj, targets=-traj), epochs=150, batch_size=8, lr=0.05, progress=False)
    assert abs(float(m.a.detach()) + 0.9) < 1e-3


def test_rollout_loss_exact_for_linear_map():
    m = Scale(0.5)
    x0 = torch.tensor([[2.0, 4.0]], dtype=torch.float64)
    targets = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]], dtype=torch.float64)
    w = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    # step 1 exact (0 error); step 2 prediction (0.5, 1.0): only the first entry weighted
    assert float(rollout_loss(m, x0, targets, w).detach()) == pytest.approx(0.25 / 3)


def test_fit_recovers_linear_map_from_masked_archive_with_gaps():
    traj = _geometric(0.9)
    archive = traj.clone()
    archive[::3, 1] = float("nan")  # unobserved entries of an analysis archive
    mask = torch.ones_like(traj)
    mask[:, 2] = 0.0
    archive[:, 2] = 1e6  # untrustworthy variable: weight 0, its targets must not matter
    ds = TrajectoryDataset(traj, rollout=2, weights=mask)
    m = Scale(0.0)
    res = fit(m, ds, epochs=150, batch_size=8, lr=0.05, progress=False)
    assert abs(float(m.a.detach()) - 0.9) < 1e-3
    assert res.history["train"][-1] < 1e-3 * res.history["train"][0]
    # NaN targets of the archive are masked, not crashing
    ds2 = TrajectoryDataset(archive, rollout=1, weights=mask)
    res2 = fit(Scale(0.0), ds2, epochs=3, progress=False)
    assert all(math.isfinite(v) for v in res2.history["train"])


def test_early_stopping_restores_best_weights():
    train, valid = _geometric(1.0), _geometric(0.3)
    m = Scale(0.0)
    res = fit(m, train, valid, epochs=200, batch_size=64, lr=0.05, patience=5, progress=False)
    assert res.stopped == "patience"
    assert res.epochs_run < 200 and res.best_epoch == res.epochs_run - 1 - 5
    assert res.best_loss == min(res.history["valid"])
    # the restored weights reproduce the best validation loss, not the last one
    with torch.no_grad():
        ds = TrajectoryDataset(valid)
        x, y, w = ds.batch(torch.arange(len(ds)))
        assert float(rollout_loss(m, x, y, w)) == pytest.approx(res.best_loss, rel=1e-12)
    assert res.history["valid"][-1] > res.best_loss
    assert abs(float(m.a.detach()) - 0.3) < 0.1


def test_max_epochs_bound_and_argument_checks():
    res = fit(Scale(0.0), _geometric(0.9), epochs=4, progress=False)
    assert res.epochs_run == 4 and res.stopped == "max_epochs" and res.best_epoch == 3
    assert all(math.isnan(v) for v in res.history["valid"])
    for bad in ({"epochs": 0}, {"lr": -1.0}, {"lr_schedule": "step"}, {"patience": 0}):
        with pytest.raises(ValueError):
            fit(Scale(0.0), _geometric(0.9), progress=False, **bad)


def _tiny_setup(seed):
    traj = free_run(Lorenz96(n=8), Lorenz96(n=8).initial_state(), 200)
    net = ResidualCNN(channels=4, blocks=1, kernel_size=3, seed=seed)
    return SurrogateModel.from_trajectory(net, traj, 0.05, scheme="increment"), traj


def test_same_seed_same_weights_other_seed_differs():
    states = []
    for init_seed, fit_seed in ((0, 0), (0, 0), (0, 1)):
        m, traj = _tiny_setup(init_seed)
        fit(
            m,
            traj,
            rollout=2,
            epochs=2,
            batch_size=32,
            lr_schedule="cosine",
            seed=fit_seed,
            progress=False,
        )
        states.append(m.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_brajard_cnn_trained_on_l96_beats_persistence():
    l96 = Lorenz96(n=40)
    traj = free_run(l96, l96.initial_state(), 1600).float()
    train, valid = split_trajectory(traj, 0.25)
    sur = SurrogateModel.from_trajectory(BrajardCNN(filters=4, hidden=8, seed=0), train, l96.dt)
    res = fit(sur, train, valid, epochs=6, batch_size=64, lr=3e-3, progress=False)
    assert res.history["valid"][res.best_epoch] < res.history["valid"][0]
    starts = torch.arange(0, valid.shape[0] - 2, 7)
    skill = forecast_skill(sur, valid.double(), starts, 1)
    persistence = ((valid[starts + 1] - valid[starts]) ** 2).mean(-1).sqrt().mean() / skill.clim_std
    assert float(skill.nrmse[1]) < 0.5 * float(persistence)
