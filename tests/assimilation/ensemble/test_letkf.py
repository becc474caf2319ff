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


@pytest.mark.parametrize("solver", ["auto", "eigh", "newton_schulz"])
@pytest.mark.parametrize("taper", ["gaspari_cohn", "none"])
@pytest.mark.parametrize("loc_rad", [0.4, 1.5, 3.0])
def test_letkf_equals_per_point_reference(taper, loc_rad, solver):
    E, idx, y, var = _setup(every=3, seed=1)
    obs = subset_obs(idx, y, var, E.shape[1])
    out = LETKF(E.shape[0], loc_rad=loc_rad, taper=taper, solver=solver).analyse(E, obs)
    ref = _reference_letkf(E, idx, y, var, 1.82 * loc_rad, taper)
    assert torch.allclose(out, ref, atol=1e-11, rtol=0)


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
    with pytest.raises(ValueError, match="solver"):
        LETKF(N, loc_rad=2.0, solver="cholesky")
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="interp_every"):
            LETKF(N, loc_rad=2.0, interp_every=bad)
    # a diagonal R given as CorrelatedError is accepted
    diag = Observation(
        y=y,
        operator=lambda x: x[..., idx],
        error=CorrelatedError(torch.diag(var)),
        locations=idx.double(),
    )
    ref = LETKF(N, loc_rad=2.0).analyse(E, subset_obs(idx, y, var, n))
    assert torch.allclose(LETKF(N, loc_rad=2.0).analyse(E, diag), ref, atol=1e-13)


def _l96_problem(n=120, N=10, seed=0):
    """A smooth L96 prior (spun-up, perturbed members) with every point observed, R = I."""
    from hybrida.models.lorenz96 import Lorenz96

    g = torch.Generator().manual_seed(seed)
    m = Lorenz96(n)
    x = m.initial_state()
    E = m.forecast(x + 0.5 * torch.randn(N, n, generator=g, dtype=F64), 10)
    idx = torch.arange(n)
    y = x + torch.randn(n, generator=g, dtype=F64)
    return E, subset_obs(idx, y, 1.0, n, dense=False)


@pytest.mark.parametrize("solver", ["eigh", "newton_schulz"])
def test_letkf_l96_all_observed_matches_reference_both_solvers(solver):
    E, obs = _l96_problem(n=60, seed=7)
    idx = torch.arange(60)
    out = LETKF(10, loc_rad=4.0, solver=solver).analyse(E, obs)
    ref = _reference_letkf(E, idx, obs.y, torch.ones(60, dtype=F64), 1.82 * 4.0, "gaspari_cohn")
    assert torch.allclose(out, ref, atol=1e-10, rtol=0)


def test_letkf_interp_every_one_is_identical_to_default():
    E, obs = _l96_problem()
    assert torch.equal(
        LETKF(10, loc_rad=4.0, interp_every=1).analyse(E, obs),
        LETKF(10, loc_rad=4.0).analyse(E, obs),
    )


@pytest.mark.parametrize("n, k", [(120, 2), (120, 4), (122, 4), (121, 5)])
def test_letkf_weight_interpolation_exact_at_analysed_points_close_elsewhere(n, k):
    E, obs = _l96_problem(n=n, seed=1)
    exact = LETKF(10, loc_rad=4.0).analyse(E, obs)
    interp = LETKF(10, loc_rad=4.0, interp_every=k).analyse(E, obs)
    q = torch.arange(0, n, k)
    assert torch.allclose(interp[:, q], exact[:, q], atol=1e-12, rtol=0)
    others = torch.tensor([i for i in range(n) if i % k])
    dev = (interp[:, others] - exact[:, others]).norm() / (exact - E).norm()
    assert 0 < dev < 0.02 * k  # interpolation error: small, but not zero between analysed points


def test_apply_interpolated_is_linear_in_between_and_wraps():
    from hybrida.assimilation.ensemble.letkf import apply_interpolated

    n, N = 11, 3  # k = 4: analysed points 0, 4, 8; last segment 8..10 wraps to point 0 (n)
    q = torch.tensor([0, 4, 8, 11])
    W = torch.stack([j * torch.eye(N, dtype=F64) for j in (1.0, 2.0, 3.0, 1.0)]).unsqueeze(0)
    a = torch.ones(1, n, N, dtype=F64)
    xm = torch.zeros(1, n, dtype=F64)
    out = apply_interpolated(xm, a, W, q)[0, :, 0]
    expected = torch.tensor(
        [1, 1.25, 1.5, 1.75, 2, 2.25, 2.5, 2.75, 3, 3 - 2 / 3, 3 - 4 / 3], dtype=F64
    )
    assert torch.allclose(out, expected, atol=1e-14, rtol=0)


def test_letkf_interp_blocks_and_batch(monkeypatch):
    import hybrida.assimilation.ensemble.letkf as letkf_mod

    E, obs = _l96_problem(n=50, seed=3)
    Eb = torch.stack([E, E.flip(0) * 0.9 + 0.1])
    full = LETKF(10, loc_rad=4.0, interp_every=3).analyse(Eb, obs)
    for b in range(2):
        assert torch.allclose(
            full[b], LETKF(10, loc_rad=4.0, interp_every=3).analyse(Eb[b], obs), atol=1e-12
        )
    monkeypatch.setattr(letkf_mod, "BLOCK_ELEMENTS", 1)  # one analysed point per block
    blocked = LETKF(10, loc_rad=4.0, interp_every=3).analyse(Eb, obs)
    assert torch.allclose(blocked, full, atol=1e-12, rtol=0)
    out32 = LETKF(10, loc_rad=4.0, interp_every=3).analyse(Eb.float(), obs)
    assert out32.dtype == torch.float32 and torch.allclose(out32.double(), full, atol=1e-3)


def test_letkf_differentiable_through_prior():
    E, idx, y, var = _setup(n=12, N=4, every=2, seed=8)
    obs = subset_obs(idx, y, var, 12)
    m = LETKF(4, loc_rad=1.5)
    Eg = E.clone().requires_grad_(True)
    out = m.analyse(Eg, obs)
    assert torch.allclose(out.detach(), m.analyse(E, obs), atol=1e-11)
    assert torch.autograd.gradcheck(lambda x: m.analyse(x, obs), (Eg,), atol=1e-6)
