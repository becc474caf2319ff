"""Coarse-graining, subgrid forcing, the parametrised QG model and the subgrid training (Ross et al. 2023)."""

from __future__ import annotations

import math

import pytest
import torch

from hybrida.learn.subgrid import (
    SubgridSamples,
    fit_subgrid,
    layer_std,
    load_parametrized_qg,
    offline_skill,
    save_parametrization,
)
from hybrida.models.qg import QGModel
from hybrida.models.qg_subgrid import ParametrizedQG, coarsen, refine, subgrid_forcing
from hybrida.nn.subgrid_cnn import PeriodicFCNN


def _smooth_state(m: QGModel, kmax: int, seed: int = 0) -> torch.Tensor:
    """A random PV state of ``m`` with only wavenumbers |k|, |l| < kmax (grid units)."""
    g = torch.Generator().manual_seed(seed)
    qh = torch.randn(2, m.ny, m.nx // 2 + 1, generator=g, dtype=torch.complex128)
    kk = torch.arange(m.nx // 2 + 1)
    ll = torch.fft.fftfreq(m.ny, d=1.0 / m.ny).abs()
    keep = (kk[None, :] < kmax) & (ll[:, None] < kmax)
    x = m.physical(qh * keep)
    return 1e-5 * x / x.std()


def test_coarsen_keeps_resolved_fields_and_refine_inverts_it() -> None:
    hi, lo = QGModel(nx=32), QGModel(nx=16)
    x = _smooth_state(lo, 8)  # every lo mode but Nyquist
    assert torch.allclose(coarsen(hi, lo, refine(lo, hi, x)), x, rtol=0, atol=1e-15 * float(x.abs().max()))
    # grid values of a resolved wave are kept: a sine sampled on both grids
    xs = torch.arange(32, dtype=torch.float64) * hi.dx
    wave = torch.sin(2 * math.pi * 3 * xs / hi.L).expand(32, 32)
    x_hi = torch.cat([wave.reshape(-1), 0.5 * wave.reshape(-1)])
    x_lo = coarsen(hi, lo, x_hi)
    assert torch.allclose(lo.to_grid(x_lo)[0], lo.to_grid(x_hi.reshape(2, 32, 32)[:, ::2, ::2].reshape(-1))[0],
                          atol=1e-12)


def test_subgrid_forcing_vanishes_for_large_scale_states_only() -> None:
    hi, lo = QGModel(nx=32), QGModel(nx=16)
    # products of modes with |k| < 4 stay below 8 = lo's Nyquist: the low-resolution model is exact
    x_large = refine(lo, hi, _smooth_state(lo, 4))
    S = subgrid_forcing(hi, lo, x_large)
    scale = lo.tendency(coarsen(hi, lo, x_large)).abs().max()
    assert float(S.abs().max() / scale) < 1e-10
    x_small = _smooth_state(hi, 16, seed=1)
    S = subgrid_forcing(hi, lo, x_small)
    assert float(S.abs().max() / lo.tendency(coarsen(hi, lo, x_small)).abs().max()) > 1e-2


def test_parametrized_qg_without_forcing_is_the_plain_model() -> None:
    lo = QGModel(nx=16)
    x = _smooth_state(lo, 8)
    assert torch.equal(ParametrizedQG(nx=16).step(x), lo.step(x))
    net = PeriodicFCNN([4], [3, 3], seed=0)
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    assert torch.allclose(ParametrizedQG(net=net, nx=16).step(x), lo.step(x), rtol=0, atol=1e-22)
    with pytest.raises(ValueError, match="q_scale"):
        ParametrizedQG(q_scale=torch.tensor([1.0, 0.0]), nx=16)


def test_periodic_fcnn_is_translation_equivariant() -> None:
    net = PeriodicFCNN([6, 6], [5, 3, 3], seed=0)
    z = torch.randn(2, 2, 12, 12, generator=torch.Generator().manual_seed(0))
    shifted = net(torch.roll(z, (3, -2), (-2, -1)))
    assert torch.allclose(shifted, torch.roll(net(z), (3, -2), (-2, -1)), atol=1e-6)
    with pytest.raises(ValueError, match="kernel"):
        PeriodicFCNN([4, 4], [3, 3])


def _linear_problem(lo: QGModel, T: int, seed: int) -> SubgridSamples:
    """q random smooth fields; S = a local linear stencil of q (a Laplacian-like forcing), learnable exactly."""
    q = torch.stack([_smooth_state(lo, 6, seed=seed + t) for t in range(T)]).unsqueeze(1)
    g = lo.to_grid(q)
    lap = (torch.roll(g, 1, -1) + torch.roll(g, -1, -1) + torch.roll(g, 1, -2) + torch.roll(g, -1, -2) - 4 * g)
    S = (1e-6 * (lap + 0.3 * torch.roll(g, 1, -3))).reshape(q.shape)
    return SubgridSamples(q, S, torch.arange(T, dtype=torch.float64))


@pytest.mark.parametrize("lr", [3e-3, 1e-9])
def test_subgrid_training_learns_a_linear_forcing_and_not_without_learning(lr: float) -> None:
    lo = QGModel(nx=16)
    train, valid = _linear_problem(lo, 48, 0), _linear_problem(lo, 12, 1000)
    q_scale, s_scale = layer_std(train.q, lo), layer_std(train.S, lo)
    net = PeriodicFCNN([8], [3, 3], activation="tanh", seed=0)
    fit_subgrid(net, lo, train, valid, q_scale, s_scale, epochs=40, lr=lr, batch_size=8, patience=40, seed=0)
    model = ParametrizedQG(net=net, q_scale=q_scale, s_scale=s_scale, nx=16)
    r2 = offline_skill(model, valid)["r2"]
    if lr > 1e-6:
        assert min(r2) > 0.9, r2
    else:  # learning switched off: the untrained network explains nothing
        assert max(r2) < 0.5, r2


def test_parametrisation_round_trip(tmp_path) -> None:
    net = PeriodicFCNN([4], [3, 3], seed=3)
    model = ParametrizedQG(net=net, q_scale=torch.tensor([2e-6, 3e-7]), s_scale=torch.tensor([1e-11, 2e-12]),
                           nx=16, dt=3600.0)
    path = save_parametrization(tmp_path / "p.pt", model)
    back = load_parametrized_qg(path)
    x = _smooth_state(model, 8)
    assert back.dt == 3600.0 and torch.equal(back.step(x), model.step(x))
    with pytest.raises(ValueError, match="nx"):
        load_parametrized_qg(path, nx=32)
