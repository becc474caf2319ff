"""Verification scores against direct formulas."""

from __future__ import annotations

import itertools
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybrida import metrics


def test_rmse_matches_formula():
    a = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    expected = torch.tensor([math.sqrt((0 + 4 + 9) / 3), math.sqrt(1 / 3)], dtype=torch.float64)
    assert torch.allclose(metrics.rmse(a, b), expected)


@settings(max_examples=25, deadline=None)
@given(N=st.integers(2, 7), n=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_crps_ensemble_equals_pairwise_definition(N, n, seed):
    g = torch.Generator().manual_seed(seed)
    members = torch.randn(N, n, generator=g, dtype=torch.float64)
    truth = torch.randn(n, generator=g, dtype=torch.float64)
    term1 = (members - truth).abs().mean(0)
    pairs = torch.stack([(members[i] - members[j]).abs() for i, j in itertools.product(range(N), repeat=2)])
    expected = (term1 - 0.5 * pairs.mean(0)).mean()
    assert torch.allclose(metrics.crps_ensemble(members, truth), expected, atol=1e-12)


def test_crps_gaussian_limit_of_large_ensemble():
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([0.3, -1.0], dtype=torch.float64)
    std = torch.tensor([1.0, 0.5], dtype=torch.float64)
    truth = torch.tensor([0.0, 0.2], dtype=torch.float64)
    members = mean + std * torch.randn(20000, 2, generator=g, dtype=torch.float64)
    exact = metrics.crps_gaussian(mean, std, truth)
    assert abs(float(metrics.crps_ensemble(members, truth)) - float(exact)) < 0.01
    # CRPS of a point forecast reduces to the absolute error
    assert abs(float(metrics.crps_gaussian(mean, torch.full_like(std, 1e-12), truth)) - 0.75) < 1e-9


def test_rank_histogram_flat_for_exchangeable_truth():
    g = torch.Generator().manual_seed(1)
    N, T = 9, 4000
    draws = torch.randn(T, N + 1, 1, generator=g, dtype=torch.float64)
    ranks = metrics.rank_of_truth(draws[:, :N], draws[:, N])
    hist = metrics.rank_histogram(ranks, N)
    assert hist.sum() == T and hist.shape == (N + 1,)
    expected = T / (N + 1)
    assert float((hist - expected).abs().max()) < 5 * math.sqrt(expected)
    # an under-dispersive ensemble piles up in the outer ranks
    ranks_narrow = metrics.rank_of_truth(0.2 * draws[:, :N], draws[:, N])
    hist_narrow = metrics.rank_histogram(ranks_narrow, N)
    assert hist_narrow[0] + hist_narrow[-1] > 0.5 * T


def test_spread_and_ratio():
    members = torch.tensor([[0.0, 2.0], [2.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(metrics.spread(members), torch.tensor(math.sqrt(2.0), dtype=torch.float64))
    assert float(metrics.spread_skill_ratio(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 2.0]))) == 0.5


def test_valid_time_first_crossing():
    times = torch.arange(5, dtype=torch.float64)
    errors = torch.tensor([[0.1, 0.2, 0.6, 0.9, 1.0], [0.1, 0.1, 0.1, 0.1, 0.1]])
    vt = metrics.valid_time(errors, times, 0.5)
    assert vt.tolist() == [2.0, 4.0]
