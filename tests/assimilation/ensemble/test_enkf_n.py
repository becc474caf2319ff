"""EnKF-N (dual form) against direct minimisation of its primal cost, its Hessian and exact limits."""

from __future__ import annotations

import math

import pytest
import torch
from ens_helpers import linear_obs, random_spd

from hybrida.assimilation.ensemble import ETKF
from hybrida.assimilation.ensemble.enkf_n import (
    EnKFN,
    dual_cost,
    dual_gradient,
    enkf_n_transform,
    hyperprior_constants,
    solve_dual,
)
from hybrida.assimilation.ensemble.inflation import inflate_multiplicative

F64 = torch.float64


def _problem(case: str, N: int = 8, n: int = 6, seed: int = 0, innov: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(N, n, generator=g, dtype=F64) * torch.linspace(0.5, 2.0, n, dtype=F64) + 1.0
    if case == "identity":
        Hm = torch.eye(n, dtype=F64)
        R = 0.4 * torch.ones(n, dtype=F64)
    elif case == "subset":
        Hm = torch.eye(n, dtype=F64)[[0, 2, 5]]
        R = torch.tensor([0.3, 1.0, 2.0], dtype=F64)
    else:  # correlated R, dense H, more observations than members
        Hm = torch.randn(11, n, generator=g, dtype=F64)
        R = random_spd(11, g)
    y = Hm @ E.mean(0) + innov * torch.randn(Hm.shape[0], generator=g, dtype=F64)
    return E, Hm, R, y


def _primal(E, Hm, R, y):
    """Primal cost J(w) = ½ (δ - Yᵀw)ᵀ R⁻¹ (δ - Yᵀw) + ½ K log(ε + wᵀw), written from scratch."""
    Rm = torch.diag(R) if R.ndim == 1 else R
    xm = E.mean(0)
    Y = (E - xm) @ Hm.T  # (N, p) unscaled observed anomalies
    delta = y - Hm @ xm
    Rinv = torch.linalg.inv(Rm)

    def J(w, eps, K):
        r = delta - w @ Y
        return 0.5 * r @ Rinv @ r + 0.5 * K * torch.log(eps + w @ w)

    return J, Y, Rinv


def _lbfgs(J, w0):
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [w],
        lr=1.0,
        max_iter=2000,
        tolerance_grad=1e-13,
        tolerance_change=1e-18,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        value = J(w)
        value.backward()
        return value

    opt.step(closure)
    # polish with plain Newton steps on the primal (LBFGS stalls at gradients ~1e-8)
    w = w.detach()
    for _ in range(5):
        grad = torch.autograd.functional.jacobian(J, w)
        hess = torch.autograd.functional.hessian(J, w)
        if torch.linalg.eigvalsh(hess).min() <= 0:
            break
        w = w - torch.linalg.solve(hess, grad)
    return w


def _constants(Y, Rinv, N, xN, g, mode_correction):
    """ε, K from singular values of Y R^{-1/2} (DAPPER's route), independent of the eigh route."""
    eps, K = (N + 1) / N, float(N + g)
    if mode_correction:
        Rih = torch.linalg.cholesky(Rinv)  # Y Rinv Yᵀ = (Y L)(Y L)ᵀ
        s = torch.linalg.svdvals(Y @ Rih)
        s2 = torch.zeros(N, dtype=F64)
        s2[: len(s)] = s[:N] ** 2
        weight = float(((N - 1) / (s2 + N - 1)).mean())
        mc = math.sqrt(((N + 1) / N * (N - 1) / (N + g)) ** weight)
        eps, K = eps / mc, K * mc
    return xN * eps, xN * K


@pytest.mark.parametrize("case", ["identity", "subset", "correlated"])
@pytest.mark.parametrize(
    "xN, g, mode_correction", [(1.0, 0, False), (1.0, 0, True), (2.0, 3, True), (0.5, 0, False)]
)
@pytest.mark.parametrize("innov", [1.0, 6.0])
def test_mean_is_the_primal_minimiser(case, xN, g, mode_correction, innov):
    E, Hm, R, y = _problem(case, innov=innov, seed=3)
    N = E.shape[0]
    J, Y, Rinv = _primal(E, Hm, R, y)
    eps, K = _constants(Y, Rinv, N, xN, g, mode_correction)
    method = EnKFN(N, xN=xN, g=g, mode_correction=mode_correction)
    Ea = method.analyse(E, linear_obs(Hm, y, R))
    A = E - E.mean(0)
    # x̄ + Aᵀ w with A of rank N-1: recover w in the span orthogonal to 1
    w_ours = torch.linalg.lstsq(A.T, Ea.mean(0) - E.mean(0)).solution
    w_ours = w_ours - w_ours.mean()
    starts = [torch.zeros(N, dtype=F64)] + [
        3.0 * torch.randn(N, generator=torch.Generator().manual_seed(k), dtype=F64)
        for k in range(3)
    ]
    sols = [_lbfgs(lambda w: J(w, eps, K), w0) for w0 in starts]
    best = min(sols, key=lambda w: float(J(w, eps, K)))
    assert float(J(w_ours, eps, K)) <= float(J(best, eps, K)) + 1e-12
    # J is invariant along 1 only through the log term's ‖w‖², so the minimiser has 1ᵀw = 0
    assert torch.allclose(w_ours, best, atol=1e-8, rtol=0)
    assert torch.allclose(Ea.mean(0), E.mean(0) + best @ A, atol=1e-8, rtol=0)
    assert float(torch.autograd.functional.jacobian(lambda w: J(w, eps, K), w_ours).norm()) < 1e-10
    # the dual optimum is self-consistent: ζ = K / (ε + ‖w‖²), reported as inflation sqrt((N-1)/ζ)
    zeta = K / (eps + float(best @ best))
    assert method.diagnostics()["zeta"] == pytest.approx(zeta, rel=1e-9)
    assert method.diagnostics()["inflation"] == pytest.approx(math.sqrt((N - 1) / zeta), rel=1e-9)


@pytest.mark.parametrize("case", ["identity", "correlated"])
@pytest.mark.parametrize("hess", [False, True])
def test_anomalies_are_symmetric_root_of_primal_hessian(case, hess):
    E, Hm, R, y = _problem(case, seed=5, innov=4.0)
    N = E.shape[0]
    J, Y, Rinv = _primal(E, Hm, R, y)
    eps, K = _constants(Y, Rinv, N, 1.0, 0, True)
    Ea = EnKFN(N, hess=hess).analyse(E, linear_obs(Hm, y, R))
    A = E - E.mean(0)
    w = _lbfgs(lambda v: J(v, eps, K), torch.zeros(N, dtype=F64))
    if hess:
        Hw = torch.autograd.functional.hessian(lambda v: J(v, eps, K), w)
    else:  # no radial-angular term: the quadratic part plus ζ I, ζ = K/(ε + ‖w‖²)
        quad = torch.autograd.functional.hessian(lambda v: J(v, eps, 0.0), w)
        Hw = quad + K / (eps + w @ w) * torch.eye(N, dtype=F64)
    assert torch.linalg.eigvalsh(Hw).min() > 0
    lam, U = torch.linalg.eigh(Hw)
    T = math.sqrt(N - 1) * (U * lam.rsqrt()) @ U.T
    assert torch.allclose(Ea - Ea.mean(0), T @ A, atol=1e-7, rtol=0)
    # hence the posterior covariance is Aᵀ H⁻¹ A
    Aa = Ea - Ea.mean(0)
    assert torch.allclose(Aa.T @ Aa / (N - 1), A.T @ torch.linalg.solve(Hw, A), atol=1e-7)


def test_transform_is_symmetric_and_mean_preserving():
    g = torch.Generator().manual_seed(2)
    N, p = 7, 12
    Y = torch.randn(N, p, generator=g, dtype=F64)
    S = Y - Y.mean(0)
    d = 3 * torch.randn(p, generator=g, dtype=F64)
    ones = torch.ones(N, dtype=F64)
    for hess in (False, True):
        w, T, zeta = enkf_n_transform(S, d, hess=hess)
        assert torch.allclose(T, T.T, atol=1e-13)
        assert abs(float(w.sum())) < 1e-12
        # 1 is an eigenvector with eigenvalue sqrt((N-1)/ζ): the prior inflation
        assert torch.allclose(T @ ones, math.sqrt((N - 1) / float(zeta)) * ones, atol=1e-12)


def test_zero_innovation_is_etkf_with_closed_form_inflation():
    # d = 0 ⇒ w = 0 and ζ = K/ε exactly: the ETKF on the prior inflated by sqrt((N-1) ε / K)
    E, Hm, R, _ = _problem("correlated", seed=1)
    N = E.shape[0]
    y = Hm @ E.mean(0)
    Ea = EnKFN(N, mode_correction=False).analyse(E, linear_obs(Hm, y, R))
    l = math.sqrt((N - 1) * (N + 1) / N / N)
    Eref = ETKF(N).analyse(inflate_multiplicative(E, l), linear_obs(Hm, y, R))
    assert torch.allclose(Ea, Eref, atol=1e-12, rtol=0)
    assert torch.allclose(Ea.mean(0), E.mean(0), atol=1e-12)


@pytest.mark.parametrize("case", ["identity", "subset", "correlated"])
def test_infinite_hyperprior_confidence_is_etkf_at_the_prior_mode(case):
    # xN → ∞: ζ = K/(ε + ‖w‖²) → K/ε with relative error ‖w‖²/ε = O(1/xN), so the
    # EnKF-N becomes the ETKF with the (mode-corrected) prior inflation sqrt((N-1) ε₁/K₁)
    E, Hm, R, y = _problem(case, seed=4, innov=3.0)
    N = E.shape[0]
    _, Y, Rinv = _primal(E, Hm, R, y)
    eps1, K1 = _constants(Y, Rinv, N, 1.0, 0, True)
    Ea = EnKFN(N, xN=1e10).analyse(E, linear_obs(Hm, y, R))
    Eref = ETKF(N).analyse(
        inflate_multiplicative(E, math.sqrt((N - 1) * eps1 / K1)), linear_obs(Hm, y, R)
    )
    assert torch.allclose(Ea, Eref, atol=1e-7, rtol=0)


def test_uninformative_observations_leave_the_prior_unchanged():
    # R → ∞: the mode correction moves the hyperprior mode to l = 1, so no update, no inflation
    E, Hm, _, y = _problem("identity", seed=6)
    N, n = E.shape
    Ea = EnKFN(N).analyse(E, linear_obs(Hm, y, 1e10 * torch.ones(n, dtype=F64)))
    assert torch.allclose(Ea, E, atol=1e-7, rtol=0)
    Ea_nc = EnKFN(N, mode_correction=False).analyse(
        E, linear_obs(Hm, y, 1e10 * torch.ones(n, dtype=F64))
    )
    l = math.sqrt((N - 1) * (N + 1) / N / N)  # the uncorrected prior mode
    assert torch.allclose(Ea_nc, inflate_multiplicative(E, l), atol=1e-7, rtol=0)


def _bimodal(u2_small: float):
    lam = torch.tensor([0.0, 1e-3, 10.0], dtype=F64)
    u2 = torch.tensor([0.0, u2_small, 300.0], dtype=F64)
    return lam, u2, torch.tensor(4.0 / 3.0, dtype=F64), torch.tensor(10.0, dtype=F64)


@pytest.mark.parametrize("u2_small", [0.05, 0.09, 0.12, 0.3])  # global minimum switches
def test_solve_dual_finds_the_global_minimum_of_a_bimodal_dual(u2_small):
    lam, u2, eps, K = _bimodal(u2_small)
    t = torch.linspace(-14.0, math.log(7.5) + 0.1, 200001, dtype=F64)
    D = dual_cost(t, lam, u2, eps, K)
    # there are two local minima (interior sign changes of the slope from - to +)
    slope = D[1:] - D[:-1]
    assert int(((slope[:-1] < 0) & (slope[1:] >= 0)).sum()) == 2
    zeta = solve_dual(lam, u2, eps, K)
    brute = t[D.argmin()]
    assert abs(float(zeta.log() - brute)) < 1e-3
    assert float(dual_cost(zeta.log().reshape(1), lam, u2, eps, K)) <= float(D.min()) + 1e-12


def test_bimodal_primal_minimum_is_global():
    # a 3-member problem whose dual is bimodal (eigenvalues 1e-3 and 10 of S Sᵀ)
    lam, u2, eps, K = _bimodal(0.12)
    V = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=F64))[0]
    S = V @ torch.diag(lam.sqrt()) @ torch.eye(3, 5, dtype=F64)  # (N, p), S Sᵀ = V Λ Vᵀ
    # u = Vᵀ S d = sqrt(λ) (first 3 entries of d)
    d = torch.zeros(5, dtype=F64)
    d[1:3] = (u2[1:] / lam[1:]).sqrt()
    d[3] = 1.0
    N = 3
    eps_, K_ = hyperprior_constants(lam, N, g=7, mode_correction=False)  # ε = 4/3, K = 10
    assert float(eps_) == pytest.approx(float(eps)) and float(K_) == pytest.approx(float(K))
    w, _, _ = enkf_n_transform(S, d, g=7, mode_correction=False)

    def J(v):
        r = d - v @ S
        return 0.5 * r @ r + 0.5 * K_ * torch.log(eps_ + v @ v)

    starts = [torch.zeros(N, dtype=F64)] + [
        scale * torch.randn(N, generator=torch.Generator().manual_seed(k), dtype=F64)
        for k in range(3)
        for scale in (3.0, 300.0)
    ]
    sols = [_lbfgs(J, w0) for w0 in starts]
    values = torch.stack([J(v) for v in sols])
    assert float(values.max() - values.min()) > 1.0  # the primal has two local minima here
    best = sols[int(values.argmin())]
    assert float(J(w)) <= float(J(best)) + 1e-12
    assert torch.allclose(w, best, atol=1e-7, rtol=0)
    # the other local minimum of the dual (near ζ = e^1.2, where a Newton search from
    # ζ = N-1 would stop) maps to a clearly worse primal point
    a, b = torch.tensor(0.0, dtype=F64), torch.tensor(2.0, dtype=F64)
    for _ in range(80):
        mid = 0.5 * (a + b)
        slope, _ = dual_gradient(mid.reshape(1), lam, u2, eps, K)
        a, b = (mid, b) if float(slope) < 0 else (a, mid)
    V_, U_ = torch.linalg.eigh(S @ S.T)
    w_alt = U_ @ ((U_.T @ (S @ d)) / (V_.clamp_min(0) + a.exp()))
    assert float(J(w_alt)) > float(J(w)) + 1.0


def test_hyperprior_constants_match_the_papers_without_correction():
    lam = torch.rand(4, 9, generator=torch.Generator().manual_seed(0), dtype=F64)
    eps, K = hyperprior_constants(lam, 9, xN=1.0, g=0, mode_correction=False)
    assert torch.allclose(eps, torch.full((4,), 10 / 9, dtype=F64))
    assert torch.allclose(K, torch.full((4,), 9.0, dtype=F64))
    eps2, K2 = hyperprior_constants(lam, 9, xN=2.5, g=2, mode_correction=False)
    assert torch.allclose(eps2, 2.5 * eps) and torch.allclose(K2, torch.full((4,), 27.5, dtype=F64))


def test_nan_observations_are_dropped():
    E, Hm, R, y = _problem("identity")
    y_nan = y.clone()
    y_nan[[1, 4]] = float("nan")
    keep = torch.tensor([0, 2, 3, 5])
    N = E.shape[0]
    Ea = EnKFN(N).analyse(E, linear_obs(Hm, y_nan, R))
    Eref = EnKFN(N).analyse(E, linear_obs(Hm[keep], y[keep], R[keep]))
    assert torch.allclose(Ea, Eref, atol=1e-13)
    method = EnKFN(N, infl=1.5)
    assert torch.equal(method.analyse(E, linear_obs(Hm, torch.full_like(y, float("nan")), R)), E)
    assert method.diagnostics() == {"n_obs": 0.0}


def test_batched_equals_per_slice_and_float32():
    E, Hm, R, y = _problem("correlated", seed=7, innov=3.0)
    g = torch.Generator().manual_seed(8)
    Eb = torch.stack([E, E * 0.5 + 1.0, torch.randn(E.shape, generator=g, dtype=F64)])
    obs = linear_obs(Hm, y, R)
    method = EnKFN(E.shape[0], hess=True)
    out = method.analyse(Eb, obs)
    zetas = []
    for b in range(3):
        assert torch.allclose(out[b], method.analyse(Eb[b], obs), atol=1e-11)
        zetas.append(method.diagnostics()["zeta"])
    out32 = method.analyse(Eb.float(), obs)
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.double(), out, atol=2e-4)
    method.analyse(Eb, obs)
    assert method.diagnostics()["zeta"] == pytest.approx(sum(zetas) / 3, rel=1e-10)


def test_rotation_and_inflation_are_seeded_and_applied():
    E, Hm, R, y = _problem("identity", seed=9)
    N = E.shape[0]
    obs = linear_obs(Hm, y, R)
    plain = EnKFN(N).analyse(E, obs)
    inflated = EnKFN(N, infl=1.3).analyse(E, obs)
    assert torch.allclose(inflated, inflate_multiplicative(plain, 1.3), atol=1e-13)
    a = EnKFN(N, rot=True).analyse(E, obs, generator=torch.Generator().manual_seed(1))
    b = EnKFN(N, rot=True).analyse(E, obs, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.allclose(a, plain)
    assert torch.allclose(a.mean(0), plain.mean(0), atol=1e-12)
    Ap, Aa = plain - plain.mean(0), a - a.mean(0)
    assert torch.allclose(Aa.T @ Aa, Ap.T @ Ap, atol=1e-11)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"N": 1}, "N must be an integer >= 2"),
        ({"N": 5.0}, "N must be an integer"),
        ({"N": 5, "xN": 0.0}, "xN"),
        ({"N": 5, "xN": -1.0}, "xN"),
        ({"N": 5, "xN": float("inf")}, "xN"),
        ({"N": 5, "xN": "2"}, "xN"),
        ({"N": 5, "xN": True}, "xN"),
        ({"N": 5, "g": -1}, "g must be an integer >= 0"),
        ({"N": 5, "g": 1.5}, "g must be an integer"),
        ({"N": 5, "hess": "yes"}, "hess"),
        ({"N": 5, "mode_correction": 1}, "mode_correction"),
        ({"N": 5, "infl": 0.0}, "infl"),
        ({"N": 5, "rot": "no"}, "rot"),
        ({"N": 5, "rtps": 2.0}, "rtps"),
    ],
)
def test_bad_parameters(kwargs, match):
    kwargs = dict(kwargs)
    N = kwargs.pop("N")
    with pytest.raises(ValueError, match=match):
        EnKFN(N, **kwargs)


def test_bad_prior():
    E, Hm, R, y = _problem("identity")
    with pytest.raises(ValueError, match="members"):
        EnKFN(5).analyse(E, linear_obs(Hm, y, R))
    with pytest.raises(ValueError, match="floating"):
        EnKFN(E.shape[0]).analyse(E.long(), linear_obs(Hm, y, R))
