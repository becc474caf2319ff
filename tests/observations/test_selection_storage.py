"""Selection operators H x = x[..., idx] are stored as indices: no dense p x n matrix unless asked."""

from __future__ import annotations

import pytest
import torch

from hybrida.observations.base import DENSE_LIMIT, selection_matrix
from hybrida.observations.networks import EveryKthObs, IdentityObs


def test_million_variable_identity_network_stores_indices_only():
    obs = IdentityObs(n=10**6).network(1)
    assert obs.stored_matrix is None
    assert obs.indices.numel() == 10**6 and obs.n == 10**6
    x = torch.randn(3, 10**6, dtype=torch.float64)
    assert torch.equal(obs.H(x), x)
    with pytest.raises(ValueError, match="ensemble method"):
        _ = obs.matrix  # 10^12 elements: refused with the way out, not an 8 TB allocation


def test_dense_matrix_on_demand_equals_the_selection():
    obs = EveryKthObs(n=12, k=3, offset=1).network(1)
    x = torch.randn(5, 12, dtype=torch.float64)
    assert torch.equal(x @ obs.matrix.T, obs.H(x))
    assert obs.matrix.shape == (4, 12)


def test_valid_keeps_the_selection_of_the_finite_values():
    obs = IdentityObs(n=6).observe(torch.arange(6.0, dtype=torch.float64), 1, torch.Generator().manual_seed(0))
    obs.y[2] = torch.nan
    v = obs.valid()
    assert v.stored_matrix is None and v.indices.tolist() == [0, 1, 3, 4, 5]
    assert torch.equal(v.matrix, torch.eye(6, dtype=torch.float64)[[0, 1, 3, 4, 5]])


def test_selection_matrix_limit():
    assert selection_matrix(torch.tensor([1, 0]), 3).tolist() == [[0, 1, 0], [1, 0, 0]]
    with pytest.raises(ValueError, match="GiB"):
        selection_matrix(torch.arange(2), DENSE_LIMIT)
