"""Tests of online learning of a model-error correction (augmented ETKF, weak-constraint 4D-Var)."""

from __future__ import annotations

import pytest
import torch

from hybrida import metrics
from hybrida.assimilation.ensemble.etkf import ETKF
from hybrida.experiment.loop import assimilate
from hybrida.learn.online import OnlineCorrectionEnsemble, weak4dvar_online
from hybrida.models.corrected import CorrectedModel
from hybrida.models.lorenz96 import Lorenz96
from hybrida.models.lorenz96_variants import Lorenz96Cubic
from hybrida.nn import PolyConv
from hybrida.observations.alternating import AlternatingHalvesObs

GAMMA, SCALE = 0.04, 4.0


def _true_theta() -> torch.Tensor:
    net = PolyConv(3, 3)
    theta = torch.zeros(net.n_weights, dtype=torch.float64)
    theta[net.index(-1, 0, 1)] = -GAMMA * SCALE**3
    theta[net.index()] = 0.5
    return theta


def _twin(K: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    m = Lorenz96Cubic(F=8.5, gamma=GAMMA)
    with torch.no_grad():
        truth = m.forecast(m.forecast(m.initial_state(), 300), K, trajectory=True)
    net = AlternatingHalvesObs(40, std=0.2)
    return truth, [net.observe(truth[k], k, gen) for k in range(1, K + 1)]


def test_forecast_matches_hybrid_per_member():
    m = OnlineCorrectionEnsemble(in_mean=0.0, in_std=SCALE, inner_params={"N": 5})
    z = m.initial_state(Lorenz96().initial_state(), 1.0, torch.Generator().manual_seed(0))
    assert z.shape == (5, 40 + m.n_params)
    out = m.forecast(Lorenz96(), z, 3)
    assert torch.equal(out[:, 40:], z[:, 40:])
    for j in range(5):
        net = PolyConv(3, 3)
        with torch.no_grad():
            net.theta.copy_(z[j, 40:])
        ref = CorrectedModel(Lorenz96(), net, "tendency", in_std=SCALE).forecast(z[j, :40], 3)
        assert torch.allclose(out[j, :40], ref, atol=1e-12)


def test_true_correction_is_kept_and_beats_physics():
    truth, obs = _twin(200)
    theta = _true_theta()
    m = OnlineCorrectionEnsemble(in_mean=0.0, in_std=SCALE, theta_mean=theta, theta_std=1e-3, inner_params={"N": 20, "infl": 1.02})
    g = torch.Generator().manual_seed(1)
    r = assimilate(Lorenz96(), m, truth[0], obs, truth=truth, burn_in=50, generator=g)
    base = assimilate(Lorenz96(), ETKF(N=20, infl=1.02), truth[0], obs, truth=truth, burn_in=50,
                      generator=torch.Generator().manual_seed(1))
    assert float((m.theta - theta).norm() / theta.norm()) < 0.05
    assert r.rmse_a < 0.7 * base.rmse_a
    d = m.diagnostics()
    assert {"theta_norm", "theta_spread"} <= set(d)


def test_learns_from_zero():
    truth, obs = _twin(400, seed=2)
    # default normalisation: in_mean / in_std from the initial state
    m = OnlineCorrectionEnsemble(theta_std=0.01, inner_params={"N": 40, "adaptive": True}, param_noise=0.002)
    r = assimilate(Lorenz96(), m, truth[0], obs, truth=truth, generator=torch.Generator().manual_seed(3))
    base = assimilate(Lorenz96(), ETKF(N=40, adaptive=True), truth[0], obs, truth=truth,
                      generator=torch.Generator().manual_seed(3))
    assert r.diverged_at is None
    last = slice(301, 401)
    e_on = float(metrics.rmse(r.mean[last], truth[last]).mean())
    e_phys = float(metrics.rmse(base.mean[last], truth[last]).mean())
    assert e_on < 0.8 * e_phys
    # the learned mean weights make better forecasts than the physics alone
    starts, ends = truth[300:390:10], truth[304:394:10]
    with torch.no_grad():
        e_hyb = float(metrics.rmse(m.corrected_model(Lorenz96()).forecast(starts, 4), ends).mean())
        e_bare = float(metrics.rmse(Lorenz96().forecast(starts, 4), ends).mean())
    assert e_hyb < 0.7 * e_bare


def test_weak4dvar_keeps_true_weights():
    truth, obs = _twin(16, seed=4)
    net = PolyConv(3, 3)
    hyb = CorrectedModel(Lorenz96(), net, "tendency", in_std=SCALE)
    theta = _true_theta()
    res = weak4dvar_online(hyb, obs, truth[0], lag=4, b=0.1, q=0.01, p=1e-3, theta0=theta, max_iter=30)
    assert res.analyses.shape == (5, 40) and res.theta.shape == (5, net.n_weights)
    assert float((res.theta[-1] - theta).norm() / theta.norm()) < 0.05
    err = metrics.rmse(res.analyses[1:], truth[4::4])
    assert float(err.mean()) < 0.2


def test_weak4dvar_learns_the_correction_from_zero():
    """Weights start at zero (the physics): four windows move them towards the true correction and
    the learned hybrid forecasts 4 cycles ahead 5x better than the physics on an independent
    truth. Measured: weight error 1.0 -> 0.46, forecast ratio 0.19, analysis rmse 0.11. With
    learning off (L-BFGS lr 1e-12) the error stays 0.89 and the ratio is 2.0."""
    truth, obs = _twin(16, seed=4)
    net = PolyConv(3, 3)
    hyb = CorrectedModel(Lorenz96(), net, "tendency", in_std=SCALE)
    theta = _true_theta()
    res = weak4dvar_online(hyb, obs, truth[0], lag=4, b=0.1, q=0.01, p=0.3,
                           theta0=torch.zeros_like(theta), max_iter=15)
    err = [float((t - theta).norm() / theta.norm()) for t in res.theta]
    assert err[0] == 1.0 and err[-1] < 0.6
    assert float(metrics.rmse(res.analyses[1:], truth[4::4]).mean()) < 0.2
    other, _ = _twin(100, seed=9)
    starts, ends = other[0:96:8], other[4:100:8]
    with torch.no_grad():
        net.theta.copy_(res.theta[-1])
        e_hyb = float(metrics.rmse(hyb.forecast(starts, 4), ends).mean())
        e_phys = float(metrics.rmse(Lorenz96().forecast(starts, 4), ends).mean())
    assert e_hyb < 0.3 * e_phys


def test_bad_input():
    with pytest.raises(ValueError, match="correction"):
        OnlineCorrectionEnsemble(correction="increment")
    with pytest.raises(ValueError, match="theta_mean"):
        OnlineCorrectionEnsemble(theta_mean=[0.0, 1.0])
    with pytest.raises(ValueError, match="inner"):
        OnlineCorrectionEnsemble(inner="letkf")
    with pytest.raises(ValueError, match="param_infl"):
        OnlineCorrectionEnsemble(param_infl=0.0, inner_params={"N": 5})
    with pytest.raises(ValueError, match="in_mean/in_std unknown"):
        OnlineCorrectionEnsemble(inner_params={"N": 5}).corrected_model(Lorenz96())
    with pytest.raises(ValueError, match="lag"):
        weak4dvar_online(CorrectedModel(Lorenz96(), PolyConv()), [], torch.zeros(40, dtype=torch.float64), lag=0)
