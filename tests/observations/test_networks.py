"""Observation networks: shapes, indices, locations, randomness, correlated R, radiance operator."""

from __future__ import annotations

import pytest
import torch

from hybrida.observations import (
    CorrelatedError,
    DiagonalError,
    EveryKthObs,
    IdentityObs,
    Observation,
    RadianceObs,
    RandomSubsetObs,
    SubsetObs,
)
from hybrida.observations.networks import periodic_distance
from hybrida.registry import OBSERVATIONS, resolve


@pytest.fixture(autouse=True)
def _float64():
    """float64 by default inside these tests only (restored afterwards)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _x(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_registry_names_resolve():
    for name in OBSERVATIONS:
        assert resolve(OBSERVATIONS, name, "observation") is not None


def test_identity_obs():
    net = IdentityObs(5, std=2.0).network(1)
    x = _x(5)
    assert torch.equal(net.H(x), x)
    assert torch.equal(net.matrix, torch.eye(5))
    assert torch.equal(net.locations, torch.arange(5.0))
    assert isinstance(net.error, DiagonalError)
    assert torch.allclose(net.error.variance, torch.full((5,), 4.0))
    assert torch.isnan(net.y).all() and net.y.dtype == torch.float64


def test_subset_obs_order_batch_and_matrix():
    obs = SubsetObs(10, [7, 2, 4], std=[0.5, 1.0, 2.0])
    net = obs.network(3)
    X = torch.randn(6, 4, 10)
    assert net.H(X).shape == (6, 4, 3)
    assert torch.equal(net.H(X), X[..., [7, 2, 4]])
    assert torch.allclose(net.H(X), X @ net.matrix.T)
    assert torch.equal(net.locations, torch.tensor([7.0, 2.0, 4.0]))
    assert torch.allclose(net.error.std, torch.tensor([0.5, 1.0, 2.0]))
    assert net.meta["cycle"] == 3


def test_every_kth():
    net = EveryKthObs(10, 3, offset=1).network(1)
    assert torch.equal(net.locations, torch.tensor([1.0, 4.0, 7.0]))
    assert net.p == 3


@pytest.mark.parametrize(
    "make",
    [
        lambda: SubsetObs(5, [0, 5]),
        lambda: SubsetObs(5, [-1, 2]),
        lambda: SubsetObs(5, [1, 1]),
        lambda: SubsetObs(5, []),
        lambda: SubsetObs(5, [0.5, 1.0]),
        lambda: IdentityObs(3, std=0.0),
        lambda: IdentityObs(3, std=float("nan")),
        lambda: IdentityObs(3, std=[1.0, 1.0]),
        lambda: IdentityObs(3, std=[1.0, -1.0, 1.0]),
        lambda: IdentityObs(3, correlation_length=-1.0),
        lambda: IdentityObs(3, every=0),
        lambda: EveryKthObs(5, 0),
        lambda: EveryKthObs(5, 2, offset=5),
        lambda: RandomSubsetObs(5, 6),
        lambda: RandomSubsetObs(5, 0),
        lambda: RandomSubsetObs(5, 1.5),
        lambda: RadianceObs(5, 6, 1.0),
        lambda: RadianceObs(5, 2, 0.0),
        lambda: RadianceObs(5, 2, 1.0, "cubic"),
    ],
)
def test_validation_errors(make):
    with pytest.raises(ValueError):
        make()


def test_random_subset_reproducible_and_changing():
    obs = RandomSubsetObs(40, 0.5)
    assert obs.p == 20
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = [obs.network(k, g1).locations for k in range(1, 4)]
    b = [obs.network(k, g2).locations for k in range(1, 4)]
    for u, v in zip(a, b):
        assert torch.equal(u, v)
        assert u.numel() == 20 and torch.unique(u).numel() == 20
        assert torch.all(u[1:] > u[:-1])  # sorted
    assert not torch.equal(a[0], a[1])
    other = RandomSubsetObs(40, 20).network(1, torch.Generator().manual_seed(8)).locations
    assert not torch.equal(other, a[0])
    net = obs.network(1, torch.Generator().manual_seed(7))
    x = _x(40)
    assert torch.equal(net.H(x), x[net.locations.long()])


def test_random_subset_per_variable_std():
    std = torch.linspace(0.1, 4.0, 10)
    net = RandomSubsetObs(10, 4, std=std).network(1, torch.Generator().manual_seed(1))
    assert torch.allclose(net.error.std, std[net.locations.long()])


def test_periodic_distance():
    d = periodic_distance(torch.tensor([0.0, 1.0]), torch.tensor([9.0, 5.0]), 10)
    assert torch.equal(d, torch.tensor([[1.0, 5.0], [2.0, 4.0]]))


def test_correlated_R_structure_and_spd():
    obs = SubsetObs(20, [0, 1, 5, 19], std=[1.0, 2.0, 1.0, 0.5], correlation_length=2.0)
    R = obs.network(1).error.cov
    assert isinstance(obs.network(1).error, CorrelatedError)
    assert torch.allclose(R, R.T)
    assert float(torch.linalg.eigvalsh(R).min()) > 0
    s = torch.tensor([1.0, 2.0, 1.0, 0.5])
    # location 0 and 19 are neighbours on the periodic grid: distance 1
    assert torch.isclose(R[0, 3], s[0] * s[3] * torch.exp(torch.tensor(-0.5)))
    assert torch.isclose(R[1, 2], s[1] * s[2] * torch.exp(torch.tensor(-2.0)))
    assert torch.allclose(torch.diagonal(R), s**2)


def test_correlated_sample_covariance_monte_carlo():
    err = IdentityObs(6, std=[1.0, 2.0, 0.5, 1.0, 1.5, 1.0], correlation_length=1.5).network(1).error
    e = err.sample((40000,), torch.Generator().manual_seed(3))
    emp = e.T @ e / e.shape[0]
    assert e.shape == (40000, 6)
    # 4 sigma-ish tolerance for entries of size <= 4 with 40000 samples
    assert torch.allclose(emp, err.cov, atol=0.08)
    assert e.mean(0).abs().max() < 0.05


@pytest.mark.parametrize("corr", [0.0, 2.5])
def test_whiten_and_logpdf_match_torch_distributions(corr):
    err = SubsetObs(12, [0, 3, 4, 8, 11], std=[1.0, 0.3, 2.0, 1.0, 0.7], correlation_length=corr).network(1).error
    d = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    mvn = torch.distributions.MultivariateNormal(torch.zeros(5), covariance_matrix=err.cov)
    assert torch.allclose(err.logpdf(d), mvn.log_prob(d), atol=1e-10)
    w = err.whiten(d)
    # |R^{-1/2} d|^2 = d^T R^{-1} d
    maha = torch.einsum("bi,ij,bj->b", d, torch.linalg.inv(err.cov), d)
    assert torch.allclose((w * w).sum(-1), maha, atol=1e-10)
    assert torch.isclose(err.logdet(), torch.logdet(err.cov))


@pytest.mark.parametrize("corr", [0.0, 2.0])
def test_valid_masks_nan_consistently(corr):
    obs = SubsetObs(10, [1, 3, 5, 7], std=[1.0, 2.0, 3.0, 4.0], correlation_length=corr)
    net = obs.observe(_x(10), 1, torch.Generator().manual_seed(0))
    assert torch.isfinite(net.y).all()
    net.y[1] = float("nan")
    v = net.valid()
    keep = torch.tensor([0, 2, 3])
    x = _x(10, 1)
    assert v.p == 3
    assert torch.equal(v.y, net.y[keep])
    assert torch.equal(v.H(x), net.H(x)[keep])
    assert torch.equal(v.locations, net.locations[keep])
    assert torch.equal(v.matrix, net.matrix[keep])
    assert torch.allclose(v.error.cov, net.error.cov[keep][:, keep])
    net.y[:] = float("nan")
    empty = net.valid()
    assert empty.p == 0 and empty.error.p == 0


def test_observe_noise_statistics():
    obs = IdentityObs(200, std=0.5)
    x = torch.zeros(200)
    net = obs.observe(x, 1, torch.Generator().manual_seed(2))
    assert abs(float(net.y.std()) - 0.5) < 0.1


@pytest.mark.parametrize("nl", ["tanh", "square", "exp", "linear"])
def test_radiance_shapes_locations_and_weights(nl):
    obs = RadianceObs(40, 8, 2.0, nl, correlation_length=1.0)
    net = obs.network(1)
    assert torch.equal(net.locations, torch.arange(8.0) * 5)
    assert torch.allclose(obs.weights.sum(-1), torch.ones(8))
    # weights peak at the channel centre and are symmetric on the periodic grid
    assert int(obs.weights[0].argmax()) == 0
    assert torch.isclose(obs.weights[0, 1], obs.weights[0, 39])
    X = torch.randn(3, 40)
    assert net.H(X).shape == (3, 8)
    assert (net.matrix is not None) == (nl == "linear")
    # known value: constant state c gives g(c) in every channel
    c = torch.full((40,), 2.0)
    expected = {"tanh": 5 * torch.tanh(torch.tensor(0.4)), "square": torch.tensor(0.8),
                "exp": 5 * torch.expm1(torch.tensor(0.4)), "linear": torch.tensor(2.0)}[nl]
    assert torch.allclose(net.H(c), expected.expand(8))


@pytest.mark.parametrize("nl", ["tanh", "square", "exp"])
def test_radiance_differentiable_taylor(nl):
    net = RadianceObs(20, 5, 1.5, nl).network(1)
    x, dx = _x(20, 0) * 3, _x(20, 1)
    y0, tl = torch.func.jvp(net.H, (x,), (dx,))
    errs = []
    for eps in (1e-2, 1e-3, 1e-4):
        errs.append(float((net.H(x + eps * dx) - y0 - eps * tl).norm()))
    # second-order remainder: error falls ~100x per decade of eps
    assert errs[1] < errs[0] / 50 and errs[2] < errs[1] / 50
    # adjoint dot-product identity
    _, vjp = torch.func.vjp(net.H, x)
    w = _x(5, 2)
    assert torch.isclose(torch.dot(tl, w), torch.dot(dx, vjp(w)[0]), rtol=1e-12)


def test_radiance_observation_is_an_observation():
    obs = RadianceObs(12, 4, 1.0, "tanh", std=0.1)
    net = obs.observe(_x(12), 2, torch.Generator().manual_seed(0))
    assert isinstance(net, Observation) and net.p == 4 and torch.isfinite(net.y).all()
