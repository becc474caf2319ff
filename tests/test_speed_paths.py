"""The fast paths (fused ops, TorchScript loops, batched sweeps) give the plain paths' numbers bit for bit."""

from __future__ import annotations

import pytest
import torch

from hybrida.models import Lorenz63
from hybrida.models.integrators import plain_tensor_path, rk4_step


def _plain_l63(x: torch.Tensor, sigma=10.0, rho=28.0, beta=8.0 / 3.0) -> torch.Tensor:
    x1, x2, x3 = x.unbind(-1)
    return torch.stack((sigma * (x2 - x1), x1 * (rho - x3) - x2, x1 * x2 - beta * x3), -1)


def _plain_rk4(f, x, dt):
    k1 = f(x)
    k2 = f(x + 0.5 * dt * k1)
    k3 = f(x + 0.5 * dt * k2)
    k4 = f(x + dt * k3)
    return x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def _states(shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, 3, generator=g, dtype=torch.float64) * torch.tensor([8.0, 9.0, 9.0], dtype=torch.float64)
    return (x + torch.tensor([0.0, 0.0, 25.0], dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(), (7,), (4, 10)])
def test_l63_tendency_and_step_equal_the_textbook_formulas_bit_for_bit(shape, dtype):
    m = Lorenz63(sigma=9.5, rho=27.0, beta=2.5, dt=0.013)
    x = _states(shape, dtype)

    def f(z):
        return _plain_l63(z, 9.5, 27.0, 2.5)

    assert torch.equal(m.tendency(x), f(x))
    assert torch.equal(m.step(x), _plain_rk4(f, x, 0.013))
    assert torch.equal(rk4_step(lambda z, t: f(z), x, 0.0, 0.013), _plain_rk4(f, x, 0.013))


@pytest.mark.parametrize("shape", [(), (64,), (8, 10)])
def test_l63_scripted_forecast_equals_python_steps(shape):
    from hybrida.models.lorenz63 import L63_RK4_SCRIPTED

    assert L63_RK4_SCRIPTED is not None  # this torch compiles the loop (else forecasts fall back to Python)
    m = Lorenz63()
    x = _states(shape)
    ref = x
    for _ in range(60):
        ref = _plain_rk4(_plain_l63, ref, m.dt)
    with torch.no_grad():
        assert torch.equal(m.forecast(x, 60), ref)
    assert torch.equal(m.forecast(x, 60), ref)  # grad mode on, x not requiring grad: scripted too
    traj = m.forecast(x, 60, trajectory=True)
    assert torch.equal(traj[-1], ref) and traj.shape == (61, *x.shape)


def test_the_scripted_path_is_left_when_gradients_are_recorded():
    m = Lorenz63()
    x = _states((5,)).requires_grad_(True)
    assert not plain_tensor_path(x)
    with torch.no_grad():
        assert plain_tensor_path(x)
    y = m.forecast(x, 30)
    (g,) = torch.autograd.grad(y.square().sum(), x)
    # reverse mode through the Python steps equals a finite-difference directional derivative
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    eps = 1e-6
    with torch.no_grad():
        fd = (m.forecast(x + eps * v, 30).square().sum() - m.forecast(x - eps * v, 30).square().sum()) / (2 * eps)
    assert float((g * v).sum()) == pytest.approx(float(fd), rel=1e-6)
    # torch.func transforms see wrapped tensors and take the Python steps (same forward numbers)
    tl = torch.func.jvp(lambda z: m.forecast(z, 30), (x.detach(),), (v,))
    assert torch.equal(tl[0], m.forecast(x.detach(), 30))


def test_draw_errors_equals_observe_draws_and_leaves_the_generator_where_observe_does():
    from hybrida.experiment.vectorized import draw_errors
    from hybrida.observations.base import Observation
    from hybrida.observations.errors import CorrelatedError, DiagonalError

    for p in (3, 16, 41):
        var = torch.rand(p, generator=torch.Generator().manual_seed(p), dtype=torch.float64) + 0.5
        for err in (DiagonalError(var), CorrelatedError(torch.diag(var))):
            net = Observation(y=torch.full((p,), float("nan"), dtype=torch.float64), operator=lambda x: x, error=err)
            g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
            got = draw_errors(net, 25, g1)
            ref = torch.stack([err.sample((), g2) for _ in range(25)])
            assert torch.equal(got, ref)
            assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


def _sweep(preset: str, method: list[str], cycles: int, infls: tuple[float, ...], seeds=(1, 2)):
    from hybrida.experiment.config import load_config

    return [
        load_config(preset, overrides=[*method, f"method.params.infl={i}", f"cycles={cycles}", "burn_in=0.5"])
        .model_copy(update={"seed": s})
        for s in seeds
        for i in infls
    ]


@pytest.mark.parametrize(
    ("preset", "method", "infls"),
    [
        ("lorenz63/sakov2012", ["method.name=etkf", "method.params.N=10"], (1.02, 1.1)),
        # infl 1e8 diverges: the reset of diverged runs runs too
        ("lorenz96/sakov2008", ["method.name=etkf", "method.params.N=10"], (1.02, 1e8)),
        ("lorenz96/sakov2008", ["method.name=letkf", "method.params.N=10", "method.params.loc_rad=4"], (1.02,)),
    ],
)
def test_vectorised_fast_paths_equal_the_plain_batched_path_bit_for_bit(monkeypatch, preset, method, infls):
    """Truth integrated beside the ensembles and one-pass observations == nature run + observe per cycle."""
    import hybrida.experiment.vectorized as vec

    configs = _sweep(preset, method, 30, infls, (1,) if 1e8 in infls else (1, 2))
    fast = vec.run_vectorized(configs)
    assert vec.truth_inline([vec.prepare(configs[0])])
    monkeypatch.setattr(vec, "truth_inline", lambda preps: False)
    no_inline = vec.run_vectorized(configs)
    monkeypatch.setattr(vec, "fixed_network", lambda system: None)
    plain = vec.run_vectorized(configs)
    keys = ("rmse_a", "rmse_f", "spread_a", "spread_f", "clim_std", "diverged", "diverged_cycle", "n_scored")
    for a, b, c in zip(fast, no_inline, plain):
        assert [a[k] for k in keys] == [b[k] for k in keys] == [c[k] for k in keys]
    if 1e8 in infls:
        assert any(s["diverged"] for s in fast) and not all(s["diverged"] for s in fast)


def test_two_pass_spread_equals_the_one_pass_spread_to_rounding():
    from hybrida.assimilation.base import state_spread
    from hybrida.metrics import spread, spread_about_mean

    g = torch.Generator().manual_seed(3)
    E = 5.0 + 3.0 * torch.randn(7, 20, 40, generator=g, dtype=torch.float64)
    got = spread_about_mean(E, E.mean(-2))
    torch.testing.assert_close(got, spread(E), rtol=1e-14, atol=0)
    torch.testing.assert_close(got, state_spread(E), rtol=1e-14, atol=0)
    assert not torch.equal(got, 0.5 * spread(E))
