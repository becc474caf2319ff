"""Tests of the alternating half-grid observation network."""

from __future__ import annotations

import pytest
import torch

from hybrida.observations.alternating import AlternatingHalvesObs


@pytest.mark.parametrize("pattern", ["interleaved", "contiguous"])
def test_halves_alternate_and_cover(pattern):
    net = AlternatingHalvesObs(40, std=0.2, pattern=pattern)
    a, b, c = net.indices(1), net.indices(2), net.indices(3)
    assert a.numel() == b.numel() == 20
    assert torch.equal(a, c)
    assert torch.equal(torch.cat((a, b)).sort().values, torch.arange(40))
    if pattern == "interleaved":
        assert torch.equal(a, torch.arange(0, 40, 2))
    else:
        assert torch.equal(a, torch.arange(20))


def test_observe_operator_matrix_and_noise():
    net = AlternatingHalvesObs(40, std=0.2)
    x = torch.arange(40, dtype=torch.float64)
    o = net.observe(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(o.operator(x), x[1::2])
    assert torch.equal(o.matrix @ x, x[1::2])
    assert torch.equal(o.locations, x[1::2])
    assert 0.05 < float((o.y - x[1::2]).std()) < 0.4
    assert torch.allclose(o.error.variance, torch.full((20,), 0.04, dtype=torch.float64))


def test_per_variable_std():
    std = torch.linspace(0.1, 0.5, 40)
    o = AlternatingHalvesObs(40, std=std).network(1)
    assert torch.allclose(o.error.variance, std[0::2].double() ** 2)


def test_bad_input():
    with pytest.raises(ValueError, match="even"):
        AlternatingHalvesObs(41)
    with pytest.raises(ValueError, match="pattern"):
        AlternatingHalvesObs(40, pattern="random")
    with pytest.raises(ValueError, match="std"):
        AlternatingHalvesObs(40, std=[0.1, 0.2, 0.3])
