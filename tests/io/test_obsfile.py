"""Observation files: round trip, NaN/QC handling, readability without hybrida, validation."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from hybrida.io.obsfile import load_observations, read_observations, write_observations
from hybrida.observations import IdentityObs, RadianceObs, RandomSubsetObs, SubsetObs


def _observations():
    g = torch.Generator().manual_seed(0)
    sys = RandomSubsetObs(10, 4, std=torch.linspace(0.5, 2.0, 10))
    obs = [sys.observe(torch.randn(10, generator=g, dtype=torch.float64), k, g) for k in range(1, 4)]
    obs[1].y[2] = float("nan")
    return obs


def test_round_trip(tmp_path):
    obs = _observations()
    path = write_observations(tmp_path / "obs.nc", obs, times=[0.05, 0.10, 0.15])
    data = read_observations(path)
    assert data["y"].shape == (12,) and int(data["n_state"]) == 10
    np.testing.assert_array_equal(data["cycle"], np.repeat([1, 2, 3], 4))
    np.testing.assert_array_equal(data["time"], np.repeat([0.05, 0.10, 0.15], 4))
    np.testing.assert_array_equal(data["qc_flag"], (np.arange(12) == 6).astype(np.int8))
    back = load_observations(path)
    assert len(back) == 3
    x = torch.randn(5, 10, dtype=torch.float64)
    for a, b in zip(obs, back):
        assert torch.equal(a.y.isnan(), b.y.isnan())
        assert torch.equal(torch.nan_to_num(a.y), torch.nan_to_num(b.y))
        assert torch.equal(a.locations, b.locations)
        assert torch.equal(a.matrix, b.matrix)
        assert torch.allclose(a.error.variance, b.error.variance, rtol=1e-15)
        assert torch.equal(a.H(x), b.H(x))
        assert b.meta["cycle"] == a.meta["cycle"]
    assert back[1].valid().p == 3


def test_readable_without_hybrida_and_atomic(tmp_path):
    path = write_observations(tmp_path / "sub" / "obs.nc", [IdentityObs(3).observe(torch.zeros(3), 1)])
    with h5py.File(path, "r") as f:
        assert set(f.keys()) >= {"obs_value", "obs_error", "location", "time", "cycle", "qc_flag"}
        assert f["obs_value"].shape == (3,)
    assert [p.name for p in path.parent.iterdir()] == ["obs.nc"]  # no temporary left behind


def test_rejects_what_the_flat_layout_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="index operator|matrix"):
        write_observations(tmp_path / "a.nc", [RadianceObs(8, 2, 1.0).observe(torch.zeros(8), 1)])
    with pytest.raises(ValueError, match="correlated"):
        write_observations(tmp_path / "b.nc", [SubsetObs(8, [1, 2], correlation_length=1.0).observe(torch.zeros(8), 1)])
    with pytest.raises(ValueError, match="times"):
        write_observations(tmp_path / "c.nc", _observations(), times=[0.1])
    assert not any(tmp_path.iterdir())
