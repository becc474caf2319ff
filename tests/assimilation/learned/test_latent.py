"""Latent-space DA: linear-Gaussian oracles (latent = full on a subspace), shapes, bad input, save/load."""

from __future__ import annotations

import pytest
import torch

from hybrida.assimilation.base import ParticleState
from hybrida.assimilation.ensemble.etkf import ETKF
from hybrida.assimilation.learned.latent import LatentDA, latent_method, latent_observation
from hybrida.assimilation.learned.latent_space import (
    AutoencoderReduction,
    PODReduction,
    reduction_from_payload,
)
from hybrida.assimilation.particle.bootstrap import BootstrapPF
from hybrida.assimilation.variational.threedvar import ThreeDVar
from hybrida.learn.latent import encoded_climatology, fit_pod
from hybrida.nn.latent_autoencoder import PeriodicAutoencoder
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError

n, k, p = 12, 4, 7


def subspace_system(seed: int = 0):
    """A linear Gaussian system whose states lie in a k-dim affine subspace m + range(U), a linear H."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
    m = torch.randn(n, generator=g, dtype=torch.float64)
    scales = torch.tensor([3.0, 2.0, 1.0, 0.5], dtype=torch.float64)

    def draw(T: int) -> torch.Tensor:
        return m + (torch.randn(T, k, generator=g, dtype=torch.float64) * scales) @ U.mT

    H = torch.randn(p, n, generator=g, dtype=torch.float64)
    var = torch.rand(p, generator=g, dtype=torch.float64) + 0.5
    x_true = draw(1)[0]
    y = H @ x_true + var.sqrt() * torch.randn(p, generator=g, dtype=torch.float64)
    obs = Observation(y=y, operator=lambda x: x @ H.mT, error=DiagonalError(var), matrix=H)
    return draw, obs, g


def test_pod_reconstructs_exactly_on_its_span():
    draw, _, _ = subspace_system()
    pod = fit_pod(draw(200), k)
    X = draw(50)
    assert torch.allclose(pod.reconstruct(X), X, atol=1e-12, rtol=0)
    assert pod.encode(X).shape == (50, k) and pod.decode(pod.encode(X[0])).shape == (n,)
    assert float(pod.explained_variance()[k - 1]) == pytest.approx(1.0, abs=1e-12)


def test_latent_etkf_equals_full_etkf_on_subspace():
    """Oracle: with POD of a system living in k dims, latent ETKF == full ETKF (tolerance 1e-10)."""
    draw, obs, _ = subspace_system()
    pod = fit_pod(draw(300), k)
    E = draw(10)
    full = ETKF(10).analyse(E, obs)
    for update in ("increment", "replace"):
        lat = latent_method("etkf", pod, update=update, N=10).analyse(E, obs)
        assert lat.shape == (10, n)
        assert torch.allclose(lat, full, atol=1e-10, rtol=0), float((lat - full).abs().max())


def test_latent_3dvar_equals_full_3dvar_with_subspace_B():
    """Oracle: latent 3D-Var (B of the encoded climatology) == full 3D-Var with the rank-k B (tolerance 1e-8)."""
    draw, obs, _ = subspace_system(1)
    clim = draw(2000)
    pod = fit_pod(clim, k)
    xb = draw(1)[0]
    full = ThreeDVar((clim.mean(0), torch.cov(clim.mT)), xB=0.5, tol=1e-13).analyse(xb, obs)
    latent = latent_method("3dvar", pod, climatology=encoded_climatology(pod, clim), xB=0.5, tol=1e-13)
    xa = latent.analyse(xb, obs)
    assert xa.shape == (n,)
    assert torch.allclose(xa, full, atol=1e-8, rtol=0), float((xa - full).abs().max())


def test_latent_pf_equals_full_pf_on_subspace():
    """Oracle: same likelihoods and the same resampling draws give the same particles (tolerance 1e-12)."""
    draw, obs, _ = subspace_system(2)
    pod = fit_pod(draw(300), k)
    X = draw(30)
    prior = ParticleState(X, torch.full((30,), 1 / 30, dtype=torch.float64))
    full = BootstrapPF(30).analyse(prior, obs, generator=torch.Generator().manual_seed(5))
    lat = latent_method("pf", pod, N=30).analyse(prior, obs, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(lat.particles, full.particles, atol=1e-12, rtol=0)
    assert torch.allclose(lat.weights, full.weights)


def test_latent_observation_is_H_of_decoder_and_masks_nan():
    draw, obs, _ = subspace_system()
    pod = fit_pod(draw(100), k)
    z = torch.randn(3, k, dtype=torch.float64)
    lobs = latent_observation(obs, pod)
    assert torch.allclose(lobs.H(z), obs.H(pod.decode(z)))
    assert lobs.locations is None and torch.allclose(lobs.matrix, obs.matrix @ pod.basis)
    assert latent_observation(obs, fit_pod(draw(100), k), torch.ones(n, dtype=torch.float64)).H(z).shape == (3, p)
    obs.y[2] = float("nan")
    E = draw(8)
    out = latent_method("etkf", pod, N=8).analyse(E, obs)
    assert bool(torch.isfinite(out).all())


def test_autoencoder_reduction_follows_dtype_and_differentiates():
    net = PeriodicAutoencoder(16, 3, channels=4, levels=2, seed=0)
    red = AutoencoderReduction(net, loc=1.0, scale=2.0)
    x = torch.randn(5, 16, dtype=torch.float64)
    z = red.encode(x)
    assert z.dtype == torch.float64 and z.shape == (5, 3)
    assert red.decode(z).shape == (5, 16) and red.decode(z[0]).shape == (16,)
    J = torch.func.jacfwd(red.decode)(z[0])
    assert J.shape == (16, 3) and bool(torch.isfinite(J).all())
    back = reduction_from_payload(red.to_payload())
    assert torch.allclose(back.decode(z), red.decode(z))


def test_latent_da_payload_round_trip():
    draw, obs, _ = subspace_system()
    clim = draw(500)
    pod = fit_pod(clim, k)
    method = latent_method("3dvar", pod, climatology=encoded_climatology(pod, clim), xB=0.3)
    back = LatentDA.from_payload(method.to_payload())
    xb = draw(1)[0]
    assert torch.allclose(back.analyse(xb, obs), method.analyse(xb, obs), atol=1e-12)


def test_bad_input_is_a_clear_value_error():
    draw, obs, _ = subspace_system()
    pod = fit_pod(draw(100), k)
    method = latent_method("etkf", pod, N=5)
    with pytest.raises(ValueError, match="state size 11 does not match the reduction's n=12"):
        method.analyse(torch.zeros(5, n - 1, dtype=torch.float64), obs)
    with pytest.raises(ValueError, match="latent size 13 is larger than the state size n=12"):
        fit_pod(draw(100), n + 1)
    with pytest.raises(ValueError, match="NaN"):
        fit_pod(torch.full((10, n), float("nan")), 2)
    with pytest.raises(ValueError, match="needs climatology"):
        latent_method("3dvar", pod)
    with pytest.raises(ValueError, match="choose one of"):
        latent_method("letkf", pod, N=5)
    with pytest.raises(ValueError, match="update must be one of"):
        LatentDA(ETKF(5), pod, update="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="state size 12, the latent size is 4"):
        LatentDA(ThreeDVar((torch.zeros(n), torch.eye(n, dtype=torch.float64))), pod)
    with pytest.raises(ValueError, match="divisible"):
        PeriodicAutoencoder(10, 2, levels=2)
    with pytest.raises(ValueError, match="must be"):
        PODReduction(torch.zeros(n), torch.zeros(n + 1, k))


def test_latent_etkf_increment_is_projected_full_increment_off_subspace():
    """Oracle for any prior: with POD, the increment form gives x_f + U Uᵀ (x_a^ETKF - x_f) (tolerance 1e-10)."""
    draw, obs, g = subspace_system(3)
    pod = fit_pod(draw(300), k)
    E = draw(10) + 0.3 * torch.randn(10, n, generator=g, dtype=torch.float64)  # off the subspace
    full = ETKF(10).analyse(E, obs)
    lat = latent_method("etkf", pod, update="increment", N=10).analyse(E, obs)
    P = pod.basis @ pod.basis.mT
    assert torch.allclose(lat, E + (full - E) @ P, atol=1e-10, rtol=0)
    # the replace form sets the unresolved part to the manifold instead
    rep = latent_method("etkf", pod, update="replace", N=10).analyse(E, obs)
    assert torch.allclose(pod.reconstruct(rep), rep, atol=1e-10) and not torch.allclose(rep, lat, atol=1e-3)


def test_latent_3dvar_with_autoencoder_linearised_once_matches_autodiff_iterations():
    """A near-linear decoder: one outer loop with the background Jacobian ~ the relinearised minimum."""
    torch.manual_seed(0)
    net = PeriodicAutoencoder(16, 3, channels=4, levels=2, seed=0).double()
    red = AutoencoderReduction(net, scale=0.1)  # small scale: H∘decode close to affine over the increment
    g = torch.Generator().manual_seed(0)
    H = torch.randn(5, 16, generator=g, dtype=torch.float64)
    y = torch.randn(5, generator=g, dtype=torch.float64) * 0.1
    obs = Observation(y=y, operator=lambda x: x @ H.mT, error=DiagonalError(torch.ones(5, dtype=torch.float64)),
                      matrix=H)
    clim = (torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    xb = red.decode(torch.zeros(3, dtype=torch.float64))
    once = latent_method("3dvar", red, update="replace", climatology=clim, xB=0.01).analyse(xb, obs)
    lat = latent_method("3dvar", red, update="replace", climatology=clim, xB=0.01, tol=1e-12)
    lat.linearise_once = False
    iterated = lat.analyse(xb, obs)
    assert once.shape == (16,) and torch.allclose(once, iterated, atol=1e-3)
    assert not torch.allclose(once, xb, atol=1e-6)  # the analysis moved


def test_latent_surrogate_forecast_and_payload():
    """Forecast option (b): encode -> latent surrogate -> decode, for ensembles and particles; saved and rebuilt."""
    from hybrida.assimilation.learned.latent import LatentSurrogate
    from hybrida.models.lorenz96 import Lorenz96
    from hybrida.nn.mlp import ResidualMLP

    draw, _obs, _ = subspace_system()
    pod = fit_pod(draw(200), k)
    net = ResidualMLP(k, width=8, blocks=1, seed=0).double()
    sur = LatentSurrogate(net, 2, torch.zeros(k, dtype=torch.float64), torch.ones(k, dtype=torch.float64))
    method = latent_method("etkf", pod, N=6, surrogate=sur)
    E = draw(6)
    out = method.forecast(Lorenz96(n), E, 4)
    expected = pod.decode(sur.step(sur.step(pod.encode(E))))
    assert torch.allclose(out, expected)
    pf = latent_method("pf", pod, N=6, surrogate=sur)
    P = pf.forecast(Lorenz96(n), ParticleState(E, torch.full((6,), 1 / 6, dtype=torch.float64)), 2)
    assert P.particles.shape == (6, n)
    back = LatentDA.from_payload(method.to_payload())
    assert back.surrogate is not None and torch.allclose(back.forecast(Lorenz96(n), E, 4), out)
    with pytest.raises(ValueError, match="trained for 2 steps per cycle"):
        method.forecast(Lorenz96(n), E, 3)
