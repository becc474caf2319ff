"""Gaspari–Cohn taper, periodic distance and the local-observation table."""

from __future__ import annotations

import pytest
import torch

from hybrida.assimilation.ensemble.localization import Neighbours, gaspari_cohn, periodic_distance


def test_gaspari_cohn_values_and_shape():
    r = torch.linspace(0, 3, 3001, dtype=torch.float64)
    g = gaspari_cohn(r)
    assert g[0] == 1.0
    assert torch.all(g[r >= 2] == 0)
    assert torch.all(g[r < 2] > 0)
    assert torch.all(g.diff() <= 1e-15)  # monotone non-increasing
    eps = 1e-9
    left, right = gaspari_cohn(torch.tensor([1 - eps, 1 + eps], dtype=torch.float64))
    assert abs(float(left - right)) < 1e-7  # continuous at r=1
    assert abs(float(gaspari_cohn(torch.tensor(1.0, dtype=torch.float64))) - 5 / 24) < 1e-14
    assert torch.equal(gaspari_cohn(-r), g)  # even


def test_gaspari_cohn_is_a_correlation_function():
    # a valid correlation function gives a positive semi-definite matrix on any point set
    x = torch.linspace(0, 10, 60, dtype=torch.float64)
    C = gaspari_cohn((x[:, None] - x[None, :]) / 1.3)
    assert float(torch.linalg.eigvalsh(C).min()) > -1e-10


def test_periodic_distance():
    a = torch.tensor([0.0, 1.0, 39.0, 20.0])
    b = torch.tensor([39.0, 38.5, 1.0, 0.0])
    assert torch.allclose(periodic_distance(a, b, 40.0), torch.tensor([1.0, 2.5, 2.0, 20.0]))


@pytest.mark.parametrize("taper", ["gaspari_cohn", "none"])
@pytest.mark.parametrize("half_width", [0.7, 2.5, 9.0, 30.0])
def test_neighbour_table_matches_brute_force(taper, half_width):
    n = 37
    g = torch.Generator().manual_seed(3)
    loc = torch.rand(23, generator=g, dtype=torch.float64) * n
    loc[3] = loc[7]  # duplicated location
    nb = Neighbours(loc, n, half_width, taper)
    tab = nb.table()
    d = periodic_distance(torch.arange(n, dtype=torch.float64)[:, None], loc[None, :], float(n))
    if taper == "gaspari_cohn":
        dense = gaspari_cohn(d / half_width)
    else:
        dense = (d < 2 * half_width).double()
    built = torch.zeros(n, len(loc), dtype=torch.float64)
    built.scatter_add_(1, tab.index, tab.weight)
    assert torch.allclose(built, dense, atol=1e-14)
    # blocks give the same rows as the full table
    part = nb.table(5, 11)
    assert torch.equal(part.index, tab.index[5:11]) and torch.equal(part.weight, tab.weight[5:11])


def test_neighbours_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        Neighbours(torch.zeros(2, 2), 10, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        Neighbours(torch.tensor([float("nan")]), 10, 1.0)
    with pytest.raises(ValueError, match="taper"):
        Neighbours(torch.zeros(3), 10, 1.0, taper="boxcar")
