"""The QG emulator (issue 16 part 5): a periodic 2-D CNN learned from an LETKF reanalysis of the QG twin."""

from __future__ import annotations

import math

import pytest
import torch

from hybrida.experiment.surrogate_config import QUICK as SURROGATE_QUICK
from hybrida.experiment.surrogate_pipeline import load_surrogate_config, run_surrogate_experiment
from hybrida.learn.train import auto_loss_scale, fit
from hybrida.models.surrogate import SurrogateModel
from hybrida.nn import NETWORKS, GridCNN

#: the qg_emulator preset scaled down to 32x32x2 (`hybrida learn surrogate qg_emulator --quick`)
QUICK = SURROGATE_QUICK["qg_emulator"]


def test_grid_cnn_is_registered_translation_equivariant_and_checks_shapes():
    assert NETWORKS["GridCNN"] is GridCNN
    net = GridCNN(n=2 * 8 * 6, ny=8, channels=[4], kernels=[3, 3], seed=0)
    z = torch.randn(3, 96, generator=torch.Generator().manual_seed(0))
    out = net(z)
    assert out.shape == (3, 96)
    grid = z.reshape(3, 2, 8, 6)
    shifted = torch.roll(grid, shifts=(2, 1), dims=(2, 3)).reshape(3, 96)
    ref = torch.roll(out.reshape(3, 2, 8, 6), shifts=(2, 1), dims=(2, 3)).reshape(3, 96)
    assert torch.allclose(net(shifted), ref, atol=1e-6)
    assert net(z[0]).shape == (96,)
    with pytest.raises(ValueError, match="square"):
        GridCNN(n=2 * 8 * 6)
    with pytest.raises(ValueError, match="input must be"):
        net(torch.randn(3, 95))
    rebuilt = GridCNN(**net.config)
    assert rebuilt.shape == net.shape


def test_auto_loss_scale_lets_adam_learn_states_of_size_1e_5():
    """A linear surrogate of a linear system with states ~1e-5: with the plain loss its gradients
    (~1e-12) sit far below Adam's eps and it barely learns; with the state variance it does."""
    g = torch.Generator().manual_seed(0)
    theta = 0.3
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    A = torch.block_diag(rot, rot, rot).double() * 0.999
    x = [1e-5 * torch.randn(6, generator=g, dtype=torch.float64)]
    for _ in range(299):
        x.append(A @ x[-1] + 1e-7 * torch.randn(6, generator=g, dtype=torch.float64))
    traj = torch.stack(x)
    assert auto_loss_scale(traj) == pytest.approx(float((traj - traj.mean(0)).square().mean()))
    assert auto_loss_scale(torch.randn(50, 4, generator=g)) == 1.0  # O(1) states: plain loss
    drop = {}
    for label, scale in (("plain", 1.0), ("auto", auto_loss_scale(traj))):
        net = torch.nn.Linear(6, 6)
        with torch.no_grad():
            net.weight.zero_()
            net.bias.zero_()
        sur = SurrogateModel.from_trajectory(net, traj[:240], 1.0, "increment")
        res = fit(sur, traj[:240], traj[240:], epochs=40, batch_size=32, lr=1e-2, progress=False,
                  patience=40, loss_scale=scale)
        drop[label] = res.best_loss / res.history["valid"][0]
    assert drop["plain"] > 0.5, drop  # measured 0.99: stalled
    assert drop["auto"] < 0.1, drop  # measured 0.009
    with pytest.raises(ValueError, match="loss_scale"):
        fit(torch.nn.Linear(6, 6), traj.float(), epochs=1, loss_scale=0.0, progress=False)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    cfg = load_surrogate_config("qg_emulator", QUICK)
    out = tmp_path_factory.mktemp("qg_emulator")
    return cfg, out, run_surrogate_experiment(cfg, out, plots=False)


def test_qg_emulator_beats_persistence_and_cycles_like_the_true_model(quick_run):
    """One-day forecasts from the true states: error 0.56 of persistence's trained, 0.97 with
    lr 1e-9 (untrained). LETKF rmse_a with the emulator / with the true model: 0.98 trained,
    1.91 untrained (seed 3000, 2026-12-04)."""
    _, out, s = quick_run
    assert s["n"] == 2 * 32 * 32 and s["network"] == "GridCNN"
    assert (out / "surrogate.pt").exists() and (out / "summary.json").exists()
    ratio = s["skill_cycle1_from_truth"] / s["skill_cycle1_persistence_from_truth"]
    assert ratio < 0.75, ratio
    assert s["rmse_ratio"] < 1.5, s["rmse_ratio"]
    for key in ("rmse_a_model", "skill_cycle1_surrogate", "skill_cycle1_model", "skill_cycle1_persistence"):
        assert math.isfinite(s[key]) and s[key] > 0, key


def test_cli_quick_names_the_presets_that_have_one(tmp_path):
    from typer.testing import CliRunner

    from hybrida.cli import app

    res = CliRunner().invoke(app, ["learn", "surrogate", "demo", "--quick", "--out", str(tmp_path / "d")])
    assert res.exit_code == 2, res.output
    assert "has no quick variant" in res.output and "qg_emulator" in res.output
    assert not (tmp_path / "d").exists()
