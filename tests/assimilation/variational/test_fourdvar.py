"""4D-Var: Kalman-smoother exactness, gradient (Taylor) tests, 3D-Var limit, DFS (cycling: test_fourdvar_cycling)."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from lingauss import random_spd
from torch import Tensor

from hybrida.assimilation.variational import ThreeDVar
from hybrida.assimilation.variational.fourdvar import FourDVar
from hybrida.assimilation.variational.minimize import linearize
from hybrida.assimilation.window import Window
from hybrida.models.base import Model
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.base import Observation
from hybrida.observations.errors import CorrelatedError, DiagonalError
from hybrida.observations.networks import RadianceObs

F64 = torch.float64


class LinearModel(Model):
    """x_{k+1} = A x_k."""

    def __init__(self, A: Tensor, dt: float = 0.1):
        self.A, self.dt, self.n = A, dt, A.shape[0]

    def step(self, x: Tensor, t: float = 0.0) -> Tensor:
        return x @ self.A.to(x).mT


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _linear_setup(seed: int = 0, n: int = 6, L: int = 3, spc: int = 2):
    g = _gen(seed)
    A = torch.eye(n, dtype=F64) + 0.15 * torch.randn(n, n, generator=g, dtype=F64)
    model = LinearModel(A)
    C = random_spd(n, seed + 1, cond=10.0)
    mean = torch.zeros(n, dtype=F64)
    xb = torch.randn(n, generator=g, dtype=F64)
    obs = []
    for c in range(L):
        p = 3 + c  # the network changes between observation times
        H = torch.randn(p, n, generator=g, dtype=F64)
        R = random_spd(p, seed + 10 + c, cond=4.0) * 0.5
        y = torch.randn(p, generator=g, dtype=F64) * 2.0
        obs.append(
            Observation(
                y=y,
                operator=lambda x, H=H: x @ H.mT,
                error=CorrelatedError(R),
                matrix=H,
                meta={"group": "odd" if c % 2 else "even"},
            )
        )
    return model, (mean, C), xb, obs, spc


def _kalman(xb, B, F, Q, obs):
    """Kalman filter over cycles 1..L and RTS smoother back to cycle 0: (smoothed x_0, filtered x_L)."""
    m, P = xb, B
    filt, pred = [(xb, B)], []
    for o in obs:
        o = o.valid()
        mp, Pp = F @ m, F @ P @ F.T + Q
        pred.append((mp, Pp))
        H, R = o.matrix, o.error.cov
        K = Pp @ H.T @ torch.linalg.inv(H @ Pp @ H.T + R)
        m, P = mp + K @ (o.y - H @ mp), (torch.eye(len(m), dtype=F64) - K @ H) @ Pp
        filt.append((m, P))
    ms = m
    for c in reversed(range(len(obs))):
        mc, Pc = filt[c]
        mp, Pp = pred[c]
        ms = mc + Pc @ F.T @ torch.linalg.solve(Pp, ms - mp)
    return ms, filt[-1][0]


def _cycle(method, model, xb, obs, spc):
    state = method.initial_state(xb, 0.0)
    for c, o in enumerate(obs, start=1):
        state = method.forecast(model, state, spc, (c - 1) * spc * model.dt)
        state = method.analyse(state, o, c * spc * model.dt)
    return state


def _window(model, xb, obs, spc):
    L = len(obs)
    return Window(model, xb, 0.0, obs, [(c + 1) * spc for c in range(L)], L * spc, spc)


def _close(a, b, rel=1e-8):
    return float((a - b).norm()) <= rel * float(b.norm())


@pytest.mark.parametrize("linearization", ["dense", "matrix_free"])
def test_strong_constraint_equals_kalman_smoother_and_filter(linearization):
    model, clim, xb, obs, spc = _linear_setup()
    xB = 0.7
    F = torch.linalg.matrix_power(model.A, spc)
    Q0 = torch.zeros(6, 6, dtype=F64)
    smooth0, filt_end = _kalman(xb, xB * clim[1], F, Q0, obs)
    method = FourDVar(
        clim, xB=xB, lag=3, shift=3, tol=1e-13, max_inner=200, linearization=linearization
    )
    start = method.analyse_window(_window(model, xb, obs, spc), None)
    assert _close(start, smooth0)
    state = _cycle(method, model, xb, obs, spc)
    assert _close(state.current, filt_end)
    d = method.diagnostics()
    assert d["n_obs"] == 3 + 4 + 5 and d["cost_final"] < d["cost_initial"]
    assert d["cost_per_iteration"][0] == d["cost_initial"] and len(
        d["grad_norm_per_iteration"]
    ) == len(d["cost_per_iteration"])


@pytest.mark.parametrize("form", ["matrix", "scalar", "xQ"])
def test_weak_constraint_equals_kalman_smoother_with_process_noise(form):
    model, clim, xb, obs, spc = _linear_setup(seed=3)
    n = 6
    xB = 0.5
    if form == "matrix":
        Q = random_spd(n, 7, cond=5.0) * 0.3
        kwargs = {"Q": Q}
    elif form == "scalar":
        Q = 0.2 * torch.eye(n, dtype=F64)
        kwargs = {"Q": 0.2}
    else:
        Q = 0.1 * clim[1]
        kwargs = {"xQ": 0.1}
    F = torch.linalg.matrix_power(model.A, spc)
    smooth0, filt_end = _kalman(xb, xB * clim[1], F, Q, obs)
    method = FourDVar(clim, xB=xB, lag=3, shift=3, tol=1e-13, max_inner=300, **kwargs)
    assert method.weak
    start = method.analyse_window(_window(model, xb, obs, spc), None)
    assert _close(start, smooth0)
    # the strong-constraint answer differs: the test can tell the two apart
    strong0, _ = _kalman(xb, xB * clim[1], F, torch.zeros_like(Q), obs)
    assert not _close(start, strong0, rel=1e-3)
    state = _cycle(method, model, xb, obs, spc)
    assert _close(state.current, filt_end)


def test_overlapping_windows_slide_with_analysed_forcing():
    """lag 3, shift 1: the first analysis (one observation) is the filter with process noise."""
    model, clim, xb, obs, spc = _linear_setup(seed=5)
    Q = 0.3 * torch.eye(6, dtype=F64)
    F = torch.linalg.matrix_power(model.A, spc)
    _, filt1 = _kalman(xb, clim[1], F, Q, obs[:1])
    method = FourDVar(clim, xB=1.0, lag=3, shift=1, tol=1e-13, max_inner=200, Q=0.3)
    state = _cycle(method, model, xb, obs[:1], spc)
    assert _close(state.current, filt1)
    assert state.span == 1 and _close(state.start, xb, rel=1.0)  # window start stays at t = 0


def test_missing_observations_are_masked():
    model, clim, xb, obs, spc = _linear_setup(seed=2)
    y = obs[1].y.clone()
    y[[0, 2]] = float("nan")
    holey = [obs[0], Observation(y, obs[1].operator, obs[1].error, matrix=obs[1].matrix), obs[2]]
    F = torch.linalg.matrix_power(model.A, spc)
    smooth0, _ = _kalman(xb, clim[1], F, torch.zeros(6, 6, dtype=F64), holey)
    method = FourDVar(clim, lag=3, shift=3, tol=1e-13, max_inner=200)
    start = method.analyse_window(_window(model, xb, holey, spc), None)
    assert _close(start, smooth0)
    assert method.diagnostics()["n_obs"] == 3 + 2 + 5


def test_all_missing_window_returns_background():
    model, clim, xb, obs, spc = _linear_setup()
    empty = [
        Observation(torch.full_like(o.y, float("nan")), o.operator, o.error, matrix=o.matrix)
        for o in obs
    ]
    method = FourDVar(clim, lag=3, shift=3, Q=0.1)
    start = method.analyse_window(_window(model, xb, empty, spc), None)
    assert torch.equal(start, xb)
    assert method.diagnostics() == {"n_obs": 0.0}
    state = _cycle(method, model, xb, empty, spc)
    assert _close(state.current, model.forecast(xb, 3 * spc), rel=1e-14)


def _dfs_oracle(model, B, obs, spc):
    """tr(HK) of the window's generalised H = [H_i F^i] with the BLUE gain K = B H^T (H B H^T + R)^-1."""
    F = torch.linalg.matrix_power(model.A, spc)
    Hs = [o.matrix @ torch.linalg.matrix_power(F, c + 1) for c, o in enumerate(obs)]
    H = torch.cat(Hs)
    R = torch.block_diag(*[o.error.cov for o in obs])
    K = B @ H.T @ torch.linalg.inv(H @ B @ H.T + R)
    HK = H @ K
    sizes = [o.p for o in obs]
    bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
    per_obs = [float(torch.trace(HK[a:b, a:b])) for a, b in pairwise(bounds)]
    return float(torch.trace(HK)), per_obs


def test_dfs_equals_trace_of_HK():
    model, clim, xb, obs, spc = _linear_setup(seed=4)
    xB = 0.8
    total, per_obs = _dfs_oracle(model, xB * clim[1], obs, spc)
    method = FourDVar(clim, xB=xB, lag=3, shift=3, tol=1e-12)
    method.analyse_window(_window(model, xb, obs, spc), None)
    d = method.diagnostics()
    assert d["dfs"] == pytest.approx(total, rel=1e-9)
    assert d["dfs_even"] == pytest.approx(per_obs[0] + per_obs[2], rel=1e-9)
    assert d["dfs_odd"] == pytest.approx(per_obs[1], rel=1e-9)
    assert 0 < d["dfs"] < min(6, sum(o.p for o in obs))
    # the randomized (matrix-free) estimate is close, and deterministic for a given generator
    mf = FourDVar(
        clim, xB=xB, lag=3, shift=3, tol=1e-12, linearization="matrix_free", dfs_probes=40
    )
    mf.analyse_window(_window(model, xb, obs, spc), _gen(0))
    d1 = mf.diagnostics()
    assert d1["dfs"] == pytest.approx(total, rel=0.1)
    assert d1["dfs_odd"] == pytest.approx(per_obs[1], rel=0.2)
    mf.analyse_window(_window(model, xb, obs, spc), _gen(0))
    assert mf.diagnostics()["dfs"] == d1["dfs"]
    mf0 = FourDVar(clim, xB=xB, lag=3, shift=3, linearization="matrix_free")
    mf0.analyse_window(_window(model, xb, obs, spc), None)
    assert mf0.diagnostics()["dfs"] != mf0.diagnostics()["dfs"]  # NaN without probes


# ---------------------------------------------------------------- nonlinear (Lorenz-96)


def _l96_window(n: int = 12, L: int = 3, spc: int = 2, dtype=F64, seed: int = 0):
    model = Lorenz96(n=n, dt=0.05)
    g = _gen(seed)
    x = model.forecast(8.0 + torch.randn(n, generator=g, dtype=F64), 300)
    radiance = RadianceObs(n, n // 2, 1.5, "square", scale=5.0, std=0.5, dtype=F64)
    obs, truth = [], [x]
    for c in range(L):
        x = model.forecast(x, spc)
        truth.append(x)
        o = radiance.observe(x, c + 1, g)
        o.meta["group"] = "sat" if c < 2 else "late"
        o.y = o.y.to(dtype)
        obs.append(o)
    xb = (truth[0] + 0.8 * torch.randn(n, generator=g, dtype=F64)).to(dtype)
    C = random_spd(n, seed + 20, cond=8.0)
    return model, (torch.zeros(n, dtype=F64), C), xb, obs, spc, truth


@pytest.mark.parametrize("weak", [False, True])
@pytest.mark.parametrize("mode", ["matrix_free", "forward", "reverse"])
def test_gradient_taylor_and_adjoint(weak, mode):
    model, clim, xb, obs, spc, _ = _l96_window()
    method = FourDVar(clim, xB=0.5, lag=3, shift=3, Q=0.05 if weak else None)
    problem = method.problem(_window(model, xb, obs, spc))
    assert problem.n_ctrl == 12 * (4 if weak else 1) and problem.m == 3 * 6
    g = _gen(1)
    z = 0.3 * torch.randn(problem.n_ctrl, generator=g, dtype=F64)
    dz = torch.randn(problem.n_ctrl, generator=g, dtype=F64)
    lin = linearize(problem.residual, z, mode)
    grad = z + lin.adj(lin.r)
    J0 = float(problem.cost(z))
    hs = [10.0**-k for k in range(1, 6)]
    rem = [abs(float(problem.cost(z + h * dz)) - J0 - h * float(grad @ dz)) for h in hs]
    ratios = [a / b for a, b in pairwise(rem)]
    assert all(80.0 < q < 120.0 for q in ratios[:3]), (rem, ratios)  # remainder O(h^2)
    # first-order remainder with a wrong gradient does not pass
    bad = [abs(float(problem.cost(z + h * dz)) - J0 - 1.01 * h * float(grad @ dz)) for h in hs]
    assert bad[2] / bad[3] < 20.0
    # tangent linear against centred differences, and the adjoint dot-product test
    w = torch.randn(problem.n_ctrl, generator=g, dtype=F64)
    u = torch.randn(problem.m, generator=g, dtype=F64)
    h = 1e-6
    fd = (problem.residual(z + h * w) - problem.residual(z - h * w)) / (2 * h)
    assert torch.allclose(lin.tl(w), fd, rtol=1e-6, atol=1e-7)
    assert float(lin.tl(w) @ u) == pytest.approx(float(w @ lin.adj(u)), rel=1e-10)


@pytest.mark.parametrize("weak", [False, True])
def test_nonlinear_window_converges_and_modes_agree(weak):
    model, clim, xb, obs, spc, truth = _l96_window()
    results = {}
    for lin in ("dense", "matrix_free"):
        method = FourDVar(
            clim,
            xB=0.5,
            lag=3,
            shift=3,
            tol=1e-8,
            max_outer=15,
            Q=0.05 if weak else None,
            linearization=lin,
        )
        results[lin] = method.analyse_window(_window(model, xb, obs, spc), None)
        d = method.diagnostics()
        costs = d["cost_per_iteration"]
        assert all(b <= a for a, b in pairwise(costs))
        assert d["grad_norm"] <= 1e-6 * d["grad_norm_per_iteration"][0]
        assert d["n_outer"] >= 2  # nonlinear: more than one relinearisation
    assert torch.allclose(results["dense"], results["matrix_free"], atol=1e-6)
    err_b = float((xb - truth[0]).norm())
    assert float((results["dense"] - truth[0]).norm()) < err_b


def test_float32_follows_input_and_matches_float64():
    model, clim, xb, obs, spc, _ = _l96_window(dtype=torch.float32)
    method = FourDVar(clim, xB=0.5, lag=3, shift=3, Q=0.05)
    xa = method.analyse_window(_window(model, xb, obs, spc), None)
    assert xa.dtype == torch.float32 and xa.shape == (12,)
    model, clim, xb, obs, spc, _ = _l96_window()
    ref = FourDVar(clim, xB=0.5, lag=3, shift=3, Q=0.05).analyse_window(_window(model, xb, obs, spc), None)
    # the increment is 9% of the state; float32 agrees to 1.5e-7 of the max (measured)
    torch.testing.assert_close(xa.double(), ref, rtol=0, atol=1e-5 * float(ref.abs().max()))


def test_lag0_is_threedvar():
    model, clim, xb, obs, spc, _ = _l96_window()
    o = obs[0]
    ref = ThreeDVar(clim, xB=0.6, tol=1e-11, max_outer=40)
    method = FourDVar(clim, xB=0.6, lag=0, tol=1e-11, max_outer=40)
    state = method.initial_state(xb, 0.0)
    state = method.forecast(model, state, spc, 0.0)
    state = method.analyse(state, o, spc * model.dt)
    expected = ref.analyse(model.forecast(xb, spc), o)
    assert torch.allclose(state.current, expected, atol=1e-9)
    assert torch.equal(state.start, state.current)
    assert method.diagnostics()["cost_final"] == pytest.approx(
        ref.diagnostics()["cost_final"], rel=1e-9
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"xB": 0.0}, "xB"),
        ({"xB": -1.0}, "xB"),
        ({"Q": torch.eye(3, dtype=F64)}, "shape"),
        ({"Q": -torch.eye(8, dtype=F64)}, "positive definite"),
        ({"Q": torch.triu(torch.ones(8, 8, dtype=F64))}, "symmetric"),
        ({"Q": 0.0}, "Q"),
        ({"Q": True}, "Q"),
        ({"Q": 0.1, "xQ": 0.1}, "not both"),
        ({"xQ": -0.1}, "xQ"),
        ({"max_outer": 0}, "max_outer"),
        ({"max_inner": 1.5}, "max_inner"),
        ({"linearization": "magic"}, "linearization"),
        ({"lag": -1}, "lag"),
    ],
)
def test_bad_input(clim8, kwargs, match):
    with pytest.raises(ValueError, match=match):
        FourDVar(clim8, **kwargs)


def test_wrong_state_shape(clim8):
    method = FourDVar(clim8)
    model = LinearModel(torch.eye(5, dtype=F64))
    o = Observation(torch.zeros(5, dtype=F64), lambda x: x, DiagonalError(torch.ones(5, dtype=F64)))
    with pytest.raises(ValueError, match="shape"):
        method.analyse_window(Window(model, torch.zeros(5, dtype=F64), 0.0, [o], [1], 1, 1), None)


def test_identity_B_shape_equals_identity_climatology():
    """B="identity" is xB * I whatever the climatology; unknown shapes are rejected."""
    n = 6
    g = torch.Generator().manual_seed(3)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    clim = (torch.zeros(n, dtype=torch.float64), a @ a.mT + torch.eye(n, dtype=torch.float64))
    eye = (clim[0], torch.eye(n, dtype=torch.float64))
    m1 = FourDVar(clim, xB=0.3, B="identity")
    m2 = FourDVar(eye, xB=0.3)
    torch.testing.assert_close(m1.B_sqrt, m2.B_sqrt)
    torch.testing.assert_close(m1.B_sqrt @ m1.B_sqrt, 0.3 * torch.eye(n, dtype=torch.float64))
    with pytest.raises(ValueError, match="B must be one of"):
        FourDVar(clim, B="diagonal")
