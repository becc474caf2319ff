"""LETKF on layered doubly periodic 2-D grids: torus tables, per-point reference, 1-D limit, errors."""

from __future__ import annotations

import math

import pytest
import torch

from hybrida.assimilation.ensemble import ETKF, LETKF
from hybrida.assimilation.ensemble.etkf import etkf_analysis
from hybrida.assimilation.ensemble.localization import Neighbours2D, gaspari_cohn, periodic_distance
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError
from hybrida.observations.grid2d import RandomGridObs

F64 = torch.float64


def _torus_distance(point: tuple[float, float], loc: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    dy = periodic_distance(torch.tensor(point[0], dtype=F64), loc[:, 0], float(grid[0]))
    dx = periodic_distance(torch.tensor(point[1], dtype=F64), loc[:, 1], float(grid[1]))
    return torch.sqrt(dy * dy + dx * dx)


def _setup(grid=(6, 8), nz=2, N=6, p=20, seed=0):
    ny, nx = grid
    n = nz * ny * nx
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(N, n, generator=g, dtype=F64) + torch.sin(torch.arange(n, dtype=F64))
    idx = torch.randperm(n, generator=g)[:p].sort().values
    h = idx % (ny * nx)
    loc = torch.stack((h // nx, h % nx), -1).double()
    y = torch.randn(p, generator=g, dtype=F64)
    var = 0.5 + torch.rand(p, generator=g, dtype=F64)
    obs = Observation(
        y=y, operator=lambda x: x[..., idx], error=DiagonalError(var), locations=loc,
        meta={"grid": grid}, indices=idx, n=n,
    )
    return E, obs, idx, loc, y, var


def _reference(E, idx, loc, y, var, c, grid):
    """Per-point loop: an ETKF with the GC-tapered R⁻¹ of the observations near each column."""
    N, n = E.shape
    ny, nx = grid
    out = torch.empty_like(E)
    for i in range(n):
        h = i % (ny * nx)
        rho = gaspari_cohn(_torus_distance((h // nx, h % nx), loc, grid) / c)
        sel = rho > 0
        HE = E[:, idx[sel]]
        ym = HE.mean(0)
        scale = (rho[sel] / var[sel]).sqrt()
        out[:, i] = etkf_analysis(E, (HE - ym) * scale / math.sqrt(N - 1), (y[sel] - ym) * scale)[:, i]
    return out


def test_neighbour_table_is_the_torus_taper():
    grid = (7, 10)
    g = torch.Generator().manual_seed(1)
    loc = torch.rand(30, 2, generator=g, dtype=F64) * torch.tensor([7.0, 10.0], dtype=F64)
    nb = Neighbours2D(loc, 3 * 70, half_width=1.6, grid=grid)
    for point in (0, 13, 69, 70 + 13, 209):
        tab = nb.table_at(torch.tensor([point]))
        h = point % 70
        full = gaspari_cohn(_torus_distance((h // 10, h % 10), loc, grid) / 1.6)
        dense = torch.zeros(30, dtype=F64).index_add_(0, tab.index[0], tab.weight[0])
        torch.testing.assert_close(dense, full, rtol=1e-14, atol=1e-15)
        assert int((tab.weight[0] > 0).sum()) == int((full > 0).sum())


def test_small_chunks_give_the_same_table(monkeypatch):
    grid = (6, 8)
    loc = torch.rand(25, 2, generator=torch.Generator().manual_seed(2), dtype=F64) * 6
    whole = Neighbours2D(loc, 96, 1.3, grid=grid)
    monkeypatch.setattr(Neighbours2D, "CHUNK_ELEMENTS", 50)
    chunked = Neighbours2D(loc, 96, 1.3, grid=grid)
    pts = torch.arange(96)
    a, b = whole.table_at(pts), chunked.table_at(pts)
    for i in range(96):
        da = torch.zeros(25, dtype=F64).index_add_(0, a.index[i], a.weight[i])
        db = torch.zeros(25, dtype=F64).index_add_(0, b.index[i], b.weight[i])
        torch.testing.assert_close(da, db, rtol=0, atol=0)


@pytest.mark.parametrize("loc_rad", [0.8, 1.5])
def test_letkf_2d_equals_per_point_reference(loc_rad):
    grid = (6, 8)
    E, obs, idx, loc, y, var = _setup(grid)
    c = 1.82 * loc_rad
    out = LETKF(E.shape[0], loc_rad=loc_rad, solver="eigh").analyse(E, obs)
    torch.testing.assert_close(out, _reference(E, idx, loc, y, var, c, grid), rtol=1e-10, atol=1e-10)


def test_letkf_2d_global_support_equals_etkf():
    E, obs, *_ = _setup()
    ref = ETKF(E.shape[0]).analyse(E, obs)
    out = LETKF(E.shape[0], loc_rad=100.0, taper="none").analyse(E, obs)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_one_row_grid_equals_the_1d_letkf():
    """On a (1, n) grid the torus distance is the 1-D periodic distance: same analysis as 1-D."""
    E, obs, idx, _, y, var = _setup(grid=(1, 24), nz=1, p=9)
    one_d = Observation(y=y, operator=obs.operator, error=DiagonalError(var), locations=idx.double())
    a = LETKF(E.shape[0], loc_rad=2.0).analyse(E, obs)
    b = LETKF(E.shape[0], loc_rad=2.0).analyse(E, one_d)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_letkf_switches_between_1d_and_2d_layouts():
    E, obs, idx, _, y, var = _setup(grid=(1, 24), nz=1, p=9)
    one_d = Observation(y=y, operator=obs.operator, error=DiagonalError(var), locations=idx.double())
    f = LETKF(E.shape[0], loc_rad=2.0)
    a1, b1, a2 = f.analyse(E, obs), f.analyse(E, one_d), f.analyse(E, obs)
    torch.testing.assert_close(a1, a2, rtol=0, atol=0)
    torch.testing.assert_close(a1, b1, rtol=1e-12, atol=1e-12)


def test_letkf_2d_bad_input():
    E, obs, *_ = _setup()
    bad = Observation(y=obs.y, operator=obs.operator, error=obs.error, locations=obs.locations[:, 0],
                      meta={"grid": (6, 8)})
    with pytest.raises(ValueError, match=r"shape \(20, 2\)"):
        LETKF(6, loc_rad=1.0).analyse(E, bad)
    odd = Observation(y=obs.y, operator=obs.operator, error=obs.error, locations=obs.locations,
                      meta={"grid": (5, 8)})
    with pytest.raises(ValueError, match="must divide the state size"):
        LETKF(6, loc_rad=1.0).analyse(E, odd)
    with pytest.raises(ValueError, match="interp_every > 1 is 1-D only"):
        LETKF(6, loc_rad=1.0, interp_every=2).analyse(E, obs)
    with pytest.raises(ValueError, match="NaN"):
        Neighbours2D(torch.full((3, 2), float("nan"), dtype=F64), 96, 1.0, grid=(6, 8))


def test_random_grid_obs_layout_locations_and_seed():
    net = RandomGridObs(n=2 * 6 * 8, p=0.25, nx=8, std=0.5, layers=[1], seed=3)
    assert net.p == 12 and (net.ny, net.nx) == (6, 8)
    o = net.network(1)
    assert torch.equal(o.indices, net.network(2).indices)  # fixed network with a seed
    assert bool((o.indices >= 48).all())  # layer 1 only
    h = o.indices % 48
    torch.testing.assert_close(o.locations, torch.stack((h // 8, h % 8), -1).double())
    x = torch.randn(3, 96, dtype=F64)
    torch.testing.assert_close(o.H(x), x[..., o.indices])
    assert o.meta["grid"] == (6, 8) and torch.allclose(o.error.variance, torch.full((12,), 0.25, dtype=F64))
    fresh = RandomGridObs(n=96, p=10, nx=8)
    a = fresh.network(1, torch.Generator().manual_seed(0)).indices
    b = fresh.network(1, torch.Generator().manual_seed(0)).indices
    assert torch.equal(a, b) and a.unique().numel() == 10
    assert RandomGridObs(n=2 * 16 * 16, p=5).nx == 16  # square layers inferred


def test_random_grid_obs_streamfunction():
    from hybrida.models.qg import QGModel

    qg = {"nx": 8, "L": 2e5}
    net = RandomGridObs(n=128, p=10, field="psi", qg=qg, seed=0)
    o = net.network(1)
    x = 1e-5 * torch.randn(2, 128, dtype=F64)
    torch.testing.assert_close(o.H(x), QGModel(**qg).streamfunction(x)[..., net.indices])
    assert o.indices is None and o.locations.shape == (10, 2)
    with pytest.raises(ValueError, match="needs the QG parameters"):
        RandomGridObs(n=128, p=10, field="psi")


def test_random_grid_obs_errors():
    with pytest.raises(ValueError, match="must equal n"):
        RandomGridObs(n=100, p=3, nx=7)
    with pytest.raises(ValueError, match="layers must be"):
        RandomGridObs(n=128, p=3, layers=[2])
    with pytest.raises(ValueError, match="p must lie"):
        RandomGridObs(n=128, p=500)
    with pytest.raises(ValueError, match="std must be"):
        RandomGridObs(n=128, p=3, std=float("nan"))
    with pytest.raises(ValueError, match="unknown field"):
        RandomGridObs(n=128, p=3, field="u")
