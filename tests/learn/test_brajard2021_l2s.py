"""The Brajard et al. (2021) two-scale setup: L2SNet, the cycle regression and the experiment's helpers."""

from __future__ import annotations

import math

import pytest
import torch

from hybrida.experiment.brajard2021 import L2SSettings, nature_runs, relative_rmse
from hybrida.learn.cycle_regression import CycleRegression, fit_cycle_regression
from hybrida.models.lorenz96 import Lorenz96
from hybrida.nn.l2s import L2SNet


def _x(B: int = 6, n: int = 36, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return 3.0 * torch.randn(B, n, generator=torch.Generator().manual_seed(seed), dtype=dtype) + 2.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l2snet_shape_dtype_and_translation_equivariance(dtype):
    net = L2SNet(filters=5, hidden=4, seed=0).to(dtype).eval()
    z = _x(3, 12, dtype=dtype)
    out = net(z)
    assert out.shape == z.shape and out.dtype == dtype
    torch.testing.assert_close(net(torch.roll(z, 3, -1)), torch.roll(out, 3, -1))
    with pytest.raises(ValueError, match="kernel_size"):
        L2SNet(kernel_size=4)


def test_cycle_regression_forward_and_hybrid_follow_the_formulas():
    phys = Lorenz96(n=12, F=10.0, dt=0.01)
    net = L2SNet(filters=4, hidden=3, seed=1, batchnorm=False).double()
    reg = CycleRegression(phys, net, 5, mu=2.0, sd=3.0, out_std=1.5)
    x = _x(4, 12)
    g = net((x - 2.0) / 3.0)
    torch.testing.assert_close(reg(x), phys.forecast(x, 5) + 0.05 * 1.5 * g)
    hyb = reg.hybrid()  # every step of the physics followed by + dt * out_std * g
    torch.testing.assert_close(hyb.step(x), phys.step(x) + 0.01 * 1.5 * g)
    with pytest.raises(ValueError, match="substeps"):
        CycleRegression(phys, net, 0, 0.0, 1.0, 1.0)


def test_fit_l2s_learns_a_missing_forcing():
    truth, trunc = Lorenz96(n=12, F=11.0, dt=0.01), Lorenz96(n=12, F=10.0, dt=0.01)
    with torch.no_grad():
        x = truth.forecast(_x(1, 12, seed=3)[0], 500)
        traj = truth.forecast(x, 5 * 400, trajectory=True)[::5]
    net = L2SNet(seed=0)
    hyb, fr = fit_cycle_regression(trunc, net, [traj[:301]], [traj[300:]], 5, epochs=15, batch_size=32, lr=3e-3,
                                   patience=15, seed=0)
    assert fr.epochs_run == 15
    with torch.no_grad():
        start, target = traj[300:380], traj[320:400]  # lead 1 time unit
        err_trunc = float(((trunc.forecast(start, 100) - target) ** 2).mean().sqrt())
        err_hyb = float(((hyb.forecast(start, 100) - target) ** 2).mean().sqrt())
    assert err_hyb < 0.3 * err_trunc


def test_relative_rmse_formula():
    truth = _x(5, 7)
    assert relative_rmse(truth + 2.0, truth, var=8.0) == pytest.approx(math.sqrt(4.0 / 16.0))
    assert relative_rmse(truth, truth, var=1.0) == 0.0


def test_nature_runs_shape_and_independent_members():
    m = Lorenz96(n=10, F=8.0, dt=0.05)
    out = nature_runs(m, 4, 2, 3, torch.Generator().manual_seed(0), spinup=20)
    assert out.shape == (5, 3, 10)
    torch.testing.assert_close(out[1], m.forecast(out[0], 2))
    assert not torch.allclose(out[0, 0], out[0, 1])


def test_settings_validate_their_fields():
    assert L2SSettings().train == 10000
    with pytest.raises(ValueError, match="noise"):
        L2SSettings(noise="loud")
    with pytest.raises(ValueError, match="multiples of chunks"):
        L2SSettings(train=1001)
    with pytest.raises(ValueError, match="test_len"):
        L2SSettings(test_len=10)
