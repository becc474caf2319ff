"""Lorenz-63 specifics: the tendency, parameters, boundedness."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch

from hybrida.models import Lorenz63


def test_tendency_at_known_point():
    m = Lorenz63()
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    expected = torch.tensor(
        [10.0 * (2 - 1), 1 * (28 - 3) - 2, 1 * 2 - 8 / 3 * 3], dtype=torch.float64
    )
    torch.testing.assert_close(m.tendency(x), expected, rtol=1e-15, atol=0)


def test_rk4_step_is_fourth_order():
    """Halving dt cuts the one-interval error ~16x (global 4th order) against a fine run."""
    x = Lorenz63().initial_state()
    ref = Lorenz63(dt=0.1 / 256).forecast(x, 256)
    errs = [(Lorenz63(dt=0.1 / s).forecast(x, s) - ref).norm().item() for s in (4, 8, 16)]
    assert all(12 < a / b < 20 for a, b in pairwise(errs)), errs


def test_trajectory_bounded_and_on_attractor():
    m = Lorenz63()
    traj = m.forecast(m.initial_state(), 5000, trajectory=True)
    assert torch.isfinite(traj).all() and traj.abs().max() < 60
    # z oscillates around rho - 1 = 27 on the butterfly; x changes sign (both wings visited)
    assert 20 < traj[:, 2].mean() < 27
    assert (traj[:, 0] > 5).any() and (traj[:, 0] < -5).any()


@pytest.mark.parametrize(
    "kwargs",
    [{"sigma": 0.0}, {"beta": -1.0}, {"dt": 0.0}, {"dt": float("nan")}, {"rho": float("inf")}],
)
def test_invalid_parameters(kwargs):
    with pytest.raises(ValueError):
        Lorenz63(**kwargs)


def test_reference_initial_state():
    torch.testing.assert_close(
        Lorenz63().initial_state(), torch.tensor([1.509, -1.531, 25.46], dtype=torch.float64)
    )
