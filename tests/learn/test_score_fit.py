"""Denoising-score-matching fit: the loss falls, early stopping, checkpoint/resume, save/load of the prior."""

from __future__ import annotations

import math

import pytest
import torch

from hybrida.assimilation.learned.score import NetworkPrior
from hybrida.learn.score import fit_score, load_score_prior, save_score_prior, windows_of
from hybrida.models.lorenz96 import Lorenz96
from hybrida.nn.score import ScoreNet


@pytest.fixture(scope="module")
def l96_windows() -> tuple[torch.Tensor, torch.Tensor]:
    model = Lorenz96(40, 8.0, 0.05)
    x0 = 8.0 + torch.randn(40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        run = model.forecast(model.forecast(x0, 500), 1499, trajectory=True)
    return windows_of(run[:1200], 4, 1), windows_of(run[1200:], 4, 2)


def test_windows_of_cuts_overlapping_windows() -> None:
    traj = torch.arange(12.0).view(6, 2)
    w = windows_of(traj, 3, 2)
    assert w.shape == (2, 3, 2)
    assert torch.equal(w[1], traj[2:5])


def test_training_reduces_the_denoising_loss(l96_windows, tmp_path) -> None:
    """60 Adam steps lower the validation denoising loss well below the untrained network's (ε̂ = 0: loss 1)."""
    train, valid = l96_windows
    torch.manual_seed(0)
    net = ScoreNet(8, 1, embed=8)
    fit = fit_score(net, train, valid, loc=2.35, scale=3.6, batch=32, lr=3e-3, max_steps=60, valid_every=20,
                    generator=torch.Generator().manual_seed(1), checkpoint=tmp_path / "ck.pt")
    assert fit.history[0]["valid"] == pytest.approx(1.0, abs=0.05)  # zero-initialised output layer
    assert fit.best_valid < 0.75 * fit.history[0]["valid"]
    assert fit.steps == 60 and (tmp_path / "ck.pt").is_file()
    # lr = 0: training disabled, the loss does not move
    torch.manual_seed(0)
    frozen = fit_score(ScoreNet(8, 1, embed=8), train, valid, loc=2.35, scale=3.6, batch=32, lr=0.0,
                       lr_final=0.0, max_steps=20, valid_every=20, generator=torch.Generator().manual_seed(1))
    assert frozen.best_valid > 0.95


def test_resume_continues_from_the_checkpoint(l96_windows, tmp_path) -> None:
    train, valid = l96_windows
    # constant learning rate: the interrupted run's cosine horizon (its max_steps) then plays no role
    kw = {"loc": 2.35, "scale": 3.6, "batch": 16, "lr": 3e-3, "lr_final": 3e-3, "valid_every": 10,
          "checkpoint": tmp_path / "ck.pt"}
    torch.manual_seed(0)
    full = fit_score(ScoreNet(4, 1, embed=8), train, valid, max_steps=20, generator=torch.Generator().manual_seed(2),
                     **kw)
    (tmp_path / "ck.pt").unlink()
    torch.manual_seed(0)
    part = fit_score(ScoreNet(4, 1, embed=8), train, valid, max_steps=10, generator=torch.Generator().manual_seed(2),
                     **kw)
    torch.manual_seed(0)
    resumed = fit_score(ScoreNet(4, 1, embed=8), train, valid, max_steps=20, resume=True,
                        generator=torch.Generator().manual_seed(99), **kw)
    assert part.steps == 10 and resumed.steps == 20
    assert resumed.history[-1]["valid"] == pytest.approx(full.history[-1]["valid"], rel=1e-4)


def test_save_and_load_round_trip(tmp_path) -> None:
    net = ScoreNet(4, 1, embed=8)
    prior = NetworkPrior(net, 4, 40, 2.35, 3.6, spacing=2)
    path = save_score_prior(prior, tmp_path / "prior.pt", info={"train_s": 1.5})
    back = load_score_prior(path)
    assert (back.length, back.n, back.loc, back.scale, back.spacing) == (4, 40, 2.35, 3.6, 2)
    z, t = torch.randn(3, 6, 40), torch.rand(3)
    assert torch.allclose(back.eps(z, t), prior.eps(z, t))
    with pytest.raises(ValueError, match="no file"):
        load_score_prior(tmp_path / "missing.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a hybrida score prior"):
        load_score_prior(tmp_path / "other.pt")


def test_fit_rejects_mismatched_windows(l96_windows) -> None:
    train, valid = l96_windows
    with pytest.raises(ValueError, match="differ"):
        fit_score(ScoreNet(4, 1), train, valid[:, :3], loc=0.0, scale=1.0)
    with pytest.raises(ValueError, match="scale > 0"):
        fit_score(ScoreNet(4, 1), train, valid, loc=0.0, scale=-1.0)
    with pytest.raises(ValueError, match=r"\(W, L, n\)"):
        fit_score(ScoreNet(4, 1), train[0], valid, loc=0.0, scale=1.0)
    assert math.isfinite(float(train.mean()))


def test_weight_average_is_the_exponential_average_of_the_updates() -> None:
    """Closed form: θ̄_k = β_k θ̄_{k-1} + (1 - β_k) θ_k with β_k = min(decay, (1 + k) / (10 + k))."""
    from hybrida.learn.score import WeightAverage

    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.zero_()
    avg = WeightAverage(net, 0.5)
    expected = torch.zeros_like(net.weight)
    for k, value in enumerate([1.0, 3.0, -2.0, 5.0], start=1):
        with torch.no_grad():
            net.weight.fill_(value)
        avg.update(net)
        beta = min(0.5, (1 + k) / (10 + k))
        expected = beta * expected + (1 - beta) * value
    assert torch.allclose(avg.net.weight, expected)
    assert not torch.allclose(avg.net.weight, net.weight)  # the average is not the current weights
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(net, 1.0)


def test_lr_factor_warms_up_then_decays() -> None:
    from hybrida.learn.score import lr_factor

    kw = {"lr": 1e-2, "lr_final": 1e-3, "max_steps": 100}
    assert lr_factor(0, warmup=10, **kw) == pytest.approx(0.1)
    assert lr_factor(4, warmup=10, **kw) == pytest.approx(0.5 * lr_factor(4, **kw))
    assert lr_factor(0, **kw) == pytest.approx(1.0)
    assert lr_factor(50, **kw) == pytest.approx(0.55)
    assert lr_factor(100, warmup=10, **kw) == pytest.approx(0.1)
    assert lr_factor(500, **kw) == pytest.approx(0.1)


def test_ema_fit_returns_the_averaged_weights(l96_windows) -> None:
    """With ema the returned weights are the average validated (their loss is best_valid), not the raw ones."""
    train, valid = l96_windows
    kw = {"loc": 2.35, "scale": 3.6, "batch": 16, "lr": 1e-2, "lr_final": 1e-2, "max_steps": 40, "valid_every": 40,
          "patience": 5}
    torch.manual_seed(0)
    raw = fit_score(ScoreNet(4, 1, embed=8), train, valid, generator=torch.Generator().manual_seed(3), **kw)
    torch.manual_seed(0)
    avg = fit_score(ScoreNet(4, 1, embed=8), train, valid, ema=0.9, generator=torch.Generator().manual_seed(3), **kw)
    assert raw.best_step == avg.best_step == 40  # both improved on the untrained network
    # same seeds, same raw trajectory: only the averaging differs
    w_raw, w_avg = raw.net.out.conv.weight, avg.net.out.conv.weight
    assert not torch.allclose(w_raw, w_avg, atol=1e-4)
    # the returned network's validation loss is the recorded best (the average was validated and kept)
    vgen = torch.Generator().manual_seed(12345)
    z = ((valid - 2.35) / 3.6).float()
    t, e = torch.rand(z.shape[0], generator=vgen), torch.randn(z.shape, generator=vgen)
    from hybrida.learn.score import denoising_loss

    with torch.no_grad():
        loss = float(denoising_loss(avg.net, z, t, e))
    assert loss == pytest.approx(avg.best_valid, rel=1e-4)
