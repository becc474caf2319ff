"""Stochastic EnKF: Monte-Carlo agreement with the Kalman analysis, reproducibility, p > N form."""

from __future__ import annotations

import pytest
import torch
from ens_helpers import kalman_analysis, linear_obs, random_spd, sample_stats

from hybrida.assimilation.ensemble import EnKF

F64 = torch.float64


def _prior(N: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    L = torch.linalg.cholesky(random_spd(n, g))
    return torch.randn(N, n, generator=g, dtype=F64) @ L.T + 1.0


@pytest.mark.parametrize("correlated", [False, True])
def test_enkf_large_ensemble_matches_kalman(correlated):
    N, n = 20000, 4
    E = _prior(N, n, 0)
    g = torch.Generator().manual_seed(1)
    Hm = torch.randn(3, n, generator=g, dtype=F64)
    R = random_spd(3, g) if correlated else torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    Rm = R if correlated else torch.diag(R)
    y = torch.tensor([1.0, -0.5, 2.0], dtype=F64)
    xm, P = sample_stats(E)
    mean_kf, cov_kf = kalman_analysis(xm, P, Hm, Rm, y)
    Ea = EnKF(N).analyse(E, linear_obs(Hm, y, R), generator=torch.Generator().manual_seed(2))
    mean_a, cov_a = sample_stats(Ea)
    # centred perturbations: the mean is the Kalman mean of the prior sample exactly
    assert torch.allclose(mean_a, mean_kf, atol=1e-10)
    # covariance within Monte-Carlo error (relative Frobenius ~ sqrt(2/N) ≈ 1%)
    rel = float(torch.linalg.norm(cov_a - cov_kf) / torch.linalg.norm(cov_kf))
    assert rel < 0.04, rel
    # without observation perturbations the spread would be far too small: the test can tell
    K = torch.linalg.solve(Hm @ P @ Hm.T + Rm, Hm @ P).T
    no_pert = (torch.eye(n, dtype=F64) - K @ Hm) @ P @ (torch.eye(n, dtype=F64) - K @ Hm).T
    assert float(torch.linalg.norm(no_pert - cov_kf) / torch.linalg.norm(cov_kf)) > 0.1


def test_enkf_ensemble_space_form_for_many_observations():
    # p > N uses the N×N system; the mean is still the Kalman mean of the sample
    N, n = 8, 30
    E = _prior(N, n, 3)
    g = torch.Generator().manual_seed(4)
    Hm = torch.eye(n, dtype=F64)
    R = torch.full((n,), 0.7, dtype=F64)
    y = torch.randn(n, generator=g, dtype=F64)
    mean_kf, _ = kalman_analysis(*sample_stats(E), Hm, torch.diag(R), y)
    Ea = EnKF(N).analyse(E, linear_obs(Hm, y, R), generator=torch.Generator().manual_seed(5))
    assert torch.allclose(Ea.mean(0), mean_kf, atol=1e-11)


def test_enkf_reproducible_with_generator():
    N, n = 10, 5
    E = _prior(N, n, 6)
    obs = linear_obs(torch.eye(n, dtype=F64), torch.zeros(n, dtype=F64), torch.ones(n, dtype=F64))
    m = EnKF(N)
    a = m.analyse(E, obs, generator=torch.Generator().manual_seed(11))
    b = m.analyse(E, obs, generator=torch.Generator().manual_seed(11))
    c = m.analyse(E, obs, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_enkf_batched_and_nan():
    N, n = 10, 5
    E = torch.stack([_prior(N, n, 7), _prior(N, n, 8)])
    y = torch.tensor([0.1, float("nan"), 0.3, 0.4, float("nan")], dtype=F64)
    obs = linear_obs(torch.eye(n, dtype=F64), y, torch.ones(n, dtype=F64))
    out = EnKF(N).analyse(E, obs, generator=torch.Generator().manual_seed(0))
    assert out.shape == E.shape and bool(torch.isfinite(out).all())
    keep = torch.tensor([0, 2, 3])
    ref = EnKF(N).analyse(
        E,
        linear_obs(torch.eye(n, dtype=F64)[keep], y[keep], torch.ones(3, dtype=F64)),
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.allclose(out, ref, atol=1e-13)
    nan_obs = linear_obs(
        torch.eye(n, dtype=F64), torch.full((n,), float("nan"), dtype=F64), torch.ones(n, dtype=F64)
    )
    assert torch.equal(EnKF(N).analyse(E, nan_obs), E)


@pytest.mark.parametrize("rescale", [True, False])
def test_enkf_perturbation_rescaling(rescale):
    # one scalar variable observed directly: the analysis spread tells the perturbations' variance
    N, reps = 5, 4000
    g = torch.Generator().manual_seed(9)
    E = torch.randn(reps, N, 1, generator=g, dtype=F64)
    E = (E - E.mean(-2, keepdim=True)) / E.std(-2, keepdim=True)  # prior sample variance exactly 1
    R = 1.0
    obs = linear_obs(torch.eye(1, dtype=F64), torch.zeros(1, dtype=F64), torch.full((1,), R, dtype=F64))
    Ea = EnKF(N, rescale=rescale).analyse(E, obs, generator=torch.Generator().manual_seed(10))
    var_a = float(Ea.var(-2).mean())
    # K = 1/2; var_a = (1-K)^2 * 1 + K^2 * c R with c = N/(N-1) (rescaled) or 1 (centred, unbiased)
    c = N / (N - 1) if rescale else 1.0
    expected = 0.25 + 0.25 * c * R
    assert var_a == pytest.approx(expected, rel=0.02)
    other = 0.25 + 0.25 * (1.0 if rescale else N / (N - 1)) * R
    assert abs(var_a - other) > 0.02 * other  # the two conventions differ by more than the tolerance


def test_enkf_rescale_must_be_bool():
    with pytest.raises(ValueError, match="rescale"):
        EnKF(10, rescale="yes")
