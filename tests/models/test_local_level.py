"""The local-level model: identity step, the model contract, and the random walk entering as the EKF's Q."""

from __future__ import annotations

import pytest
import torch

from hybrida.assimilation.base import GaussianState
from hybrida.assimilation.variational.ekf import EKF
from hybrida.models.local_level import LocalLevel
from hybrida.registry import MODELS, resolve


def test_step_is_the_identity_over_leading_dims_and_follows_dtype():
    model = LocalLevel(n=3, dt=0.5, level=2.0)
    x = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = model.step(x)
    assert torch.equal(y, x) and y is not x
    assert model.step(x.float()).dtype == torch.float32
    assert torch.equal(model.initial_state(), torch.full((3,), 2.0, dtype=torch.float64))
    assert model.forecast(x, 5).shape == x.shape


def test_ekf_forecast_adds_the_random_walk_variance():
    """P_{k+1} = P_k + dt Q per step: after 3 steps of dt 0.5 with Q = 4, P grows by 6."""
    model = LocalLevel(dt=0.5)
    prior = GaussianState(torch.tensor([1.0], dtype=torch.float64), torch.tensor([[2.0]], dtype=torch.float64))
    out = EKF(Q=4.0).forecast(model, prior, 3)
    assert float(out.mean) == 1.0 and float(out.cov) == pytest.approx(8.0, rel=1e-14)


def test_registered_and_bad_arguments_raise():
    assert resolve(MODELS, "local_level", "model") is LocalLevel
    for kwargs in ({"n": 0}, {"n": 1.5}, {"dt": 0.0}, {"dt": float("nan")}, {"level": float("inf")}):
        with pytest.raises(ValueError):
            LocalLevel(**kwargs)
    with pytest.raises(ValueError, match="last dimension"):
        LocalLevel(n=2).step(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="floating"):
        LocalLevel().step(torch.zeros(1, dtype=torch.int64))
