"""NoisyModel: additive Gaussian model noise, seeded, independent or shared across variables."""

from __future__ import annotations

import math

import pytest
import torch

from hybrida.models.base import Model
from hybrida.models.lorenz96 import Lorenz96
from hybrida.models.noisy import NoisyModel


class Persistence(Model):
    """x_{k+1} = x_k: the noise is the whole increment."""

    def __init__(self, n: int) -> None:
        self.n, self.dt = n, 0.05

    def step(self, x, t=0.0):
        return x.clone()


def _x(B: int = 6, n: int = 36, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return 3.0 * torch.randn(B, n, generator=torch.Generator().manual_seed(seed), dtype=dtype) + 2.0


def test_noisy_model_adds_seeded_gaussian_noise_per_member():
    base = Persistence(6)
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    noisy = NoisyModel(base, 0.3, torch.Generator().manual_seed(5))
    out = noisy.step(x)
    expected = 0.3 * torch.randn(4, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(out - x, expected)
    # same seed, same forecasts; the stream moves on between steps
    a = NoisyModel(base, 0.3, torch.Generator().manual_seed(5)).forecast(x, 3)
    b = NoisyModel(base, 0.3, torch.Generator().manual_seed(5)).forecast(x, 3)
    torch.testing.assert_close(a, b)
    assert not torch.equal(noisy.step(x), noisy.step(x))
    # per-variable std, dtype follows the state, and std 0 is the wrapped model
    std = torch.tensor([0.0, 1.0, 0.0, 2.0, 0.0, 0.0])
    out32 = NoisyModel(base, std, torch.Generator().manual_seed(1)).step(x.float())
    assert out32.dtype == torch.float32
    # the same seed draws the same noise in float32 as in float64, to round-off (measured 3e-8)
    out64 = NoisyModel(base, std, torch.Generator().manual_seed(1)).step(x)
    torch.testing.assert_close(out32.double(), out64, rtol=0, atol=1e-6)
    torch.testing.assert_close(out32[:, std == 0], x.float()[:, std == 0])
    assert float((out32[:, 3] - x.float()[:, 3]).abs().max()) > 0
    with pytest.raises(ValueError, match="std"):
        NoisyModel(base, -1.0, torch.Generator())
    with pytest.raises(ValueError, match="std"):
        NoisyModel(base, torch.ones(3), torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        NoisyModel(base, 1.0, None)
    with pytest.raises(ValueError, match="shared"):
        NoisyModel(base, std, torch.Generator(), shared=True)


def test_noise_shared_is_one_draw_per_member_with_the_given_std():
    base = Lorenz96(n=8, F=10.0, dt=0.01)
    x = _x(4000, 8)
    m = NoisyModel(base, 0.3, torch.Generator().manual_seed(1), shared=True)
    inc = m.step(x) - base.step(x)
    assert torch.allclose(inc, inc[:, :1].expand_as(inc), atol=1e-12)  # same draw on every variable
    assert abs(float(inc[:, 0].std()) - 0.3) < 0.02
    assert abs(float(inc[:, 0].mean())) < 0.02


def test_noise_independent_draws_per_variable_and_is_reproducible():
    base = Lorenz96(n=8, F=10.0, dt=0.01)
    x = _x(3000, 8)
    a = NoisyModel(base, 0.2, torch.Generator().manual_seed(5), shared=False)
    inc = a.step(x) - base.step(x)
    a2 = NoisyModel(base, 0.2, torch.Generator().manual_seed(5), shared=False)
    assert torch.equal(a2.step(x) - base.step(x), inc)
    corr = torch.corrcoef(inc[:, :2].T)[0, 1]
    assert abs(float(corr)) < 0.1 and abs(float(inc.std()) - 0.2) < 0.01


def test_noise_zero_std_is_the_model_and_bad_std_raises():
    base = Lorenz96(n=8, F=10.0, dt=0.01)
    x = _x(3, 8)
    m = NoisyModel(base, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(m.forecast(x, 3), base.forecast(x, 3))
    with pytest.raises(ValueError, match="std"):
        NoisyModel(base, -1.0, torch.Generator())
    with pytest.raises(ValueError, match="std"):
        NoisyModel(base, math.nan, torch.Generator())


def test_noisy_model_empirical_variance_matches_std():
    noisy = NoisyModel(Persistence(50), 0.7, torch.Generator().manual_seed(2))
    x = torch.zeros(400, 50, dtype=torch.float64)
    eta = noisy.step(x)
    assert abs(float(eta.var()) - 0.49) < 0.49 * 4 * math.sqrt(2 / eta.numel())
