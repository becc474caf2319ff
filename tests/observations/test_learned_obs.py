"""Learned observation operators: TL/adjoint, fit quality (fails untrained), refusal of mismatches, persistence, DA use."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from hybrida.assimilation.ensemble.letkf import LETKF
from hybrida.assimilation.variational.ekf import EKF
from hybrida.assimilation.variational.threedvar import ThreeDVar
from hybrida.cycle import run_cycle
from hybrida.experiment.twin import make_twin
from hybrida.learn.obs_operator import collocated_pairs, fit_obs_operator
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.learned import (
    LearnedObs,
    LearnedOperator,
    LocalChannelNet,
    load_learned_operator,
    save_learned_operator,
    with_learned_operator,
)
from hybrida.observations.networks import RadianceObs

F64 = torch.float64
N, P, STD = 12, 6, 0.5


def _system(n: int = N, p: int = P) -> RadianceObs:
    return RadianceObs(n, p, 1.0, "tanh", scale=10.0, std=STD, every=2)


@contextmanager
def _one_thread():
    # module fixtures run before conftest's per-test single-thread fixture
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="module")
def twin():
    model = Lorenz96(N)
    with _one_thread():
        x0 = model.forecast(model.initial_state(), 200)
        return model, make_twin(model, _system(), x0, 1500, torch.Generator().manual_seed(0))


def _fit(twin, **kw):
    _, tw = twin
    x, y, loc = collocated_pairs(tw.truth[:1201], tw.observations[:1200])
    return fit_obs_operator(
        x, y, loc, hidden=32, depth=1, half_window=2, batch_size=64, epochs=kw.pop("epochs", 60), seed=0, **kw
    )


@pytest.fixture(scope="module")
def trained(twin):
    with _one_thread():
        return _fit(twin)[0]


def _heldout_rmse(op: LearnedOperator, twin) -> float:
    _, tw = twin
    xs = tw.truth[1201:]
    true = _system().operator(xs)
    with torch.no_grad():
        return float(((op(xs) - true) ** 2).mean().sqrt())


def test_reproduces_true_h_on_heldout_states(trained, twin):
    # noisy targets (std 0.5), held-out cycles: H_theta must be far closer to H than the noise
    assert _heldout_rmse(trained, twin) < 0.2 * STD


def test_untrained_operator_fails_the_same_bar(twin):
    op, _ = _fit(twin, lr=1e-12, epochs=2)
    assert _heldout_rmse(op, twin) > 0.2 * STD


def test_tangent_linear_and_adjoint_by_autodiff(trained, twin):
    _, tw = twin
    x = tw.truth[1300].clone()
    g = torch.Generator().manual_seed(3)
    dx, dy = torch.randn(N, generator=g, dtype=F64), torch.randn(P, generator=g, dtype=F64)
    y0, tl = torch.func.jvp(trained, (x,), (dx,))
    _, vjp = torch.func.vjp(trained, x)
    (adj,) = vjp(dy)
    assert tl.dtype == F64 and adj.dtype == F64
    lhs, rhs = float((tl @ dy).detach()), float((dx @ adj).detach())
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), 1.0)
    # Taylor: remainder of the linearisation is O(eps^2)
    rem = [float((trained(x + e * dx) - y0 - e * tl).detach().norm()) for e in (1e-2, 1e-3)]
    assert 50.0 < rem[0] / rem[1] < 200.0, rem
    # and the learned Jacobian is close to the true one (Frobenius, relative)
    J = torch.func.jacfwd(trained)(x)
    Jt = torch.func.jacfwd(_system().operator)(x)
    assert float(((J - Jt).norm() / Jt.norm()).detach()) < 0.25


def test_batched_leading_dims(trained, twin):
    _, tw = twin
    xs = tw.truth[1300:1306].reshape(2, 3, N)
    out = trained(xs)
    assert out.shape == (2, 3, P) and out.dtype == F64
    assert torch.allclose(out[1, 2], trained(xs[1, 2]))


def test_mismatch_refused(trained):
    with pytest.raises(ValueError, match="trained for n=12"):
        LearnedObs(_system(n=16, p=P), trained)
    with pytest.raises(ValueError, match="trained for 6 channels"):
        LearnedObs(_system(n=N, p=4), trained)
    shifted = _system().network(1)
    shifted.locations = shifted.locations + 1.0
    with pytest.raises(ValueError, match="locations differ"):
        with_learned_operator(shifted, trained)
    with pytest.raises(ValueError, match="trained for n=12, the state has last dimension 10"):
        trained(torch.zeros(10, dtype=F64))


def test_save_load_round_trip(trained, twin, tmp_path):
    path = save_learned_operator(tmp_path / "h.pt", trained, {"epochs": 60})
    back = load_learned_operator(path)
    _, tw = twin
    xs = tw.truth[1300:1310]
    assert torch.equal(back(xs), trained(xs))
    assert back.training_config == {"epochs": 60} and back.n == N
    assert torch.equal(back.locations, trained.locations)
    with pytest.raises(ValueError, match="trained for 6 channels"):
        LearnedObs(_system(n=N, p=4), back)


def test_observation_system_samples_and_matches_true_locations(trained):
    sys_ = LearnedObs(_system(), trained)
    o = sys_.network(3)
    assert o.matrix is None and o.meta["operator"] == "learned" and sys_.every == 2
    assert torch.equal(o.locations, _system().network(3).locations)
    x = torch.linspace(-3, 8, N, dtype=F64)
    got = sys_.observe(x, 1, torch.Generator().manual_seed(0))
    assert got.y.shape == (P,) and bool(torch.isfinite(got.y).all())


@pytest.mark.parametrize("method", ["3dvar", "ekf", "letkf"])
def test_usable_by_methods_close_to_true_h(trained, twin, method):
    model, tw = twin
    truth, obs = tw.truth[1200:1236], tw.observations[1200:1235]
    learned = [with_learned_operator(o, trained, N) for o in obs]
    clim = (truth.mean(0), torch.cov(tw.truth[:1200].T))

    def run(observations) -> float:
        if method == "3dvar":
            m, state = ThreeDVar(clim, xB=0.3, tol=1e-5, max_outer=2, max_iter=30), truth[0] + 0.5
        elif method == "ekf":
            m = EKF(infl=1.2, Q=0.05)
            state = m.initial_state(truth[0] + 0.5, 1.0)
        else:
            m = LETKF(N=10, loc_rad=3.0, infl=1.1)
            state = m.initial_state(truth[0], 1.0, torch.Generator().manual_seed(1))
        recs = [r for r, _ in run_cycle(model, m, state, truth, observations, 2,
                                        generator=torch.Generator().manual_seed(2), probabilistic_scores=False)]
        return sum(r.rmse_a for r in recs[10:]) / len(recs[10:])

    r_true, r_learned = run(obs), run(learned)
    # the setting is one where DA works at all, and the learned H keeps it working: a usability
    # check on 25 scored cycles (the 5% / 10% bars are measured by benchmarks/learn/learned_obs_operator.py)
    assert r_true < 0.4 * float(truth.std())
    assert r_learned < 1.5 * r_true, (r_learned, r_true)


def test_local_channel_net_non_integer_centres():
    net = LocalChannelNet(10, [0.5, 3.25, 9.9], half_window=2, hidden=4, seed=1)
    z = torch.randn(4, 10)
    assert net(z).shape == (4, 3)
    assert net.index[2].tolist() == [8, 9, 0, 1, 2]  # centre 9.9 -> grid 10 = 0
