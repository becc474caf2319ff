"""LETKF: global limit, per-point reference, locality, missing data, batching, errors."""

from __future__ import annotations

import math

import pytest
import torch
from ens_helpers import random_spd, subset_obs

from hybrida.assimilation.ensemble import ETKF, LETKF
from hybrida.assimilation.ensemble.etkf import etkf_analysis
from hybrida.assimilation.ensemble.localization import gaspari_cohn, periodic_distance
from hybrida.observations.base import Observation
from hybrida.observations.errors import CorrelatedError, DiagonalError

F64 = torch.float64


def _setup(n=24, N=7, every=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(N, n, generator=g, dtype=F64) + torch.sin(torch.arange(n, dtype=F64))
    idx = torch.arange(0, n, every)
    y = torch.randn(len(idx), generator=g, dtype=F64)
    var = 0.5 + torch.rand(len(idx), generator=g, dtype=F64)
    return E, idx, y, var


def _reference_letkf(E, idx, y, var, c, taper):
    """Per-grid-point loop: ETKF with the tapered R^{-1} of the observations near point i."""
    N, n = E.shape
    out = torch.empty_like(E)
    for i in range(n):
        d = periodic_distance(torch.tensor(float(i), dtype=F64), idx.double(), float(n))
        rho = gaspari_cohn(d / c) if taper == "gaspari_cohn" else (d < 2 * c).double()
        sel = rho > 0
        HE = E[:, idx[sel]]
        ym = HE.mean(0)
        scale = (rho[sel] / var[sel]).sqrt()
        S = (HE - ym) * scale / math.sqrt(N - 1)
        dd = (y[sel] - ym) * scale
        out[:, i] = etkf_analysis(E, S, dd)[:, i]
    return out


@pytest.mark.parametrize("taper", [None, "none"])
def test_letkf_with_untapered_global_support_equals_etkf(taper):
    E, idx, y, var = _setup()
    obs = subset_obs(idx, y, var, E.shape[1])
    ref = ETKF(E.shape[0]).analyse(E, obs)
    for loc_rad in (1e6, math.inf):
        out = LETKF(E.shape[0], loc_rad=loc_rad, taper=taper).analyse(E, obs)
        assert torch.allclose(out, ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("taper", ["gaspari_cohn", "none"])
@pytest.mark.parametrize("loc_rad", [0.4, 1.5, 3.0])
def test_letkf_equals_per_point_reference(taper, loc_rad):
    E, idx, y, var = _setup(every=3, seed=1)
    obs = subset_obs(idx, y, var, E.shape[1])
    out = LETKF(E.shape[0], loc_rad=loc_rad, taper=taper).analyse(E, obs)
    ref = _reference_letkf(E, idx, y, var, 1.82 * loc_rad, taper)
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)


def test_letkf_far_points_unchanged_near_points_updated():
    n, N = 60, 8
    E, _, _, _ = _setup(n=n, N=N, seed=2)
    idx = torch.tensor([10, 11, 12])
    obs = subset_obs(idx, torch.tensor([3.0, 3.0, 3.0], dtype=F64), 0.1, n)
    loc_rad = 2.0  # support 2c = 7.28 grid points
    out = LETKF(N, loc_rad=loc_rad).analyse(E, obs)
    far = [
        i
        for i in range(n)
        if float(periodic_distance(torch.tensor(float(i)), idx.double(), n).min()) >= 7.28
    ]
    near = list(range(8, 15))
    assert len(far) > 40 and torch.allclose(out[:, far], E[:, far], atol=1e-13, rtol=0)
    assert (out[:, near].mean(0) - E[:, near].mean(0)).abs().min() > 1e-3


def test_letkf_nan_obs_and_all_nan():
    E, idx, y, var = _setup(seed=3)
    n, N = E.shape[1], E.shape[0]
    y_nan = y.clone()
    y_nan[[0, 5]] = float("nan")
    keep = torch.tensor([i for i in range(len(idx)) if i not in (0, 5)])
    m = LETKF(N, loc_rad=2.0)
    out = m.analyse(E, subset_obs(idx, y_nan, var, n))
    ref = LETKF(N, loc_rad=2.0).analyse(E, subset_obs(idx[keep], y[keep], var[keep], n))
    assert torch.allclose(out, ref, atol=1e-13)
    assert torch.equal(m.analyse(E, subset_obs(idx, torch.full_like(y, float("nan")), var, n)), E)


def test_letkf_batched_float32_and_nonlinear():
    E, idx, y, var = _setup(seed=4)
    N = E.shape[0]
    Eb = torch.stack([E, 2 * E - 1, E.flip(0) * 0.3])
    obs = Observation(
        y=y.abs() + 0.1,
        operator=lambda x: x[..., idx] ** 2,
        error=DiagonalError(var),
        locations=idx.double(),
    )
    m = LETKF(N, loc_rad=1.5)
    out = m.analyse(Eb, obs)
    for b in range(3):
        assert torch.allclose(out[b], m.analyse(Eb[b], obs), atol=1e-12)
    out32 = m.analyse(Eb.float(), obs)
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.double(), out, atol=1e-3)


def test_letkf_cache_follows_observation_layout():
    E, idx, y, var = _setup(seed=5)
    n, N = E.shape[1], E.shape[0]
    m = LETKF(N, loc_rad=1.5)
    m.analyse(E, subset_obs(idx, y, var, n))
    idx2 = idx + 1
    out = m.analyse(E, subset_obs(idx2, y, var, n))
    assert torch.allclose(
        out, _reference_letkf(E, idx2, y, var, 1.82 * 1.5, "gaspari_cohn"), atol=1e-12
    )


def test_letkf_block_processing_matches_single_block(monkeypatch):
    import hybrida.assimilation.ensemble.letkf as letkf_mod

    E, idx, y, var = _setup(n=40, seed=6)
    obs = subset_obs(idx, y, var, 40)
    full = LETKF(E.shape[0], loc_rad=2.0).analyse(E, obs)
    monkeypatch.setattr(letkf_mod, "BLOCK_ELEMENTS", 1)  # one grid point per block
    assert torch.allclose(LETKF(E.shape[0], loc_rad=2.0).analyse(E, obs), full, atol=1e-13)


def test_letkf_errors():
    E, idx, y, var = _setup()
    n, N = E.shape[1], E.shape[0]
    no_loc = Observation(y=y, operator=lambda x: x[..., idx], error=DiagonalError(var))
    with pytest.raises(ValueError, match="locations"):
        LETKF(N, loc_rad=2.0).analyse(E, no_loc)
    R = random_spd(len(idx), torch.Generator().manual_seed(0))
    corr = Observation(
        y=y, operator=lambda x: x[..., idx], error=CorrelatedError(R), locations=idx.double()
    )
    with pytest.raises(ValueError, match="diagonal R"):
        LETKF(N, loc_rad=2.0).analyse(E, corr)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="loc_rad"):
            LETKF(N, loc_rad=bad)
    with pytest.raises(ValueError, match="taper"):
        LETKF(N, loc_rad=2.0, taper="gauss")
    # a diagonal R given as CorrelatedError is accepted
    diag = Observation(
        y=y,
        operator=lambda x: x[..., idx],
        error=CorrelatedError(torch.diag(var)),
        locations=idx.double(),
    )
    ref = LETKF(N, loc_rad=2.0).analyse(E, subset_obs(idx, y, var, n))
    assert torch.allclose(LETKF(N, loc_rad=2.0).analyse(E, diag), ref, atol=1e-13)
