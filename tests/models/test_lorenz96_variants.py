"""Tests of the cubic Lorenz-96 variant (model-error truth)."""

from __future__ import annotations

import pytest
import torch

from hybrida.models.lorenz96 import Lorenz96
from hybrida.models.lorenz96_variants import Lorenz96Cubic


def _x(dtype=torch.float64, shape=(3, 40)):
    return 3.0 * torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype) + 2.0


@pytest.mark.parametrize("form", ["nonlocal", "local"])
def test_gamma_zero_is_lorenz96(form):
    x = _x()
    a = Lorenz96Cubic(F=8.5, gamma=0.0, form=form).step(x)
    b = Lorenz96(F=8.5).step(x)
    assert torch.allclose(a, b, atol=1e-12, rtol=0)


def test_tendency_formula():
    x = _x()
    m = Lorenz96Cubic(F=8.5, gamma=0.04)
    xm1, xp1, xm2 = torch.roll(x, 1, -1), torch.roll(x, -1, -1), torch.roll(x, 2, -1)
    ref = (xp1 - xm2) * xm1 - x + 8.5 - 0.04 * xm1 * x * xp1
    assert torch.allclose(m.tendency(x), ref, atol=1e-12)
    loc = Lorenz96Cubic(F=8.5, gamma=0.01, form="local")
    assert torch.allclose(loc.tendency(x), (xp1 - xm2) * xm1 - x + 8.5 - 0.01 * x**3, atol=1e-12)


def test_dtype_and_batching():
    m = Lorenz96Cubic()
    x = _x().float()
    y = m.step(x)
    assert y.dtype == torch.float32 and y.shape == x.shape
    y64 = m.step(_x())  # the float64 answer, to float32 round-off (measured 4e-8 of the max)
    torch.testing.assert_close(y.double(), y64, rtol=0, atol=1e-6 * float(y64.abs().max()))
    assert torch.allclose(m.step(x[1]), y[1])


def test_bad_input():
    with pytest.raises(ValueError, match="gamma"):
        Lorenz96Cubic(gamma=-1.0)
    with pytest.raises(ValueError, match="form"):
        Lorenz96Cubic(form="quartic")
    with pytest.raises(ValueError, match="last dimension"):
        Lorenz96Cubic().step(torch.zeros(39, dtype=torch.float64))
