"""Local PF: global limit, no update away from observations, scalar Kalman limit, robustness."""

from __future__ import annotations

import math

import pytest
import torch
from pf_helpers import gaussian_particles, kalman, linear_obs

from hybrida.assimilation.base import ParticleState
from hybrida.assimilation.particle import BootstrapPF, LocalPF
from hybrida.observations.base import Observation
from hybrida.observations.errors import CorrelatedError, DiagonalError

D = torch.float64


def _subset_obs(idx: list[int], y: torch.Tensor, var: float = 1.0) -> Observation:
    ii = torch.tensor(idx)
    return Observation(
        y=y,
        operator=lambda x: x[..., ii.to(x.device)],
        error=DiagonalError(torch.full((len(idx),), var, dtype=y.dtype)),
        locations=ii.to(y.dtype),
    )


def _prior(N: int, n: int, seed: int, weights: bool = False) -> ParticleState:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, n, generator=g, dtype=D)
    w = torch.rand(N, generator=g, dtype=D) if weights else torch.ones(N, dtype=D)
    return ParticleState(X, w / w.sum())


def test_infinite_radius_gives_bootstrap_weights_at_every_point():
    N, n = 30, 10
    prior = _prior(N, n, 0, weights=True)
    obs = _subset_obs([1, 4, 7], torch.tensor([0.5, -1.0, 2.0], dtype=D), var=0.7)
    W = LocalPF(N, loc_rad=math.inf).local_weights(prior, obs)
    w = BootstrapPF(N, NER=0.0).analyse(prior, obs).weights
    assert W.shape == (n, N)
    assert torch.allclose(W, w.expand(n, N), atol=1e-14)


def test_finite_radius_weights_decay_to_uniform():
    N, n = 30, 40
    prior = _prior(N, n, 1)
    obs = _subset_obs([0], torch.tensor([3.0], dtype=D))
    pf = LocalPF(N, loc_rad=2.0)  # GC support 2 * 1.82 * 2 = 7.28 grid points
    W = pf.local_weights(prior, obs)
    assert torch.allclose(W[20], torch.full((N,), 1.0 / N, dtype=D))  # far away
    assert float(W[0].max()) > 2.0 / N  # at the observation
    assert torch.allclose(W[3], W[n - 3])  # periodic, symmetric taper


def test_points_out_of_reach_keep_their_prior_particles():
    N, n = 25, 40
    prior = _prior(N, n, 2)
    obs = _subset_obs([0], torch.tensor([3.0], dtype=D))
    post = LocalPF(N, loc_rad=2.0, mix=0.3).analyse(
        prior, obs, generator=torch.Generator().manual_seed(0)
    )
    far = slice(10, 30)
    assert torch.allclose(post.particles[:, far], prior.particles[:, far], atol=1e-12)
    assert not torch.allclose(post.particles[:, 0], prior.particles[:, 0])
    assert torch.allclose(post.weights, torch.full((N,), 1.0 / N, dtype=D))


@pytest.mark.parametrize("mix", [0.0, 0.5])
def test_independent_points_match_scalar_kalman(mix):
    """Diagonal prior, one observation per point, radius within a grid point: per-point Kalman moments."""
    N = 20000
    m = torch.tensor([0.0, 1.0, -1.0, 0.5], dtype=D)
    var_b = torch.tensor([1.0, 0.5, 2.0, 0.8], dtype=D)
    prior = gaussian_particles(m, torch.diag(var_b), N, seed=3)
    y = torch.tensor([0.8, 0.2, 0.0, 1.5], dtype=D)
    r = 0.6
    obs = _subset_obs([0, 1, 2, 3], y, var=r)
    post = LocalPF(N, loc_rad=0.1, mix=mix).analyse(
        prior, obs, generator=torch.Generator().manual_seed(4)
    )
    ma = m + var_b / (var_b + r) * (y - m)
    va = var_b * r / (var_b + r)
    mean, var = post.particles.mean(0), post.particles.var(0)
    assert torch.all((mean - ma).abs() < 5 * (va / 5000).sqrt()), (mean, ma)
    assert torch.allclose(var, va, rtol=0.06), (var, va)


def test_global_limit_matches_kalman_mean():
    m = torch.tensor([1.0, -0.5, 0.3], dtype=D)
    P = torch.tensor([[1.0, 0.3, 0.1], [0.3, 0.8, -0.2], [0.1, -0.2, 0.5]], dtype=D)
    Hm = torch.eye(3, dtype=D)[:2]
    R = torch.tensor([0.5, 0.8], dtype=D)
    y = torch.tensor([1.6, 0.4], dtype=D)
    N = 20000
    obs = linear_obs(Hm, y, R, locations=torch.tensor([0.0, 1.0], dtype=D))
    post = LocalPF(N, loc_rad=math.inf).analyse(
        gaussian_particles(m, P, N, seed=5), obs, generator=torch.Generator().manual_seed(6)
    )
    ma, Pa = kalman(m, P, Hm, torch.diag(R), y)
    assert torch.all((post.particles.mean(0) - ma).abs() < 5 * (torch.diagonal(Pa) / 5000).sqrt())
    assert torch.allclose(post.particles.var(0), torch.diagonal(Pa), rtol=0.06)


def test_nan_observations_and_no_observations():
    N, n = 20, 10
    prior = _prior(N, n, 7)
    y = torch.tensor([0.5, float("nan"), 2.0], dtype=D)
    pf = LocalPF(N, loc_rad=2.0)
    a = pf.local_weights(prior, _subset_obs([1, 4, 7], y).valid())
    b = pf.local_weights(prior, _subset_obs([1, 7], y[[0, 2]]))
    assert torch.allclose(a, b)
    pf.analyse(prior, _subset_obs([1, 4, 7], y))
    assert pf.diagnostics()["n_obs"] == 2.0
    same = pf.analyse(prior, _subset_obs([1], torch.tensor([float("nan")], dtype=D)))
    assert same is prior and pf.diagnostics()["n_obs"] == 0.0


def test_huge_innovations_stay_finite():
    N, n = 20, 10
    prior = _prior(N, n, 8)
    pf = LocalPF(N, loc_rad=2.0, jitter=0.3, rtps=0.5)
    for big in (1e6, 1e200):
        post = pf.analyse(
            prior,
            _subset_obs([1, 4], torch.tensor([big, -big], dtype=D)),
            generator=torch.Generator().manual_seed(0),
        )
        assert torch.isfinite(post.particles).all() and torch.isfinite(post.weights).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_reproducibility(dtype):
    N, n = 16, 12
    prior = _prior(N, n, 9)
    prior = ParticleState(prior.particles.to(dtype), prior.weights.to(dtype))
    obs = _subset_obs([0, 3, 6, 9], torch.tensor([0.1, 0.2, -0.3, 1.0], dtype=dtype))
    pf = LocalPF(N, loc_rad=2.0, mix=0.2, smooth=1, jitter=0.3, rtps=0.3)
    a = pf.analyse(prior, obs, generator=torch.Generator().manual_seed(1))
    b = pf.analyse(prior, obs, generator=torch.Generator().manual_seed(1))
    c = pf.analyse(prior, obs, generator=torch.Generator().manual_seed(2))
    assert a.particles.dtype == dtype and a.weights.dtype == dtype and a.particles.shape == (N, n)
    assert torch.equal(a.particles, b.particles)
    assert not torch.equal(a.particles, c.particles)
    # without the jitter (drawn in the state's dtype) the float64 analysis to round-off (1.3e-7)
    plain = LocalPF(N, loc_rad=2.0, mix=0.2, smooth=1, jitter=0.0, rtps=0.3)
    got = plain.analyse(prior, obs, generator=torch.Generator().manual_seed(1))
    ref = plain.analyse(
        _prior(N, n, 9), _subset_obs([0, 3, 6, 9], torch.tensor([0.1, 0.2, -0.3, 1.0], dtype=D)),
        generator=torch.Generator().manual_seed(1),
    )
    scale = float(ref.particles.abs().max())
    torch.testing.assert_close(got.particles.double(), ref.particles, rtol=0, atol=1e-5 * scale)


def test_needs_locations_and_diagonal_R():
    N, n = 10, 6
    prior = _prior(N, n, 10)
    y = torch.zeros(2, dtype=D)
    no_loc = Observation(
        y=y, operator=lambda x: x[..., :2], error=DiagonalError(torch.ones(2, dtype=D))
    )
    with pytest.raises(ValueError, match="locations"):
        LocalPF(N, loc_rad=2.0).analyse(prior, no_loc)
    corr = Observation(
        y=y,
        operator=lambda x: x[..., :2],
        error=CorrelatedError(torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=D)),
        locations=torch.tensor([0.0, 1.0], dtype=D),
    )
    with pytest.raises(ValueError, match="diagonal R"):
        LocalPF(N, loc_rad=2.0).analyse(prior, corr)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"N": 1, "loc_rad": 1.0}, "N"),
        ({"N": 10, "loc_rad": 0.0}, "loc_rad"),
        ({"N": 10, "loc_rad": 1.0, "mix": 2.0}, "mix"),
        ({"N": 10, "loc_rad": 1.0, "smooth": -1}, "smooth"),
        ({"N": 10, "loc_rad": 1.0, "jitter": -0.1}, "jitter"),
        ({"N": 10, "loc_rad": 1.0, "rtps": 1.5}, "rtps"),
    ],
)
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LocalPF(**kwargs)
