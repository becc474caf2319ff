"""Bootstrap PF: Kalman oracle, resampling unbiasedness, jitter covariance, NaN obs, degeneracy, dtype."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from pf_helpers import gaussian_particles, kalman, linear_obs, weighted_stats

from hybrida.assimilation.base import ParticleState, state_mean
from hybrida.assimilation.particle import BootstrapPF
from hybrida.assimilation.particle.base import log_likelihood
from hybrida.assimilation.particle.regularize import bandwidth, kernel_noise, weighted_sqrt_cov

D = torch.float64


def _problem():
    m = torch.tensor([1.0, -0.5, 0.3], dtype=D)
    P = torch.tensor([[1.0, 0.3, 0.1], [0.3, 0.8, -0.2], [0.1, -0.2, 0.5]], dtype=D)
    Hm = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=D)
    R = torch.tensor([0.5, 0.8], dtype=D)
    y = torch.tensor([1.6, 0.4], dtype=D)
    return m, P, Hm, R, y


def test_posterior_matches_kalman_without_resampling():
    m, P, Hm, R, y = _problem()
    N = 20000
    prior = gaussian_particles(m, P, N, seed=0)
    pf = BootstrapPF(N, NER=0.0)
    post = pf.analyse(prior, linear_obs(Hm, y, R), generator=torch.Generator().manual_seed(1))
    assert pf.diagnostics()["resampled"] == 0.0
    assert torch.equal(post.particles, prior.particles)
    ma, Pa = kalman(m, P, Hm, torch.diag(R), y)
    mean, cov = weighted_stats(post)
    e = pf.diagnostics()["ess"]
    assert 0.2 * N < e < N
    tol_m = 5 * (torch.diagonal(Pa) / e).sqrt()
    assert torch.all((mean - ma).abs() < tol_m), (mean, ma)
    assert torch.allclose(cov, Pa, atol=0.04), (cov, Pa)


def test_log_evidence_matches_gaussian_marginal():
    m, P, Hm, R, y = _problem()
    N = 20000
    pf = BootstrapPF(N, NER=0.0)
    pf.analyse(gaussian_particles(m, P, N, seed=2), linear_obs(Hm, y, R))
    S = Hm @ P @ Hm.T + torch.diag(R)
    d = y - Hm @ m
    exact = float(torch.distributions.MultivariateNormal(torch.zeros(2, dtype=D), S).log_prob(d))
    assert pf.diagnostics()["log_evidence"] == pytest.approx(exact, abs=0.03)


@pytest.mark.parametrize("scheme", ["systematic", "stratified", "multinomial", "residual"])
def test_resampled_posterior_matches_kalman(scheme):
    m, P, Hm, R, y = _problem()
    N = 20000
    pf = BootstrapPF(N, NER=1.0, resampling=scheme)
    post = pf.analyse(
        gaussian_particles(m, P, N, seed=3),
        linear_obs(Hm, y, R),
        generator=torch.Generator().manual_seed(4),
    )
    assert pf.diagnostics()["resampled"] == 1.0
    assert torch.allclose(post.weights, torch.full((N,), 1.0 / N, dtype=D))
    ma, Pa = kalman(m, P, Hm, torch.diag(R), y)
    mean, cov = weighted_stats(post)
    tol_m = 6 * (torch.diagonal(Pa) / pf.diagnostics()["ess"]).sqrt()
    assert torch.all((mean - ma).abs() < tol_m)
    assert torch.allclose(cov, Pa, atol=0.05)


@pytest.mark.parametrize("scheme", ["systematic", "multinomial"])
def test_resampling_preserves_weighted_mean_in_expectation(scheme):
    """Over many independent resamplings (a batch of filters), E[resampled mean] = weighted mean."""
    m, P, Hm, R, y = _problem()
    N, B = 20, 4000
    prior = gaussian_particles(m, P, N, seed=5)
    obs = linear_obs(Hm, y, R)
    weighted = state_mean(BootstrapPF(N, NER=0.0).analyse(prior, obs))
    batch = ParticleState(prior.particles.expand(B, N, 3), prior.weights.expand(B, N))
    post = BootstrapPF(N, NER=1.0, resampling=scheme).analyse(
        batch, obs, generator=torch.Generator().manual_seed(6)
    )
    assert post.particles.shape == (B, N, 3)
    means = post.particles.mean(-2)  # uniform weights after resampling
    se = means.std(0) / math.sqrt(B)
    assert torch.all((means.mean(0) - weighted).abs() < 5 * se + 1e-12)
    assert not torch.allclose(means[0], means[1])  # the batch members drew independently


def test_kernel_noise_covariance_both_paths():
    g = torch.Generator().manual_seed(7)
    for N, n in ((50, 3), (4, 3)):  # N > 2n: eigh square root; else the raw square root
        X = torch.randn(N, n, generator=g, dtype=D)
        w = torch.rand(N, generator=g, dtype=D)
        w = w / w.sum()
        C12 = weighted_sqrt_cov(X, w)
        mu = w @ X
        ub = 1.0 / (1.0 - (w * w).sum())
        C = ub * ((w[:, None] * (X - mu)).T @ (X - mu))
        assert torch.allclose(C12.T @ C12, C)
        noise = kernel_noise(C12, 0.5, g, 200000)
        emp = noise.T @ noise / noise.shape[0]
        assert torch.allclose(emp, 0.25 * C, atol=0.02 * float(C.diagonal().max()))


def test_regularisation_jitters_only_duplicates_unless_jitter_all():
    m, P, Hm, R, y = _problem()
    N = 200
    prior = gaussian_particles(m, P, N, seed=8)
    obs = linear_obs(Hm, y, R)
    post = BootstrapPF(N, reg=1.0).analyse(prior, obs, generator=torch.Generator().manual_seed(9))
    # each unique (singly selected) particle is an exact prior particle; duplicates are moved
    dist = torch.cdist(post.particles, prior.particles).min(-1).values
    exact = dist == 0
    assert 0 < int(exact.sum()) < N
    post_all = BootstrapPF(N, reg=1.0, jitter_all=True).analyse(
        prior, obs, generator=torch.Generator().manual_seed(9)
    )
    assert int((torch.cdist(post_all.particles, prior.particles).min(-1).values == 0).sum()) == 0
    assert bandwidth(100, 3) == pytest.approx(100 ** (-1 / 7))


def test_nan_observations_are_dropped():
    m, P, Hm, R, y = _problem()
    N = 100
    prior = gaussian_particles(m, P, N, seed=10)
    y_nan = y.clone()
    y_nan[1] = float("nan")
    pf = BootstrapPF(N, NER=0.0)
    a = pf.analyse(prior, linear_obs(Hm, y_nan, R))
    assert pf.diagnostics()["n_obs"] == 1.0
    b = BootstrapPF(N, NER=0.0).analyse(prior, linear_obs(Hm[:1], y[:1], R[:1]))
    assert torch.allclose(a.weights, b.weights)
    y_all = torch.full_like(y, float("nan"))
    pf.analyse(prior, linear_obs(Hm, y_all, R))
    assert pf.diagnostics()["n_obs"] == 0.0


@pytest.mark.parametrize("innovation", [1e6, 1e200])
def test_weight_degeneracy_gives_finite_weights(innovation):
    m, P, Hm, R, y = _problem()
    N = 100
    prior = gaussian_particles(m, P, N, seed=11)
    pf = BootstrapPF(N, reg=1.0, NER=0.5)
    post = pf.analyse(
        prior, linear_obs(Hm, y + innovation, R), generator=torch.Generator().manual_seed(0)
    )
    assert torch.isfinite(post.weights).all() and torch.isfinite(post.particles).all()
    assert float(post.weights.sum()) == pytest.approx(1.0)
    d = pf.diagnostics()
    if innovation == 1e200:  # every likelihood underflows even in log space: prior weights kept
        assert d["degenerate"] == 1.0 and d["log_evidence"] == -math.inf
        assert d["ess"] == pytest.approx(N)
    else:  # finite log-likelihoods: one particle takes all the weight, then is resampled
        assert d["degenerate"] == 0.0 and d["ess"] == pytest.approx(1.0)
        assert d["resampled"] == 1.0


def test_dead_particles_get_zero_weight():
    m, P, Hm, R, y = _problem()
    prior = gaussian_particles(m, P, 10, seed=12)
    prior.particles[2] = float("nan")
    post = BootstrapPF(10, NER=0.0).analyse(prior, linear_obs(Hm, y, R))
    assert float(post.weights[2]) == 0.0 and torch.isfinite(post.weights).all()


def test_correlated_error_log_likelihood():
    m, P, Hm, _, y = _problem()
    Rf = torch.tensor([[0.5, 0.2], [0.2, 0.8]], dtype=D)
    X = gaussian_particles(m, P, 7, seed=13).particles
    got = log_likelihood(X, linear_obs(Hm, y, Rf))
    ref = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=D), Rf).log_prob(y - X @ Hm.T)
    assert torch.allclose(got, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_and_reproducible(dtype):
    m, _, Hm, R, y = _problem()
    pf = BootstrapPF(50, reg=1.0, NER=1.0)
    init = pf.initial_state(m.to(dtype), 0.5, generator=torch.Generator().manual_seed(0))
    assert init.particles.dtype == dtype and init.weights.dtype == dtype
    assert init.particles.shape == (50, 3) and torch.allclose(
        init.weights, torch.full((50,), 0.02, dtype=dtype)
    )
    obs = linear_obs(Hm.to(dtype), y.to(dtype), R.to(dtype))
    a = pf.analyse(init, obs, generator=torch.Generator().manual_seed(1))
    b = pf.analyse(init, obs, generator=torch.Generator().manual_seed(1))
    assert a.particles.dtype == dtype and a.weights.dtype == dtype
    assert torch.equal(a.particles, b.particles) and torch.equal(a.weights, b.weights)
    # from the same (float64-drawn) prior, without the regularisation noise (drawn in the
    # state's dtype), the analysis is the float64 one to round-off: measured 3e-8
    init64 = pf.initial_state(m, 0.5, generator=torch.Generator().manual_seed(0))
    plain = BootstrapPF(50, reg=0.0, NER=1.0)
    prior = ParticleState(init64.particles.to(dtype), init64.weights.to(dtype))
    got = plain.analyse(prior, obs, generator=torch.Generator().manual_seed(1))
    ref = plain.analyse(init64, linear_obs(Hm, y, R), generator=torch.Generator().manual_seed(1))
    scale = float(ref.particles.abs().max())
    torch.testing.assert_close(got.particles.double(), ref.particles, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(got.weights.double(), ref.weights, rtol=0, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_follows_cuda():
    m, _, Hm, R, y = (t.cuda() for t in _problem())
    pf = BootstrapPF(64, reg=1.0)
    init = pf.initial_state(m, 0.5, generator=torch.Generator().manual_seed(0))
    post = pf.analyse(init, linear_obs(Hm, y, R), generator=torch.Generator().manual_seed(1))
    assert post.particles.is_cuda and post.weights.is_cuda


def test_forecast_keeps_weights():
    from hybrida.models.lorenz63 import Lorenz63

    model = Lorenz63()
    w = torch.softmax(torch.arange(5, dtype=D), 0)
    state = ParticleState(torch.randn(5, 3, dtype=D, generator=torch.Generator().manual_seed(0)), w)
    f = BootstrapPF(5).forecast(model, state, 3)
    assert torch.equal(f.weights, w)
    assert torch.allclose(f.particles, model.forecast(state.particles, 3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"N": 1}, "N"),
        ({"N": 10, "reg": -1}, "reg"),
        ({"N": 10, "NER": 1.5}, "NER"),
        ({"N": 10, "resampling": "x"}, "resampling"),
        ({"N": 10, "jitter_all": 1}, "jitter_all"),
    ],
)
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BootstrapPF(**kwargs)


def test_wrong_prior_type():
    with pytest.raises(ValueError, match="ParticleState"):
        BootstrapPF(5).analyse(torch.zeros(5, 3), None)


@pytest.mark.reproduction
def test_l63_sakov2012_reproduction_short():
    """PartFilt(N=100, reg=2.4, NER=0.3) on L63 sakov2012 gives 0.38 (DAPPER); 300 cycles, 3 seeds."""
    from hybrida.experiment.config import validate_config
    from hybrida.experiment.presets import get_preset
    from hybrida.experiment.runner import run_experiment

    scores = []
    for seed in (1, 2, 3):
        data = get_preset("lorenz63/sakov2012")
        data = {
            **data,
            "seed": seed,
            "cycles": 300,
            "burn_in": 4.0,
            "climatology": {**data["climatology"], "steps": 2000},
        }
        data["method"] = {
            "name": "hybrida.assimilation.particle.bootstrap:BootstrapPF",
            "params": {"N": 100, "reg": 2.4, "NER": 0.3},
        }
        summary = run_experiment(validate_config(data), progress=False).summary
        assert not summary["diverged"]
        scores.append(summary["rmse_a"])
    assert abs(statistics.median(scores) - 0.38) <= 0.06, scores
