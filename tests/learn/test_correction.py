"""Tests of the hybrid model physics + learned correction (offline)."""

from __future__ import annotations

import pytest
import torch

from hybrida.learn.correction import correction_targets, fit_correction
from hybrida.models.corrected import CorrectedModel
from hybrida.models.lorenz96 import Lorenz96
from hybrida.models.lorenz96_variants import Lorenz96Cubic
from hybrida.nn import PolyConv, ResidualCNN


def _x(shape=(4, 40), dtype=torch.float64, seed=0):
    return 3.0 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) + 2.0


def _true_theta(net: PolyConv, gamma: float, dF: float, scale: float) -> torch.Tensor:
    theta = torch.zeros(net.n_weights, dtype=torch.float64)
    theta[net.index(-1, 0, 1)] = -gamma * scale**3
    theta[net.index()] = dF
    return theta


@pytest.mark.parametrize("kind", ["resolvent", "tendency"])
def test_zero_correction_is_physics(kind):
    x = _x()
    hyb = CorrectedModel(Lorenz96(), PolyConv(), kind, in_mean=1.0, in_std=3.0, out_std=2.0)
    assert torch.equal(hyb.step(x), Lorenz96().step(x)) if kind == "resolvent" else torch.allclose(
        hyb.step(x), Lorenz96().step(x), atol=1e-13, rtol=0
    )


def test_true_tendency_correction_reproduces_truth():
    x = _x()
    net = PolyConv(3, 3)
    with torch.no_grad():
        net.theta.copy_(_true_theta(net, 0.04, 0.5, 4.0))
    hyb = CorrectedModel(Lorenz96(F=8.0), net, "tendency", in_std=4.0)
    assert torch.allclose(hyb.step(x), Lorenz96Cubic(F=8.5, gamma=0.04).step(x), atol=1e-12, rtol=0)
    # per-member weights: member 0 true, member 1 zero
    theta = torch.stack((net.theta.detach(), torch.zeros(net.n_weights, dtype=torch.float64)))
    y = hyb.step_with(x[:2], theta)
    assert torch.allclose(y[0], Lorenz96Cubic(F=8.5, gamma=0.04).step(x[0]), atol=1e-12)
    assert torch.allclose(y[1], Lorenz96().step(x[1]), atol=1e-12)


def test_polyconv_translation_equivariant_and_batched():
    net = PolyConv(3, 3, seed=1, scale=0.1)
    z = _x((3, 40))
    g = net(z)
    assert torch.allclose(net(torch.roll(z, 5, -1)), torch.roll(g, 5, -1), atol=1e-12)
    th = torch.randn(3, net.n_weights, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    batched = net.apply_weights(th, z)
    for j in range(3):
        assert torch.allclose(batched[j], net.apply_weights(th[j], z[j]), atol=1e-12)


def test_tangent_linear_and_adjoint():
    net = ResidualCNN(channels=4, blocks=1, seed=0)  # float32 weights, float64 state
    hyb = CorrectedModel(Lorenz96(), net, "tendency", in_mean=2.0, in_std=3.6, out_std=0.5)
    x, dx = _x((40,)), _x((40,), seed=3) - 2.0
    y, jv = torch.func.jvp(hyb.step, (x,), (dx,))
    assert y.dtype == torch.float64
    with torch.no_grad():
        errs = [float((hyb.step(x + e * dx) - y - e * jv).norm()) for e in (1e-2, 1e-3)]
    assert errs[1] < errs[0] / 50  # second-order Taylor remainder
    dy = _x((40,), seed=4)
    _, vjp = torch.func.vjp(hyb.step, x)
    (adj,) = vjp(dy)
    lhs, rhs = float((jv @ dy).detach()), float((dx @ adj).detach())
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)


def test_fit_recovers_known_model_error():
    truth = Lorenz96Cubic(F=8.5, gamma=0.04)
    with torch.no_grad():
        traj = truth.forecast(truth.forecast(truth.initial_state(), 200), 400, trajectory=True)
    net = PolyConv(3, 3)
    hyb, _ = fit_correction(Lorenz96(), net, traj, kind="tendency", in_mean=0.0, in_std=4.0, out_std=1.0,
                              epochs=150, batch_size=100, lr=2e-2, patience=30, progress=False)
    target = _true_theta(net, 0.04, 0.5, 4.0)
    err = float((net.theta.detach() - target).norm() / target.norm())
    assert err < 0.2, err  # zero weights: 1.0
    resid = correction_targets(Lorenz96(), traj)
    with torch.no_grad():
        hyb_resid = traj[1:] - hyb.forecast(traj[:-1], 1)
    assert float(hyb_resid.std()) < 0.1 * float(resid.std())


@pytest.mark.parametrize("kind", ["resolvent", "tendency"])
def test_dtype_follows_input_and_float32_matches_float64(kind):
    net = PolyConv(3, 3, seed=1, scale=0.1)
    hyb = CorrectedModel(Lorenz96(), net, kind, in_mean=2.0, in_std=3.0, out_std=0.5)
    with torch.no_grad():
        y32, y64 = hyb.step(_x().float()), hyb.step(_x())
    assert y32.dtype == torch.float32
    # float64 weights cast to float32 with the state: float32 round-off, measured 1e-7 of the max
    torch.testing.assert_close(y32.double(), y64, rtol=0, atol=1e-6 * float(y64.abs().max()))


def test_bad_input():
    with pytest.raises(ValueError, match="kind"):
        CorrectedModel(Lorenz96(), PolyConv(), "increment")
    with pytest.raises(TypeError, match="physics"):
        CorrectedModel(object(), PolyConv())
    with pytest.raises(ValueError, match="in_std"):
        CorrectedModel(Lorenz96(), PolyConv(), in_std=0.0)
    with pytest.raises(ValueError, match="apply_weights"):
        CorrectedModel(Lorenz96(), ResidualCNN(channels=2, blocks=0)).step_with(_x(), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="last dimension"):
        CorrectedModel(Lorenz96(), PolyConv()).step(torch.zeros(3, 39, dtype=torch.float64))
    with pytest.raises(ValueError, match="kernel_size"):
        PolyConv(3, 4)
    with pytest.raises(ValueError, match="analyses"):
        fit_correction(Lorenz96(), PolyConv(), torch.zeros(2, 40))
