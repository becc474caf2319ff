"""Hybrid EnVar: exact linear-Gaussian oracles (3D-Var, ETKF, BLUE with L∘P_e and hybrid B), anomalies,
nonlinear convergence, dfs, validation and dtype following."""

from __future__ import annotations

import copy
import math
import statistics
from itertools import pairwise

import pytest
import torch
from lingauss import random_spd

from hybrida.assimilation.ensemble.etkf import ETKF
from hybrida.assimilation.ensemble.letkf import LETKF
from hybrida.assimilation.ensemble.localization import gaspari_cohn
from hybrida.assimilation.variational.envar import HybridEnVar
from hybrida.assimilation.variational.envar4d import HybridEnVar4D
from hybrida.assimilation.variational.hybridcov import (
    HybridControl,
    localization_matrix,
    localization_sqrt,
)
from hybrida.assimilation.variational.threedvar import ThreeDVar
from hybrida.assimilation.window import Window
from hybrida.cycle import run_cycle
from hybrida.experiment.config import validate_config
from hybrida.experiment.presets import get_preset
from hybrida.experiment.runner import run_experiment
from hybrida.models.base import Model
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations import EveryKthObs, RadianceObs, SubsetObs
from hybrida.observations.base import Observation
from hybrida.observations.errors import CorrelatedError

F64 = torch.float64


def _setup(n: int, N: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.linspace(-1.0, 2.0, n, dtype=F64)
    C = random_spd(n, seed=seed + 11)
    E = mean + 0.3 + torch.randn(N, n, generator=g, dtype=F64) @ torch.linalg.cholesky(C).T
    return (mean, C), E


def _obs(n: int, idx, corr: float = 0.0, seed: int = 0, std=None):
    std = [0.5 + 0.1 * (i % 4) for i in range(len(idx))] if std is None else std
    sys = SubsetObs(n, list(idx), std=std, correlation_length=corr)
    truth = torch.randn(n, generator=torch.Generator().manual_seed(seed + 5), dtype=F64)
    return sys.observe(truth, 1, torch.Generator().manual_seed(seed + 6))


def _blue(xb, B, H, R, y):
    """Gain form xa = xb + B H^T (H B H^T + R)^{-1} (y - H xb), no inverse of B needed."""
    K = B @ H.T @ torch.linalg.inv(H @ B @ H.T + R)
    return xb + K @ (y - H @ xb), K


def _gc_matrix(n: int, loc_rad: float) -> torch.Tensor:
    """An independent dense GC localization on the periodic grid."""
    i = torch.arange(n, dtype=F64)
    d = (i[:, None] - i[None, :]).abs()
    d = torch.minimum(d, n - d)
    return gaspari_cohn(d / (1.82 * loc_rad))


@pytest.mark.parametrize("corr", [0.0, 1.5])
def test_beta1_equals_threedvar(corr):
    clim, E = _setup(8, 5)
    obs = _obs(8, [0, 2, 3, 6], corr=corr)
    xa_var = ThreeDVar(clim, xB=0.7).analyse(E.mean(0), obs)
    m = HybridEnVar(5, clim, xB=0.7, beta=1.0, loc_rad=2.0)
    Ea = m.analyse(E, obs)
    assert torch.allclose(Ea.mean(0), xa_var, atol=1e-10, rtol=0)
    assert m.control.n_ens == 0 and m.control.size == 8


def test_beta0_no_localization_equals_etkf_and_kalman():
    clim, E = _setup(10, 6, seed=1)
    obs = _obs(10, [0, 1, 4, 5, 7, 9], corr=1.0)
    m = HybridEnVar(6, clim, beta=0.0, loc_rad=None)
    Ea = m.analyse(E, obs)
    xm, A = E.mean(0), E - E.mean(0)
    ref, _ = _blue(xm, A.T @ A / 5, obs.matrix, obs.error.cov, obs.y)
    assert torch.allclose(Ea.mean(0), ref, atol=1e-9, rtol=0)
    # full ensemble (mean and square-root anomalies) equals the ETKF's
    assert torch.allclose(Ea, ETKF(6).analyse(E, obs), atol=1e-9, rtol=0)
    assert m.control.size == 6  # one scalar alpha per member


def test_localization_sqrt_is_the_gc_matrix():
    n, loc_rad = 20, 2.0
    L = _gc_matrix(n, loc_rad)
    assert float(torch.linalg.eigvalsh(L).min()) > 0  # oracle valid: L is PD here
    assert torch.allclose(localization_matrix(n, loc_rad), L, atol=1e-14)
    S = localization_sqrt(n, loc_rad)
    assert torch.allclose(S, S.T) and torch.allclose(S @ S, L, atol=1e-12)


def test_beta0_localized_equals_blue_with_schur_product():
    n, N, loc_rad = 20, 4, 2.0
    clim, E = _setup(n, N, seed=2)
    obs = _obs(n, range(0, n, 2), seed=2)
    m = HybridEnVar(N, clim, beta=0.0, loc_rad=loc_rad)
    Ea = m.analyse(E, obs)
    xm, A = E.mean(0), E - E.mean(0)
    B = _gc_matrix(n, loc_rad) * (A.T @ A / (N - 1))
    ref, K = _blue(xm, B, obs.matrix, obs.error.cov, obs.y)
    assert torch.allclose(Ea.mean(0), ref, atol=1e-8, rtol=0)
    # the localized increment differs from the unlocalized one (the test can tell them apart)
    ref_noloc, _ = _blue(xm, A.T @ A / (N - 1), obs.matrix, obs.error.cov, obs.y)
    assert float((ref - ref_noloc).abs().max()) > 1e-2
    d = m.diagnostics()
    assert d["dfs"] == pytest.approx(float(torch.trace(obs.matrix @ K)), rel=1e-8)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.85])
@pytest.mark.parametrize("corr", [0.0, 2.0])
def test_hybrid_equals_blue_with_hybrid_b(beta, corr):
    n, N, loc_rad, xB = 16, 5, 1.5, 0.4
    clim, E = _setup(n, N, seed=3)
    obs = _obs(n, [0, 3, 4, 7, 9, 12, 15], corr=corr, seed=3)
    m = HybridEnVar(N, clim, xB=xB, beta=beta, loc_rad=loc_rad)
    Ea = m.analyse(E, obs)
    xm, A = E.mean(0), E - E.mean(0)
    B = beta * xB * clim[1] + (1 - beta) * _gc_matrix(n, loc_rad) * (A.T @ A / (N - 1))
    ref, K = _blue(xm, B, obs.matrix, obs.error.cov, obs.y)
    assert torch.allclose(Ea.mean(0), ref, atol=1e-8, rtol=0)
    d = m.diagnostics()
    assert d["n_obs"] == 7 and d["n_outer"] == 1
    assert d["dfs"] == pytest.approx(float(torch.trace(obs.matrix @ K)), rel=1e-8)
    assert d["grad_norm"] < 1e-8 * max(1.0, d["grad_norm_per_iteration"][0])
    costs = d["cost_per_iteration"]
    assert costs[0] == d["cost_initial"] and costs[-1] == d["cost_final"]
    assert all(b <= a + 1e-12 for a, b in pairwise(costs))
    assert len(costs) == len(d["grad_norm_per_iteration"]) == d["n_inner"] + 1


def test_control_transform_represents_hybrid_b():
    n, N = 12, 4
    clim, E = _setup(n, N, seed=4)
    A = E - E.mean(0)
    Ls = localization_sqrt(n, 1.0)
    Ss = torch.linalg.cholesky(clim[1])  # any square root: U U^T must still be B
    U = HybridControl(Ss, 0.3, N, Ls)
    M = U.matrix(A)
    B = U.covariance(A, xB_cov=clim[1])
    assert torch.allclose(M @ M.T, B, atol=1e-10)
    c = torch.randn(U.size, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert torch.allclose(U.increment(c, A), M @ c, atol=1e-12)
    # several times at once: one increment per time from the same control vector
    A2 = torch.stack([A, 2 * A])
    dx = U.increment(c, A2)
    ens = U.increment(c, A) - 0.3**0.5 * Ss @ c[:n]
    assert torch.allclose(dx[1] - dx[0], ens, atol=1e-12)


def test_etkf_and_letkf_anomalies():
    n, N = 20, 6
    clim, E = _setup(n, N, seed=5)
    obs = _obs(n, range(0, n, 2), seed=5)
    for pert, ref in (("etkf", ETKF(N)), ("letkf", LETKF(N, 2.0, solver="eigh"))):
        m = HybridEnVar(N, clim, xB=0.5, beta=0.5, loc_rad=2.0, perturbations=pert, infl=1.1)
        Ea = m.analyse(E, obs)
        Er = ref.analyse(E, obs)
        assert torch.allclose(Ea - Ea.mean(0), 1.1 * (Er - Er.mean(0)), atol=1e-10)
    # the two differ, so the option is not a no-op
    a1 = HybridEnVar(N, clim, beta=0.5, loc_rad=2.0, perturbations="etkf").analyse(E, obs)
    a2 = HybridEnVar(N, clim, beta=0.5, loc_rad=2.0, perturbations="letkf").analyse(E, obs)
    assert torch.allclose(a1.mean(0), a2.mean(0), atol=1e-10)
    assert float((a1 - a2).abs().max()) > 1e-3


@pytest.mark.parametrize("nl", ["tanh", "square"])
def test_nonlinear_converges_to_stationary_point(nl):
    n, N = 8, 5
    clim, E = _setup(n, N, seed=6)
    sys = RadianceObs(n, 4, 1.0, nl, scale=2.0, std=0.3)
    truth = clim[0] + torch.randn(n, generator=torch.Generator().manual_seed(4), dtype=F64)
    obs = sys.observe(truth, 1, torch.Generator().manual_seed(5))
    m = HybridEnVar(N, clim, xB=1.0, beta=0.5, loc_rad=1.5, tol=1e-9, max_outer=60)
    xa = m.analyse(E, obs).mean(0)
    d = m.diagnostics()
    assert d["cost_final"] < 0.5 * d["cost_initial"]
    assert d["grad_norm"] < 1e-6 and d["n_outer"] > 1
    assert 0 < d["dfs"] < 4
    # first-order optimality in state space: x - xb = B H'(x)^T R^-1 (y - H(x))
    xb, A = E.mean(0), E - E.mean(0)
    B = m.control.covariance(A, xB_cov=clim[1])
    Hx = torch.func.jacfwd(obs.H)(xa)
    rhs = B @ Hx.T @ torch.linalg.solve(obs.error.cov, obs.y - obs.H(xa))
    assert torch.allclose(xa - xb, rhs, atol=1e-6)


def test_nan_observations_are_masked():
    clim, E = _setup(8, 5)
    m = HybridEnVar(5, clim, beta=0.5, loc_rad=2.0)
    obs = _obs(8, [0, 2, 3, 6])
    obs_nan = _obs(8, [0, 2, 3, 6])
    obs_nan.y[1] = float("nan")
    ref_obs = _obs(8, [0, 3, 6], std=[0.5, 0.7, 0.8])
    ref_obs.y = obs.y[[0, 2, 3]]
    assert torch.allclose(m.analyse(E, obs_nan), m.analyse(E, ref_obs), atol=1e-10)
    obs_nan.y[:] = float("nan")
    assert torch.equal(m.analyse(E, obs_nan), E)
    assert m.diagnostics() == {"n_obs": 0.0}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_input(dtype):
    clim, E = _setup(8, 5)
    obs = _obs(8, [0, 2, 3, 6])
    m = HybridEnVar(5, clim, beta=0.5, loc_rad=2.0, tol=1e-5)
    Ea = m.analyse(E.to(dtype), obs)
    assert Ea.dtype == dtype
    ref = HybridEnVar(5, clim, beta=0.5, loc_rad=2.0).analyse(E, obs)
    # float32 (tol 1e-5) against float64: measured 4e-6, 7e-7 of the largest value
    torch.testing.assert_close(Ea.double(), ref, rtol=0, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": 1.5}, "beta"),
        ({"beta": -0.1}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"N": 1}, "N"),
        ({"N": 2.5}, "N"),
        ({"loc_rad": 0.0}, "loc_rad"),
        ({"loc_rad": -2.0}, "loc_rad"),
        ({"loc_rad": float("inf")}, "loc_rad"),
        ({"xB": 0.0}, "xB"),
        ({"infl": 0.0}, "infl"),
        ({"perturbations": "enkf"}, "perturbations"),
        ({"perturbations": "letkf", "loc_rad": None}, "letkf"),
        ({"max_iter": 0}, "max_iter"),
    ],
)
def test_validation(kwargs, match):
    clim, _ = _setup(8, 5)
    params = {"N": 5, "climatology": clim, **kwargs}
    with pytest.raises(ValueError, match=match):
        HybridEnVar(**params)


def test_bad_prior_shape():
    clim, E = _setup(8, 5)
    m = HybridEnVar(5, clim)
    with pytest.raises(ValueError, match="shape"):
        m.analyse(E[:4], _obs(8, [0, 1]))
    with pytest.raises(ValueError, match="shape"):
        m.analyse(E.mean(0), _obs(8, [0, 1]))


# ----------------------------------------------------------------------------- 4D-EnVar


class LinearModel(Model):
    """x_{k+1} = M x_k: ensemble trajectories are exact linear maps of the start anomalies."""

    def __init__(self, M: torch.Tensor, dt: float = 0.1):
        self.M, self.n, self.dt = M, M.shape[0], dt

    def step(self, x, t=0.0):
        return x @ self.M.T.to(x)


def _window(n: int, N: int, seed: int, idx_per_time, steps=(1, 3)):
    clim, E = _setup(n, N, seed=seed)
    g = torch.Generator().manual_seed(seed + 20)
    M = torch.eye(n, dtype=F64) + 0.15 * torch.randn(n, n, generator=g, dtype=F64)
    model = LinearModel(M)
    observations = [_obs(n, idx, seed=seed + k, corr=1.0 * k) for k, idx in enumerate(idx_per_time)]
    win = Window(model, E, 0.0, observations, list(steps), steps[-1], 1)
    return clim, E, M, win


def test_4d_beta0_no_localization_equals_kalman_smoother():
    n, N = 10, 6
    clim, E, M, win = _window(n, N, 7, [[0, 2, 5, 8], [1, 3, 4, 9]])
    m = HybridEnVar4D(N, clim, beta=0.0, loc_rad=None, lag=3)
    Ea = m.analyse_window(win, None)
    xb, A = E.mean(0), E - E.mean(0)
    G = torch.cat([win.observations[0].matrix @ M, win.observations[1].matrix @ torch.linalg.matrix_power(M, 3)])
    R = torch.block_diag(*[o.error.cov for o in win.observations])
    y = torch.cat([o.y for o in win.observations])
    ref, _ = _blue(xb, A.T @ A / (N - 1), G, R, y)
    assert torch.allclose(Ea.mean(0), ref, atol=1e-9, rtol=0)
    # anomalies: the 4D ETKF transform = the ETKF with the composed linear operator G
    obs_G = Observation(y=y, operator=lambda x: x @ G.T.to(x), error=CorrelatedError(R), matrix=G)
    assert torch.allclose(Ea, ETKF(N).analyse(E, obs_G), atol=1e-9)


def test_4d_hybrid_localized_equals_dense_blue():
    n, N, beta, xB, loc_rad = 12, 5, 0.4, 0.3, 1.5
    clim, E, M, win = _window(n, N, 8, [[0, 3, 6, 9], [1, 4, 7, 10]], steps=(2, 4))
    m = HybridEnVar4D(N, clim, xB=xB, beta=beta, loc_rad=loc_rad, lag=4)
    Ea = m.analyse_window(win, None)
    L = _gc_matrix(n, loc_rad)
    traj = [E, E @ torch.linalg.matrix_power(M, 2).T, E @ torch.linalg.matrix_power(M, 4).T]
    xbs = [X.mean(0) for X in traj]
    As = [X - X.mean(0) for X in traj]

    def cov(j, k):  # Cov(dx(t_j), dx(t_k)) of the 4D hybrid covariance
        return beta * xB * clim[1] + (1 - beta) * L * (As[j].T @ As[k] / (N - 1))

    Hs = [o.matrix for o in win.observations]
    C_0o = torch.cat([cov(0, k + 1) @ Hs[k].T for k in range(2)], 1)
    C_oo = torch.cat([torch.cat([Hs[j] @ cov(j + 1, k + 1) @ Hs[k].T for k in range(2)], 1) for j in range(2)], 0)
    R = torch.block_diag(*[o.error.cov for o in win.observations])
    d = torch.cat([o.y - Hm @ xb for o, Hm, xb in zip(win.observations, Hs, xbs[1:])])
    ref = xbs[0] + C_0o @ torch.linalg.solve(C_oo + R, d)
    assert torch.allclose(Ea.mean(0), ref, atol=1e-8, rtol=0)
    diag = m.diagnostics()
    assert diag["n_obs"] == 8
    assert diag["dfs"] == pytest.approx(float(torch.trace(C_oo @ torch.linalg.inv(C_oo + R))), rel=1e-8)


def _l96_run(method, cycles: int, seed: int = 0, every_kth: int = 1):
    model = Lorenz96(n=40, F=8.0, dt=0.05)
    g = torch.Generator().manual_seed(seed)
    x = 8.0 + torch.randn(40, generator=g, dtype=F64)
    x = model.forecast(x, 500)
    obs_sys = EveryKthObs(40, every_kth, std=1.0)
    truth = model.forecast(x, cycles, trajectory=True)
    observations = [obs_sys.observe(truth[k], k, g) for k in range(1, cycles + 1)]
    state = method.initial_state(truth[0], 1.0, torch.Generator().manual_seed(seed + 1))
    records = [r for r, _ in run_cycle(model, method, state, truth, observations, 1)]
    return records, truth


def _l96_clim():
    model = Lorenz96(n=40, F=8.0, dt=0.05)
    x = model.forecast(8.0 + torch.randn(40, generator=torch.Generator().manual_seed(9), dtype=F64), 500)
    traj = model.forecast(x, 3000, trajectory=True)
    return traj.mean(0), torch.cov(traj.T)


def test_4d_lag0_equals_3d_in_a_cycle():
    clim = _l96_clim()
    kw = {"N": 6, "climatology": clim, "xB": 0.02, "beta": 0.2, "loc_rad": 3.0, "infl": 1.05}
    r3, _ = _l96_run(HybridEnVar(**kw), 15)
    r4, _ = _l96_run(HybridEnVar4D(**kw, lag=0), 15)
    for a, b in zip(r3, r4):
        assert torch.allclose(a.posterior_mean, b.posterior_mean, atol=1e-9)
    # measured 0.30-0.43 over the 15 cycles (0.419 at the last); climatology ~3.6
    assert max(r.rmse_a for r in r3) < 0.5


# mean rmse_a of cycles 21-60, seed 0: ETKF 0.470, LETKF 0.386 (seeds 1-2: 0.583, 0.474; 0.395, 0.372)
@pytest.mark.parametrize(("pert", "bar"), [("etkf", 0.55), ("letkf", 0.45)])
def test_4d_lagged_cycle_runs_and_tracks(pert, bar):
    clim = _l96_clim()
    m = HybridEnVar4D(8, clim, xB=0.02, beta=0.2, loc_rad=3.0, infl=1.05, perturbations=pert, lag=2)
    records, _ = _l96_run(m, 60, every_kth=2)
    rmse = [r.rmse_a for r in records[20:]]
    assert all(math.isfinite(v) for v in rmse) and sum(rmse) / len(rmse) < bar  # clim ~3.6
    assert m.diagnostics()["n_obs"] == 20


# ------------------------------------------------------- the documented case (benchmarks/reproduce/envar_case.py)

#: L96 sakov2008, N=5, LETKF anomalies; settings tuned on seed 100 (first run of benchmarks/reproduce/envar_case.py).
#: Over 200 cycles the hybrid gain is robust; at 1000 cycles N=5 the hybrid only ties beta=0
#: (0.263 vs 0.263), which is why the documented case uses N=3 (too noisy to shorten to < 20 s).
CASE = {
    "static": {"beta": 1.0, "xB": 0.02, "loc_rad": 4.0, "infl": 1.05},
    "ensemble": {"beta": 0.0, "loc_rad": 3.0, "infl": 1.08},
    "hybrid": {"beta": 0.1, "xB": 0.01, "loc_rad": 4.0, "infl": 1.08},
}
#: measured hybrid / min(static, ensemble) medians over seeds (1,2,3), (4,5,6), (7,8,9): 0.92, 0.92, 0.88
CASE_RATIO = 0.97


def test_hybrid_beats_static_and_ensemble_alone():
    """Hybrid beats static-only and ensemble-only EnVar: median rmse_a of 3 seeds x 200 cycles (N=5).

    A shortened check (measured ratios 0.88-0.92 on three seed triplets). Over
    1000 cycles the N=5 hybrid only ties the ensemble-only EnVar; the
    documented full-length case is N=3 (benchmarks/reproduce/envar_case.py,
    docs/benchmarks.md "envar").
    """
    scores = {}
    for name, params in CASE.items():
        runs = []
        for seed in (1, 2, 3):
            data = copy.deepcopy(get_preset("lorenz96/sakov2008"))
            data["method"] = {
                "name": "hybrida.assimilation.variational.envar:HybridEnVar",
                "params": {"N": 5, "perturbations": "letkf", "dfs": False, **params},
            }
            data["seed"], data["cycles"], data["burn_in"] = seed, 200, 3.0
            data["climatology"]["steps"] = 3000
            summary = run_experiment(validate_config(data), progress=False).summary
            assert not summary["diverged"], (name, seed)
            runs.append(summary["rmse_a"])
        scores[name] = statistics.median(runs)
    assert scores["hybrid"] < CASE_RATIO * min(scores["static"], scores["ensemble"]), scores
