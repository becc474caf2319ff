"""Helpers of the Brajard et al. (2021) two-scale benchmark (benchmarks/brajard2021_l2s.py, model_error.py part 2)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from benchmarks import brajard2021_l2s as l2s
from benchmarks import model_error as me
from hybrida.models.lorenz96 import Lorenz96


def _x(B: int = 6, n: int = 36, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return 3.0 * torch.randn(B, n, generator=torch.Generator().manual_seed(seed), dtype=dtype) + 2.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l2snet_shape_dtype_and_translation_equivariance(dtype):
    net = l2s.L2SNet(filters=5, hidden=4, seed=0).to(dtype).eval()
    z = _x(3, 12, dtype=dtype)
    out = net(z)
    assert out.shape == z.shape and out.dtype == dtype
    torch.testing.assert_close(net(torch.roll(z, 3, -1)), torch.roll(out, 3, -1))
    with pytest.raises(ValueError, match="kernel_size"):
        l2s.L2SNet(kernel_size=4)


def test_cycle_regression_forward_and_hybrid_follow_the_formulas():
    phys = Lorenz96(n=12, F=10.0, dt=0.01)
    net = l2s.L2SNet(filters=4, hidden=3, seed=1, batchnorm=False).double()
    reg = l2s.CycleRegression(phys, net, 5, mu=2.0, sd=3.0, out_std=1.5)
    x = _x(4, 12)
    g = net((x - 2.0) / 3.0)
    torch.testing.assert_close(reg(x), phys.forecast(x, 5) + 0.05 * 1.5 * g)
    hyb = reg.hybrid()  # every step of the physics followed by + dt * out_std * g
    torch.testing.assert_close(hyb.step(x), phys.step(x) + 0.01 * 1.5 * g)
    with pytest.raises(ValueError, match="substeps"):
        l2s.CycleRegression(phys, net, 0, 0.0, 1.0, 1.0)


def test_fit_l2s_learns_a_missing_forcing():
    truth, trunc = Lorenz96(n=12, F=11.0, dt=0.01), Lorenz96(n=12, F=10.0, dt=0.01)
    with torch.no_grad():
        x = truth.forecast(_x(1, 12, seed=3)[0], 500)
        traj = truth.forecast(x, 5 * 400, trajectory=True)[::5]
    args = SimpleNamespace(seed=0, epochs2=15, batch2=32, lr2=3e-3, patience2=15, fit_time2=None)
    hyb, fr = l2s.fit_l2s(trunc, [traj[:301]], [traj[300:]], 5, args)
    assert fr.epochs_run == 15
    with torch.no_grad():
        start, target = traj[300:380], traj[320:400]  # lead 1 time unit
        err_trunc = float(((trunc.forecast(start, 100) - target) ** 2).mean().sqrt())
        err_hyb = float(((hyb.forecast(start, 100) - target) ** 2).mean().sqrt())
    assert err_hyb < 0.3 * err_trunc


def test_relative_rmse_formula():
    truth = _x(5, 7)
    assert l2s.relative_rmse(truth + 2.0, truth, var=8.0) == pytest.approx(math.sqrt(4.0 / 16.0))
    assert l2s.relative_rmse(truth, truth, var=1.0) == 0.0


def test_nature_runs_shape_and_independent_members():
    m = Lorenz96(n=10, F=8.0, dt=0.05)
    out = l2s.nature_runs(m, 4, 2, 3, torch.Generator().manual_seed(0), spinup=20)
    assert out.shape == (5, 3, 10)
    torch.testing.assert_close(out[1], m.forecast(out[0], 2))
    assert not torch.allclose(out[0, 0], out[0, 1])


def test_splice_part2_keeps_parts_1_and_3(tmp_path):
    doc = tmp_path / "b.md"
    doc.write_text("# B\n\n<!-- model-error:start -->\n## M\n\nhead\n\n### 1. one\n\nP1\n\n### 2. two\n\nOLD\n\n"
                   "### 3. three\n\nP3\n<!-- model-error:end -->\n\n<!-- x:start -->\nX\n<!-- x:end -->\n")
    body = me.splice_part2("### 2. two\n\nNEW\n", doc)
    assert body == "## M\n\nhead\n\n### 1. one\n\nP1\n\n### 2. two\n\nNEW\n\n### 3. three\n\nP3"
    doc.write_text("# B\n")
    with pytest.raises(ValueError, match="no model-error section"):
        me.splice_part2("### 2. two\n", doc)
