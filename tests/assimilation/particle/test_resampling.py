"""Resampling schemes: unbiasedness, count bounds, ESS, log-domain normalisation, reproducibility."""

from __future__ import annotations

import math

import pytest
import torch

from hybrida.assimilation.particle.resampling import (
    SCHEMES,
    counts_to_indices,
    duplicated,
    ess,
    normalise_log_weights,
    resample,
    systematic,
)


def _weights(N: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(N, generator=g, dtype=torch.float64) ** 3  # uneven weights
    w[3] = 0.0
    return (w / w.sum()).to(dtype)


def _counts(idx: torch.Tensor, N: int) -> torch.Tensor:
    return torch.zeros(*idx.shape[:-1], N, dtype=torch.float64).scatter_add_(
        -1, idx, torch.ones_like(idx, dtype=torch.float64)
    )


@pytest.mark.parametrize("scheme", SCHEMES)
def test_unbiased_counts(scheme):
    """E[N_i] = N w_i: the mean count over many independent draws matches within 5 sigma."""
    N, R = 12, 20000
    w = _weights(N, 0)
    g = torch.Generator().manual_seed(1)
    idx = resample(w.expand(R, N), g, scheme)  # R independent weight vectors
    assert idx.shape == (R, N) and idx.dtype == torch.long
    counts = _counts(idx, N)
    assert torch.all(counts.sum(-1) == N)
    mean = counts.mean(0)
    sigma = (counts.var(0) / R).sqrt() + 1e-3
    assert torch.all((mean - N * w).abs() <= 5 * sigma), (mean, N * w)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_sorted_in_range_and_zero_weight_never_drawn(scheme):
    N = 50
    w = _weights(N, 2)
    idx = resample(w.expand(200, N), torch.Generator().manual_seed(3), scheme)
    assert torch.all(idx[..., 1:] >= idx[..., :-1])
    assert int(idx.min()) >= 0 and int(idx.max()) < N
    assert not bool((idx == 3).any())


def test_systematic_counts_within_floor_ceil():
    N = 37
    w = _weights(N, 4)
    idx = resample(w.expand(500, N), torch.Generator().manual_seed(5), "systematic")
    counts = _counts(idx, N)
    assert torch.all(counts >= torch.floor(N * w) - 1e-9)
    assert torch.all(counts <= torch.ceil(N * w) + 1e-9)


def test_stratified_and_residual_count_bounds():
    """Stratified counts stay within one of N w (not floor/ceil); residual keeps ⌊N w⌋ copies."""
    N = 37
    w = _weights(N, 6)
    g = torch.Generator().manual_seed(7)
    strat = _counts(resample(w.expand(500, N), g, "stratified"), N)
    assert torch.all((strat - N * w).abs() < 2.0)
    res = _counts(resample(w.expand(500, N), g, "residual"), N)
    assert torch.all(res >= torch.floor(N * w))


def test_n_out_and_one_hot():
    w = torch.zeros(10, dtype=torch.float64)
    w[7] = 1.0
    for scheme in SCHEMES:
        idx = resample(w, torch.Generator().manual_seed(0), scheme, n_out=25)
        assert idx.shape == (25,) and torch.all(idx == 7)


def test_systematic_shared_draw_gives_identical_rows():
    w = _weights(20, 8).expand(6, 20)
    idx = systematic(w, u=torch.tensor(0.37))
    assert torch.all(idx == idx[0])
    # uniform weights and any u select every particle once, in order
    idx = systematic(torch.full((5,), 0.2, dtype=torch.float64), u=torch.tensor(0.99))
    assert torch.equal(idx, torch.arange(5))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_reproducible_with_same_generator_seed(scheme):
    w = _weights(30, 9)
    a = resample(w, torch.Generator().manual_seed(11), scheme)
    b = resample(w, torch.Generator().manual_seed(11), scheme)
    c = resample(w.expand(50, 30), torch.Generator().manual_seed(12), scheme)
    assert torch.equal(a, b)
    assert not all(torch.equal(c[0], c[i]) for i in range(1, 50))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_weights(dtype):
    w = _weights(1000, 10, dtype)
    idx = resample(w, torch.Generator().manual_seed(0))
    assert idx.shape == (1000,) and int(idx.max()) < 1000
    # same seed, same indices as with float64 weights (rounding could at most move a few
    # draws across a cumulative-weight boundary; none do here)
    ref = resample(_weights(1000, 10), torch.Generator().manual_seed(0))
    assert int((idx != ref).sum()) <= 2


def test_ess_known_values():
    assert float(ess(torch.full((8,), 1 / 8, dtype=torch.float64))) == pytest.approx(8.0)
    assert float(ess(torch.tensor([1.0, 0.0, 0.0]))) == pytest.approx(1.0)
    assert float(ess(torch.tensor([0.5, 0.5, 0.0, 0.0]))) == pytest.approx(2.0)
    w = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    assert float(ess(w)) == pytest.approx(1.0 / (0.49 + 0.04 + 0.01))
    assert ess(torch.full((3, 4), 0.25)).shape == (3,)


def test_normalise_log_weights_stable_and_never_nan():
    # differences of 1e4 in log-weights: exp would underflow without the shift
    w, log_norm = normalise_log_weights(
        torch.tensor([-1e4, -1e4 - math.log(3.0), -2e4], dtype=torch.float64)
    )
    assert torch.allclose(w, torch.tensor([0.75, 0.25, 0.0], dtype=torch.float64))
    assert float(log_norm) == pytest.approx(-1e4 + math.log(4.0 / 3.0))
    # all impossible: uniform weights, -inf normaliser, no NaN
    w, log_norm = normalise_log_weights(torch.full((4,), -math.inf))
    assert torch.allclose(w, torch.full((4,), 0.25)) and log_norm == -math.inf
    # NaN counts as impossible
    w, _ = normalise_log_weights(torch.tensor([0.0, float("nan"), 0.0]))
    assert torch.allclose(w, torch.tensor([0.5, 0.0, 0.5]))


def test_counts_to_indices_and_duplicated():
    idx = counts_to_indices(torch.tensor([2, 0, 1, 3]), 6)
    assert torch.equal(idx, torch.tensor([0, 0, 2, 3, 3, 3]))
    assert torch.equal(duplicated(idx), torch.tensor([True, True, False, True, True, True]))


def test_bad_arguments():
    w = torch.full((4,), 0.25)
    with pytest.raises(ValueError, match="scheme"):
        resample(w, None, "bogus")
    with pytest.raises(ValueError, match="n_out"):
        resample(w, None, "systematic", n_out=0)
