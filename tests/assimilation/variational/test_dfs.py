"""Degrees of freedom for signal: whitened-Jacobian formulas against tr(HK) of the BLUE gain."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from lingauss import random_spd

from hybrida.assimilation.variational.climatology import psd_sqrt
from hybrida.assimilation.variational.dfs import (
    dfs_by_group,
    dfs_from_gain,
    dfs_from_jacobian,
    dfs_per_observation,
    dfs_randomized,
    group_sums,
)
from hybrida.observations.errors import CorrelatedError

F64 = torch.float64


def _case(seed: int = 0, n: int = 7, blocks: tuple[int, ...] = (3, 4, 2)):
    """B, H, block-diagonal correlated R, the BLUE gain K and the whitened Jacobian G."""
    g = torch.Generator().manual_seed(seed)
    B = random_spd(n, seed + 1, cond=20.0)
    m = sum(blocks)
    H = torch.randn(m, n, generator=g, dtype=F64)
    R = torch.block_diag(
        *[random_spd(p, seed + 5 + i, cond=6.0) * 0.7 for i, p in enumerate(blocks)]
    )
    K = B @ H.T @ torch.linalg.inv(H @ B @ H.T + R)
    G = CorrelatedError(R).whiten((H @ psd_sqrt(B)).mT).mT  # R^{-1/2} H B^{1/2}
    return B, H, R, K, G, blocks


def test_total_dfs_equals_trace_of_HK():
    _, H, _, K, G, _ = _case()
    total = dfs_from_jacobian(G)
    assert total == pytest.approx(dfs_from_gain(H, K), rel=1e-10)
    assert 0 < total < min(G.shape)
    assert float(dfs_per_observation(G).sum()) == pytest.approx(total, rel=1e-10)


def test_group_dfs_equals_partial_trace_of_HK_for_block_diagonal_R():
    _, H, _, K, G, blocks = _case(seed=3)
    HK = H @ K
    labels = [lab for lab, p in zip(["a", "b", "a"], blocks) for _ in range(p)]
    groups = dfs_by_group(G, labels)
    edges = [0, blocks[0], blocks[0] + blocks[1], sum(blocks)]
    tr = [float(torch.trace(HK[a:b, a:b])) for a, b in pairwise(edges)]
    assert list(groups) == ["a", "b"]
    assert groups["a"] == pytest.approx(tr[0] + tr[2], rel=1e-10)
    assert groups["b"] == pytest.approx(tr[1], rel=1e-10)


def test_per_observation_is_diag_HK_for_diagonal_R():
    g = torch.Generator().manual_seed(2)
    B = random_spd(5, 9)
    H = torch.randn(6, 5, generator=g, dtype=F64)
    r = torch.rand(6, generator=g, dtype=F64) + 0.5
    K = B @ H.T @ torch.linalg.inv(H @ B @ H.T + torch.diag(r))
    G = (H @ psd_sqrt(B)) / r.sqrt()[:, None]
    assert torch.allclose(dfs_per_observation(G), torch.diagonal(H @ K), atol=1e-12)


def test_limits_and_empty():
    G = torch.zeros(4, 3, dtype=F64)
    assert dfs_from_jacobian(G) == 0.0  # observations with no sensitivity carry no signal
    assert dfs_from_jacobian(1e6 * torch.eye(3, dtype=F64)) == pytest.approx(3.0, rel=1e-9)
    assert dfs_from_jacobian(torch.zeros(0, 3, dtype=F64)) == 0.0
    assert dfs_per_observation(torch.zeros(0, 3, dtype=F64)).shape == (0,)


def test_randomized_estimate_is_close_and_reproducible():
    _, _, _, _, G, blocks = _case(seed=5)
    labels = [i for i, p in enumerate(blocks) for _ in range(p)]
    exact = dfs_by_group(G, labels)

    def run(seed: int):
        return dfs_randomized(
            lambda w: G @ w,
            lambda u: u @ G,
            G.shape[0],
            300,
            torch.Generator().manual_seed(seed),
            G.new_zeros(G.shape[1]),
            labels,
            tol=1e-10,
        )

    total, groups = run(0)
    assert total == pytest.approx(dfs_from_jacobian(G), rel=0.05)
    assert sum(groups.values()) == pytest.approx(total, rel=1e-12)
    assert groups[1] == pytest.approx(exact[1], rel=0.15)
    assert run(0) == (total, groups)
    with pytest.raises(ValueError, match="n_probes"):
        dfs_randomized(lambda w: w, lambda u: u, 3, 0, torch.Generator(), G.new_zeros(3))


def test_group_sums_checks_lengths():
    with pytest.raises(ValueError, match="labels"):
        group_sums(torch.ones(3), ["a", "b"])
