"""Square-root EnKS against the exact linear-Gaussian smoother; lag 0 against the ETKF; input checks."""

from __future__ import annotations

import math

import pytest
import torch
from ens_helpers import linear_obs, sample_stats

from hybrida.assimilation.ensemble import ETKF
from hybrida.assimilation.ensemble.enks import enks
from hybrida.models import Lorenz63
from hybrida.models.base import Model
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError

F64 = torch.float64


class LinearModel(Model):
    """x_{t+1} = M x_t (a test model)."""

    def __init__(self, M: torch.Tensor, dt: float = 0.1):
        self.M, self.n, self.dt = M, M.shape[0], dt

    def step(self, x: torch.Tensor, t: float = 0.0) -> torch.Tensor:
        return x @ self.M.mT.to(x)


def exact_ensemble(mean: torch.Tensor, P: torch.Tensor, N: int, g: torch.Generator) -> torch.Tensor:
    """An ensemble (N, n) whose sample mean and unbiased covariance are exactly ``mean`` and ``P``."""
    n = mean.shape[0]
    Z = torch.randn(N, n, generator=g, dtype=F64)
    Z = Z - Z.mean(0)
    lam, V = torch.linalg.eigh(Z.T @ Z / (N - 1))
    white = Z @ (V * lam.rsqrt()) @ V.T  # sample covariance I
    return mean + white @ torch.linalg.cholesky(P).T


def linear_problem(n: int = 4, N: int = 7, K: int = 6, steps: int = 2, seed: int = 0):
    """Linear model, exact initial ensemble, K cycles of observations (one with a NaN, one all NaN)."""
    g = torch.Generator().manual_seed(seed)
    M = torch.eye(n, dtype=F64) + 0.15 * torch.randn(n, n, generator=g, dtype=F64)
    model = LinearModel(M)
    m0 = torch.randn(n, generator=g, dtype=F64)
    B = torch.randn(n, n, generator=g, dtype=F64)
    P0 = B @ B.T / n + 0.3 * torch.eye(n, dtype=F64)
    E0 = exact_ensemble(m0, P0, N, g)
    truth = m0 + torch.linalg.cholesky(P0) @ torch.randn(n, generator=g, dtype=F64)
    observations, mats = [], []
    Mc = torch.linalg.matrix_power(M, steps)
    for k in range(1, K + 1):
        truth = Mc @ truth
        Hm = torch.randn(3, n, generator=g, dtype=F64)
        R = torch.rand(3, generator=g, dtype=F64) + 0.2
        y = Hm @ truth + R.sqrt() * torch.randn(3, generator=g, dtype=F64)
        if k == 2:
            y[1] = math.nan
        if k == 4:
            y[:] = math.nan
        observations.append(linear_obs(Hm, y, R))
        mats.append((Hm, R, y))
    return model, Mc, m0, P0, E0, observations, mats


def smoother_oracle(Mc, m0, P0, mats, j: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of x_j given y_1..y_k for x_{i} = Mc x_{i-1}, x_0 ~ N(m0, P0).

    With no model noise every state is Mc^j x_0, so the posterior of x_0 in
    information form, Λ = P0⁻¹ + Σ_i Φ_iᵀ Hᵢᵀ Rᵢ⁻¹ Hᵢ Φ_i (Φ_i = Mc^i), pushed
    forward by Φ_j is the exact (Rauch–Tung–Striebel) answer; NaN rows are skipped.
    """
    P0i = torch.linalg.inv(P0)
    info, vec = P0i.clone(), P0i @ m0
    for i in range(1, k + 1):
        Hm, R, y = mats[i - 1]
        ok = torch.isfinite(y)
        G = Hm[ok] @ torch.linalg.matrix_power(Mc, i)
        info = info + G.T @ (G / R[ok, None])
        vec = vec + G.T @ (y[ok] / R[ok])
    cov0 = torch.linalg.inv(info)
    Phi = torch.linalg.matrix_power(Mc, j)
    cov = Phi @ cov0 @ Phi.T
    return Phi @ cov0 @ vec, 0.5 * (cov + cov.T)


@pytest.mark.parametrize("lag", [0, 1, 2, 6, 10])
@pytest.mark.parametrize("rot", [False, True])
def test_enks_equals_exact_smoother(lag, rot):
    model, Mc, m0, P0, E0, observations, mats = linear_problem()
    K = len(observations)
    g = torch.Generator().manual_seed(5)
    res = enks(model, E0, observations, steps_per_cycle=2, lag=lag, rot=rot, generator=g)
    assert res.filtered.shape == res.smoothed.shape == (K + 1, *E0.shape)
    assert torch.equal(res.filtered[0], E0)
    assert res.n_obs == [3, 2, 3, 0, 3, 3]
    for j in range(K + 1):
        mean_f, cov_f = smoother_oracle(Mc, m0, P0, mats, j, j)
        mean_s, cov_s = smoother_oracle(Mc, m0, P0, mats, j, min(j + lag, K))
        for E, mean, cov in ((res.filtered[j], mean_f, cov_f), (res.smoothed[j], mean_s, cov_s)):
            em, ec = sample_stats(E)
            assert torch.allclose(em, mean, atol=1e-8, rtol=0), (j, em, mean)
            assert torch.allclose(ec, cov, atol=1e-8, rtol=0), j
    if lag == 0:
        assert torch.equal(res.smoothed, res.filtered)
    else:  # the smoother did something: the smoothed start differs from the filter's
        assert (res.smoothed[0].mean(0) - res.filtered[0].mean(0)).abs().max() > 1e-3


@pytest.mark.parametrize(("infl", "rot"), [(1.0, False), (1.05, False), (1.05, True)])
def test_lag0_equals_etkf_on_lorenz63(infl, rot):
    model = Lorenz63()
    g = torch.Generator().manual_seed(1)
    x = torch.tensor([1.509, -1.531, 25.46], dtype=F64)
    E0 = x + 2.0 * torch.randn(10, 3, generator=g, dtype=F64)
    error = DiagonalError(torch.full((3,), 2.0, dtype=F64))
    observations = []
    for _ in range(15):
        x = model.forecast(x, 25)
        y = x + math.sqrt(2.0) * torch.randn(3, generator=g, dtype=F64)
        observations.append(Observation(y=y, operator=lambda z: z, error=error))
    res = enks(model, E0, observations, 25, lag=0, infl=infl, rot=rot, generator=torch.Generator().manual_seed(7))
    etkf, gen, E = ETKF(10, infl=infl, rot=rot), torch.Generator().manual_seed(7), E0
    for k, obs in enumerate(observations, start=1):
        E = etkf.analyse(etkf.forecast(model, E, 25, (k - 1) * 0.25), obs, k * 0.25, gen)
        assert torch.allclose(res.filtered[k], E, atol=1e-10, rtol=0), k
    assert torch.equal(res.smoothed, res.filtered)
    assert torch.allclose(res.times, 0.25 * torch.arange(16, dtype=F64))


def test_inflation_applies_to_the_filter_only():
    model, _, _, _, E0, observations, _ = linear_problem()
    plain = enks(model, E0, observations[:1], 2, lag=1)
    inflated = enks(model, E0, observations[:1], 2, lag=1, infl=1.1)
    # one analysis: the lagged start gets the same transform, only the filter ensemble is inflated
    assert torch.allclose(inflated.smoothed[0], plain.smoothed[0], atol=1e-12)
    f_plain, f_infl = plain.filtered[1], inflated.filtered[1]
    assert torch.allclose(f_infl.mean(0), f_plain.mean(0), atol=1e-12)
    assert torch.allclose(f_infl - f_infl.mean(0), 1.1 * (f_plain - f_plain.mean(0)), atol=1e-12)
    assert torch.equal(inflated.smoothed[1], inflated.filtered[1])


def test_batch_and_float32():
    model, _, _, _, E0, observations, _ = linear_problem()
    E1 = E0 + 0.3
    batch = enks(model, torch.stack([E0, E1]), observations, 2, lag=2)
    assert batch.smoothed.shape == (7, 2, *E0.shape)
    for b, E in enumerate((E0, E1)):
        single = enks(model, E, observations, 2, lag=2)
        assert torch.allclose(batch.smoothed[:, b], single.smoothed, atol=1e-12)
        assert torch.allclose(batch.filtered[:, b], single.filtered, atol=1e-12)
    res32 = enks(model, E0.float(), observations, 2, lag=2)
    assert res32.smoothed.dtype == torch.float32
    assert torch.allclose(res32.smoothed.double(), enks(model, E0, observations, 2, lag=2).smoothed, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lag": -1}, "lag"),
        ({"lag": 1.5}, "lag"),
        ({"steps_per_cycle": 0}, "steps_per_cycle"),
        ({"infl": 0.0}, "infl"),
        ({"rot": 1}, "rot"),
        ({"E0": torch.zeros(7, dtype=F64)}, "E0"),
        ({"E0": torch.zeros(1, 4, dtype=F64)}, "N >= 2"),
        ({"E0": torch.zeros(7, 5, dtype=F64)}, "state size"),
        ({"E0": torch.zeros(7, 4, dtype=torch.int64)}, "floating"),
        ({"observations": [torch.zeros(3)]}, "Observation"),
    ],
)
def test_bad_input(kwargs, match):
    model, _, _, _, E0, observations, _ = linear_problem()
    args = {"model": model, "E0": E0, "observations": observations, "steps_per_cycle": 2, "lag": 1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        enks(**args)
