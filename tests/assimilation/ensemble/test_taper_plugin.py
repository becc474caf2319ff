"""A taper is a function of d / c: the LETKF takes a callable as it takes a named taper.

This is the slot a learned localisation fills; the named tapers are its oracles.
"""

from __future__ import annotations

import pytest
import torch

from hybrida.assimilation.ensemble import LETKF
from hybrida.assimilation.ensemble.localization import Neighbours, gaspari_cohn
from hybrida.observations import EveryKthObs


def _case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n, N = 24, 8
    E = 2.0 + torch.randn(N, n, generator=g, dtype=torch.float64)
    obs = EveryKthObs(n=n, k=2, std=0.5).network(1)
    obs.y = torch.randn(obs.p, generator=g, dtype=torch.float64)
    return E, obs


@pytest.mark.parametrize(("callable_taper", "name"), [(gaspari_cohn, "gaspari_cohn"), (torch.ones_like, "none")])
def test_a_callable_taper_reproduces_the_named_one(callable_taper, name):
    E, obs = _case()
    named = LETKF(N=8, loc_rad=2.0, taper=name).analyse(E, obs, 0.0)
    plugged = LETKF(N=8, loc_rad=2.0, taper=callable_taper).analyse(E, obs, 0.0)
    torch.testing.assert_close(plugged, named, rtol=0, atol=1e-12)


def test_a_callable_taper_changes_the_analysis_and_is_cut_at_the_support():
    E, obs = _case(1)
    gc = LETKF(N=8, loc_rad=2.0).analyse(E, obs, 0.0)
    narrow = LETKF(N=8, loc_rad=2.0, taper=lambda r: torch.exp(-4.0 * r**2)).analyse(E, obs, 0.0)
    assert float((narrow - gc).abs().max()) > 1e-3
    nb = Neighbours(obs.locations, 24, 1.0, taper=torch.ones_like)
    w = nb.table().weight
    assert bool((w <= 1.0).all()) and int((w > 0).sum(-1).max()) == 2  # d < 2c = 2: two neighbours at most


def test_a_named_taper_must_exist():
    with pytest.raises(ValueError, match="unknown taper 'gauss'.*function of the normalised distance"):
        LETKF(N=8, loc_rad=2.0, taper="gauss")
