"""Innovation likelihood and variance MLE without statsmodels: a scalar Kalman filter by hand, simplex, moments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hybrida.innovations import CycleInnovations, summarize_innovations
from hybrida.learn.variance_mle import (
    fit_local_level,
    local_level_loglik,
    moment_variances,
    nelder_mead,
    with_obs_variance,
)
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError


def _local_level(T: int, eps: float, eta: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    level = 100.0 + np.cumsum(rng.normal(0.0, math.sqrt(eta), T))
    return level + rng.normal(0.0, math.sqrt(eps), T)


def _observations(y: np.ndarray) -> list[Observation]:
    return [
        Observation(
            y=torch.tensor([v], dtype=torch.float64),
            operator=lambda x: x[..., :1],
            error=DiagonalError(torch.ones(1, dtype=torch.float64)),
            locations=torch.zeros(1, dtype=torch.float64),
            matrix=torch.ones(1, 1, dtype=torch.float64),
            meta={"cycle": k},
        )
        for k, v in enumerate(y, start=1)
    ]


def _scalar_kalman_loglik(y: np.ndarray, eps: float, eta: float, kappa: float, burn: int) -> float:
    """Durbin & Koopman (2012) eqs. 2.15 and 7.2 for the local level, a_1 = 0, P_1 = kappa."""
    a, P, total = 0.0, kappa, 0.0
    for k, v in enumerate(y):
        F = P + eps
        innov = v - a
        if k >= burn:
            total += -0.5 * (math.log(2 * math.pi * F) + innov * innov / F)
        K = P / F
        a, P = a + K * innov, P * (1 - K) + eta
    return total


def test_cycle_loglik_is_the_gaussian_log_density_of_the_innovations():
    omb = torch.tensor([1.0, -2.0, float("nan")], dtype=torch.float64)
    c = CycleInnovations(omb=omb, oma=0.5 * omb, hbh=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
                         r=torch.full((3,), 0.5, dtype=torch.float64))
    expected = sum(-0.5 * (math.log(2 * math.pi * F) + d * d / F) for d, F in [(1.0, 1.5), (-2.0, 2.5)])
    assert c.sums()["loglik"] == pytest.approx(expected, rel=1e-14)
    assert summarize_innovations([c, c])["innovation_loglik"] == pytest.approx(2 * expected, rel=1e-14)
    assert summarize_innovations([])["innovation_loglik"] == 0.0


@pytest.mark.parametrize(("kappa", "burn"), [(1e6, 1), (50.0, 0)])
def test_filter_loglik_equals_a_scalar_kalman_filter_by_hand(kappa, burn):
    y = _local_level(60, eps=4.0, eta=1.0, seed=3)
    obs = _observations(y)
    for eps, eta in [(4.0, 1.0), (0.5, 9.0)]:
        got = local_level_loglik(obs, eps, eta, diffuse_variance=kappa, burn=burn)
        assert got == pytest.approx(_scalar_kalman_loglik(y, eps, eta, kappa, burn), rel=1e-11)


def test_fit_recovers_simulated_variances_and_beats_its_start():
    y = _local_level(80, eps=4.0, eta=1.0, seed=7)
    obs = _observations(y)
    fit = fit_local_level(obs, xatol=1e-2, fatol=1e-3)
    assert fit.converged
    assert fit.loglik >= local_level_loglik(obs, *fit.start)
    # sampling error of 80 values: loose bounds around the truth (4, 1)
    assert 2.0 < fit.obs_variance < 8.0 and 0.3 < fit.level_variance < 3.0


def test_moments_and_validation():
    eps, eta = moment_variances(_local_level(20000, eps=4.0, eta=1.0, seed=11))
    assert eps == pytest.approx(4.0, rel=0.1) and eta == pytest.approx(1.0, rel=0.25)
    with pytest.raises(ValueError, match="at least 4"):
        moment_variances([1.0, 2.0, float("nan")])
    obs = _observations(np.arange(5.0))
    assert float(with_obs_variance(obs, 3.0)[2].error.variance) == 3.0
    assert float(obs[2].error.variance) == 1.0  # copies: the input is untouched
    with pytest.raises(ValueError, match="level_variance"):
        local_level_loglik(obs, 1.0, 0.0)
    with pytest.raises(ValueError, match="start"):
        fit_local_level(obs, start=(1.0, -1.0))


def test_nelder_mead_finds_the_rosenbrock_minimum_and_stops_at_its_budget():
    res = nelder_mead(lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2, [-1.2, 1.0], xatol=1e-8,
                      fatol=1e-14, max_evaluations=2000)
    assert res.converged
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-6)
    capped = nelder_mead(lambda x: float(np.sum(x**2)), [3.0, 3.0], max_evaluations=10)
    assert not capped.converged and capped.n_evaluations <= 12
    # a non-finite value is a rejected step, not a crash
    res = nelder_mead(lambda x: math.inf if x[0] < 0 else (x[0] - 1) ** 2, [0.2], step=0.5)
    assert res.converged and res.x[0] == pytest.approx(1.0, abs=1e-5)
