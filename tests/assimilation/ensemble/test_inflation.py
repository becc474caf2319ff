"""Multiplicative inflation, RTPS, RTPP and the adaptive inflation estimate."""

from __future__ import annotations

import math

import pytest
import torch
from ens_helpers import subset_obs

from hybrida.assimilation.ensemble import ETKF
from hybrida.assimilation.ensemble.inflation import (
    AdaptiveInflation,
    inflate_multiplicative,
    rtpp,
    rtps,
)


def _ens(seed: int, N: int = 7, n: int = 5, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(3, N, n, generator=g, dtype=torch.float64) + 2.0


def test_multiplicative_scales_anomalies_keeps_mean():
    E = _ens(0)
    Ei = inflate_multiplicative(E, 1.3)
    assert torch.allclose(Ei.mean(-2), E.mean(-2))
    assert torch.allclose(Ei.std(-2), 1.3 * E.std(-2))


def test_rtps_relaxes_spread_per_variable():
    Ef, Ea = _ens(1, scale=2.0), _ens(2, scale=0.5)
    out = rtps(Ea, Ef, 0.7)
    sa, sf = Ea.std(-2), Ef.std(-2)
    assert torch.allclose(out.std(-2), 0.3 * sa + 0.7 * sf)
    assert torch.allclose(out.mean(-2), Ea.mean(-2))
    assert torch.allclose(rtps(Ea, Ef, 1.0).std(-2), sf)
    assert torch.equal(rtps(Ea, Ef, 0.0), Ea)


def test_rtpp_blends_perturbations():
    Ef, Ea = _ens(1), _ens(2)
    out = rtpp(Ea, Ef, 0.25)
    Af = Ef - Ef.mean(-2, keepdim=True)
    Aa = Ea - Ea.mean(-2, keepdim=True)
    assert torch.allclose(out - out.mean(-2, keepdim=True), 0.75 * Aa + 0.25 * Af)
    assert torch.allclose(out.mean(-2), Ea.mean(-2))


def test_fixed_inflation_applies_to_posterior():
    E = _ens(4)[0]
    n = E.shape[-1]
    obs = subset_obs(torch.arange(n), torch.zeros(n, dtype=torch.float64), 1.0, n)
    Ea = ETKF(7).analyse(E, obs)
    Ei = ETKF(7, infl=1.2).analyse(E, obs)
    assert torch.allclose(Ei.mean(0), Ea.mean(0))
    assert torch.allclose(Ei.std(0), 1.2 * Ea.std(0))


def test_adaptive_inflation_recovers_underdispersion():
    # innovations drawn with prior covariance lam_true * P while the ensemble says P
    lam_true, n, N = 2.5, 30, 12
    g = torch.Generator().manual_seed(5)
    E = torch.randn(N, n, generator=g, dtype=torch.float64)
    xm = E.mean(0)
    A = E - xm
    P = A.T @ A / (N - 1)
    L = torch.linalg.cholesky(lam_true * P + 1e-10 * torch.eye(n, dtype=torch.float64))
    method = ETKF(N, adaptive=True)
    method.adaptive_inflation.var_prior = 0.15**2  # faster adaptation than the default
    for _ in range(250):
        xt = xm + L @ torch.randn(n, generator=g, dtype=torch.float64)
        y = xt + torch.randn(n, generator=g, dtype=torch.float64)
        method.analyse(E, subset_obs(torch.arange(n), y, 1.0, n))
    est = method.diagnostics()["inflation"]
    assert abs(est**2 - lam_true) < 0.25, est**2
    assert method.adaptive_inflation.value == pytest.approx(est**2)


def test_adaptive_inflation_stays_at_one_when_consistent():
    state = AdaptiveInflation()
    g = torch.Generator().manual_seed(9)
    for _ in range(200):
        S = torch.randn(10, 40, generator=g, dtype=torch.float64) / 3.0
        t = S.T @ S  # (p, p) ensemble covariance in whitened space
        cov = t + torch.eye(40, dtype=torch.float64)
        d = torch.linalg.cholesky(cov) @ torch.randn(40, generator=g, dtype=torch.float64)
        state.update(d, S)
    assert 1.0 <= state.value < 1.15
    assert math.isclose(state.std_factor, math.sqrt(state.value))


def test_adaptive_inflation_rejects_bad_settings():
    with pytest.raises(ValueError):
        AdaptiveInflation(value=0.5)
    with pytest.raises(ValueError):
        AdaptiveInflation(var_prior=0.0)
