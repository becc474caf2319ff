"""Contract tests every model must pass: adjoint, Taylor, batching, dtype/device, errors."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybrida.models import (
    KuramotoSivashinsky,
    Lorenz63,
    Lorenz96,
    Lorenz96TwoScale,
    adjoint,
    tangent_linear,
    tangent_linear_and_adjoint,
)

MODELS = {
    "lorenz63": Lorenz63(),
    "lorenz96": Lorenz96(),
    "lorenz96_two_scale": Lorenz96TwoScale(),
    "ks": KuramotoSivashinsky(),
}


@pytest.fixture(params=sorted(MODELS))
def model(request):
    return MODELS[request.param]


def _state(model, gen: torch.Generator, shape=()) -> torch.Tensor:
    x0 = model.initial_state()
    return x0 + 0.1 * torch.randn(*shape, model.n, generator=gen, dtype=torch.float64)


def test_registry_resolves_models():
    from hybrida.registry import MODELS as TABLE
    from hybrida.registry import resolve

    assert resolve(TABLE, "lorenz63", "model") is Lorenz63
    assert resolve(TABLE, "lorenz96", "model") is Lorenz96
    assert resolve(TABLE, "lorenz96_two_scale", "model") is Lorenz96TwoScale
    assert resolve(TABLE, "ks", "model") is KuramotoSivashinsky


def test_adjoint_dot_product(model):
    """<M' dx, dy> == <dx, M'^T dy> to round-off, over several steps."""
    gen = torch.Generator().manual_seed(0)
    x = _state(model, gen)
    dx = torch.randn(model.n, generator=gen, dtype=torch.float64)
    dy = torch.randn(model.n, generator=gen, dtype=torch.float64)
    lin = tangent_linear_and_adjoint(model, x, n_steps=3)
    lhs = torch.dot(lin.tl(dx), dy)
    rhs = torch.dot(dx, lin.adj(dy))
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), abs(rhs))
    # the stand-alone helpers agree with the bundled ones
    torch.testing.assert_close(tangent_linear(model, x, dx, 3), lin.tl(dx), rtol=1e-13, atol=0)
    torch.testing.assert_close(adjoint(model, x, dy, 3), lin.adj(dy), rtol=1e-13, atol=0)
    torch.testing.assert_close(lin.value, model.forecast(x, 3), rtol=1e-14, atol=0)


def test_taylor_quadratic(model):
    """||M(x + e dx) - M(x) - e M' dx|| falls ~100x per decade of e (second-order remainder)."""
    gen = torch.Generator().manual_seed(1)
    x = _state(model, gen)
    dx = torch.randn(model.n, generator=gen, dtype=torch.float64)
    dx = dx / torch.linalg.vector_norm(dx) * model.n**0.5
    m0 = model.step(x)
    tl = tangent_linear(model, x, dx)
    errs = [
        torch.linalg.vector_norm(model.step(x + e * dx) - m0 - e * tl).item()
        for e in (1e-2, 1e-3, 1e-4, 1e-5)
    ]
    ratios = [a / b for a, b in pairwise(errs)]
    assert all(60 < r < 160 for r in ratios), (errs, ratios)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(MODELS)),
    shape=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    seed=st.integers(0, 2**16),
)
def test_batched_step_equals_per_slice(name, shape, seed):
    """Stepping a (B, N, n) batch equals stepping each state on its own."""
    model = MODELS[name]
    x = _state(model, torch.Generator().manual_seed(seed), tuple(shape))
    out = model.step(x)
    assert out.shape == x.shape
    flat_x, flat_out = x.reshape(-1, model.n), out.reshape(-1, model.n)
    for i in range(flat_x.shape[0]):
        torch.testing.assert_close(flat_out[i], model.step(flat_x[i]), rtol=1e-13, atol=1e-13)


def test_forecast_matches_repeated_step(model):
    x = model.initial_state()
    traj = model.forecast(x, 3, trajectory=True)
    assert traj.shape == (4, model.n)
    torch.testing.assert_close(traj[-1], model.step(model.step(model.step(x))), rtol=0, atol=0)


def test_dtype_and_device_follow_input(model):
    x64 = model.initial_state()
    x32 = model.initial_state(torch.float32)
    assert x32.dtype == torch.float32
    y32 = model.step(x32)
    assert y32.dtype == torch.float32 and y32.device == x32.device
    torch.testing.assert_close(y32.double(), model.step(x64), rtol=1e-4, atol=1e-4)
    # 'meta' tensors carry no data: any hard-coded device or dtype would show here
    y = model.step(torch.empty(2, model.n, device="meta", dtype=torch.float32))
    assert y.device.type == "meta" and y.dtype == torch.float32 and y.shape == (2, model.n)


def test_bad_state_raises(model):
    with pytest.raises(ValueError, match="last dimension"):
        model.step(torch.zeros(2, model.n + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="floating|float"):
        model.step(torch.zeros(model.n, dtype=torch.int64))
    with pytest.raises(TypeError):
        model.step([0.0] * model.n)


def test_initial_state_deterministic_and_cached(model):
    a = model.initial_state()
    assert a.shape == (model.n,) and a.dtype == torch.float64
    assert torch.isfinite(a).all()
    a += 1.0  # mutating the returned tensor must not corrupt the cache
    b = type(model)().initial_state()
    torch.testing.assert_close(model.initial_state(), b, rtol=0, atol=0)
