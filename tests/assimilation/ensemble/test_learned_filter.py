"""The learned LETKF: observation-space form = ensemble-space form, gradients = finite differences,
the learned taper recovers Gaspari–Cohn from analyses made with it, save/load and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from hybrida.assimilation.ensemble.differentiable import dense_taper, local_etkf_arrays
from hybrida.assimilation.ensemble.learned_filter import (
    DistanceTaper,
    LearnedFilterNet,
    LearnedLETKF,
)
from hybrida.assimilation.ensemble.letkf import GC_HALF_WIDTH_FACTOR, LETKF
from hybrida.assimilation.ensemble.localization import gaspari_cohn
from hybrida.assimilation.learned import save_learned_analysis
from hybrida.assimilation.learned.base import FORMAT
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.networks import EveryKthObs

D = torch.float64


def _case(N: int, n: int = 40, k: int = 4, batch: tuple[int, ...] = (), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    E = 2.0 + 3.0 * torch.randn(*batch, N, n, generator=g, dtype=D)
    idx = torch.arange(0, n, k)
    y = torch.randn(*batch, len(idx), generator=g, dtype=D)
    return E, idx, y, torch.full((len(idx),), 0.8, dtype=D)


@pytest.mark.parametrize("N", [5, 10, 20])
def test_observation_space_equals_ensemble_space(N):
    E, idx, y, sig = _case(N, batch=(3,))
    rad = torch.tensor([[1.5], [3.0], [6.0]], dtype=D).reshape(3, 1, 1)  # one radius per batch member
    rho = dense_taper(40, idx.to(D), rad)
    a = local_etkf_arrays(E, E[..., idx], y, sig, rho, "ensemble")
    b = local_etkf_arrays(E, E[..., idx], y, sig, rho, "observation")
    torch.testing.assert_close(b, a, rtol=0, atol=1e-12)


def test_batched_arrays_equal_the_letkf_class():
    E, idx, y, sig = _case(10, seed=3)
    obs = EveryKthObs(40, k=4, std=0.8).observe(torch.zeros(40, dtype=D), 1, torch.Generator().manual_seed(0))
    obs.y = y
    ref = LETKF(N=10, loc_rad=3.0, infl=1.0, solver="eigh").analyse(E, obs)
    got = local_etkf_arrays(E, E[..., idx], y, sig, dense_taper(40, idx.to(D), torch.tensor(3.0, dtype=D)))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)


def test_taper_starts_at_gaspari_cohn_and_interpolates_linearly():
    taper = DistanceTaper(20, loc_rad=3.0, classes=2)
    d = torch.arange(21, dtype=D)
    gc = gaspari_cohn(d / (GC_HALF_WIDTH_FACTOR * 3.0)).clamp(1e-7, 1 - 1e-7)
    torch.testing.assert_close(taper(d.unsqueeze(-1)).squeeze(-1), gc, rtol=0, atol=1e-12)
    mid = taper(torch.tensor([[2.5]], dtype=D)).item()
    assert mid == pytest.approx(0.5 * (gc[2] + gc[3]).item(), abs=1e-12)


def test_site_classes_follow_the_distance_to_the_nearest_observation():
    net = LearnedFilterNet(12, sites=3)
    classes = net.site_classes(torch.tensor([0.0, 4.0, 8.0], dtype=D))
    assert classes.tolist() == [0, 1, 2, 1] * 3


def _fd_check(f, params, eps=1e-6, tol=1e-5):
    """Autograd gradient of scalar f() w.r.t. each tensor in ``params`` against central differences."""
    grads = torch.autograd.grad(f(), params)
    for p, g in zip(params, grads, strict=True):
        flat = p.detach().view(-1)
        for j in range(0, flat.numel(), max(1, flat.numel() // 6)):
            old = flat[j].item()
            with torch.no_grad():
                flat[j] = old + eps
                up = f().item()
                flat[j] = old - eps
                down = f().item()
                flat[j] = old
            fd = (up - down) / (2 * eps)
            assert g.reshape(-1)[j].item() == pytest.approx(fd, rel=tol, abs=tol)


@pytest.mark.parametrize("N", [4, 8])  # ensemble space (N <= p) and observation space (N > p)
def test_gradients_through_one_analysis_match_finite_differences(N):
    torch.manual_seed(0)
    net = LearnedFilterNet(16, loc_rad=2.0, infl=1.1, field={"hidden": 3, "width": 1}, sites=2)
    with torch.no_grad():  # away from the zero-initialised head so the field network's weights matter
        for p in net.field.parameters():
            p.add_(0.1 * torch.randn(p.shape, dtype=D))
    E, idx, y, sig = _case(N, n=16, k=3)
    W = torch.randn(N, 16, generator=torch.Generator().manual_seed(9), dtype=D)
    E.requires_grad_()

    def f():
        return (net(E, E[..., idx], y, sig, idx.to(D)) * W).sum()

    _fd_check(f, [E, net.taper.theta, net.theta_infl, *net.field.head.parameters()])


def test_gradients_through_several_cycles_match_finite_differences():
    """Three forecast–analysis cycles of L96 (n=12), loss on the final mean: d/d(taper, inflation, prior)."""
    model = Lorenz96(n=12)
    net = LearnedFilterNet(12, loc_rad=2.0, infl=1.05, sites=3)
    E0, idx, _, sig = _case(6, n=12, k=3, seed=2)
    g = torch.Generator().manual_seed(4)
    ys = [torch.randn(len(idx), generator=g, dtype=D) + 2.0 for _ in range(3)]
    E0.requires_grad_()

    def f():
        E = E0
        for y in ys:
            E = model.forecast(E, 3)
            E = net(E, E[..., idx], y, sig, idx.to(D))
        return (E.mean(-2) ** 2).mean() + E.var(-2).mean()

    _fd_check(f, [E0, net.taper.theta, net.theta_infl])


def test_learned_taper_recovers_gaspari_cohn_from_its_analyses():
    """Analyses made with GC (radius 2): the taper, started at GC of radius 6, is fitted back to GC within 0.05.

    Fails if the fit does not move the taper (at the start it is off by up to 0.79).
    """
    g = torch.Generator().manual_seed(0)
    n, N, B = 40, 10, 24
    idx = torch.arange(0, n, 4)
    base = torch.randn(B, n, generator=g, dtype=D).cumsum(-1) * 0.3  # smooth-ish, spatially correlated members
    E = base.unsqueeze(1) + torch.randn(B, N, n, generator=g, dtype=D).cumsum(-1).mul(0.4)
    E = E - E.mean(-1, keepdim=True)
    y = E.mean(-2)[..., idx] + torch.randn(B, len(idx), generator=g, dtype=D)
    sig = torch.ones(len(idx), dtype=D)
    target = local_etkf_arrays(E, E[..., idx], y, sig, dense_taper(n, idx.to(D), torch.tensor(2.0, dtype=D)))
    net = LearnedFilterNet(n, loc_rad=6.0, infl=1.05)
    net.theta_infl.requires_grad_(False)
    opt = torch.optim.Adam([net.taper.theta], lr=0.2)
    d = torch.arange(9, dtype=D)
    gc = gaspari_cohn(d / (GC_HALF_WIDTH_FACTOR * 2.0))
    start_err = (net.taper.values()[0, :9] - gc).abs().max().item()
    for _ in range(100):
        opt.zero_grad()
        out = net(E, E[..., idx], y, sig, idx.to(D))
        mean = out.mean(-2, keepdim=True)
        out = mean + (out - mean) / net.infl  # compare before the inflation
        loss = ((out - target) ** 2).mean()
        loss.backward()
        opt.step()
    err = (net.taper.values()[0, :9].detach() - gc).abs().max().item()
    assert start_err > 0.5
    assert err < 0.05, f"learned taper off Gaspari–Cohn by {err:.3f}"


def test_saved_and_loaded_filter_gives_the_same_analysis(tmp_path):
    torch.manual_seed(1)
    net = LearnedFilterNet(40, loc_rad=3.0, infl=1.04, field={"hidden": 4, "width": 2}, sites=3)
    with torch.no_grad():
        net.taper.theta.add_(0.3)
        net.field.head[-1].weight.add_(0.05)
    method = LearnedLETKF(net, p=10, info={"note": "test"})
    path = save_learned_analysis(method, tmp_path / "filter.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT and payload["kind"] == "learned_filter"
    loaded = LearnedLETKF.from_payload(payload, path=path)
    g = torch.Generator().manual_seed(2)
    obs = EveryKthObs(40, k=4).observe(torch.randn(40, generator=g, dtype=D), 1, g)
    for N in (5, 20):  # any ensemble size
        E = 2.0 + 3.0 * torch.randn(N, 40, generator=g, dtype=D)
        torch.testing.assert_close(loaded.analyse(E, obs), method.analyse(E, obs), rtol=0, atol=1e-13)
    assert loaded.diagnostics()["n_obs"] == 10.0


def test_bad_input_is_named():
    method = LearnedLETKF(LearnedFilterNet(40), p=10)
    g = torch.Generator().manual_seed(0)
    obs = EveryKthObs(40, k=4).observe(torch.randn(40, generator=g, dtype=D), 1, g)
    with pytest.raises(ValueError, match="n=40"):
        method.analyse(torch.randn(10, 20, dtype=D), obs)
    with pytest.raises(ValueError, match="float64"):
        method.analyse(torch.randn(10, 40), obs)
    bad = torch.randn(10, 40, dtype=D)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        method.analyse(bad, obs)
    with pytest.raises(ValueError, match="N >= 2"):
        method.analyse(torch.randn(1, 40, dtype=D), obs)
    with pytest.raises(ValueError, match="unknown parameters"):
        LearnedLETKF.from_payload(method.to_payload(), foo=1)
    with pytest.raises(ValueError, match="sites"):
        LearnedFilterNet(40, sites=0)


def test_loaded_by_the_method_name_learned_and_cycled(tmp_path, monkeypatch):
    """The saved filter through ``load_learned_analysis`` (kind ``learned_filter``) with a run-time N, cycled."""
    from hybrida.assimilation import learned
    from hybrida.cycle import run_cycle
    from hybrida.experiment.twin import make_twin

    monkeypatch.setitem(learned.KINDS, "learned_filter", "hybrida.assimilation.ensemble.learned_filter:LearnedLETKF")
    net = LearnedFilterNet(40, loc_rad=2.0, infl=1.05, sites=3, correction={"hidden": 4, "width": 1})
    path = save_learned_analysis(LearnedLETKF(net, p=10, N=20), tmp_path / "filter.pt")
    method = learned.load_learned_analysis(path, N=12)
    assert isinstance(method, LearnedLETKF) and method.N == 12
    model = Lorenz96(n=40)
    g = torch.Generator().manual_seed(0)
    x0 = model.forecast(8.0 + torch.randn(40, generator=g, dtype=D), 500)
    twin = make_twin(model, EveryKthObs(40, k=4, every=3), x0, 30, g)
    state = method.initial_state(twin.truth[0], 1.0, g)
    assert state.shape == (12, 40)
    records = [r for r, _ in run_cycle(model, method, state, twin.truth, twin.observations, twin.steps_per_cycle,
                                       generator=g, probabilistic_scores=False)]
    assert len(records) == 30 and all(math.isfinite(r.rmse_a) for r in records)
    letkf = LETKF(N=12, loc_rad=2.0, infl=1.05)  # untrained (zero correction): the same filter
    g = torch.Generator().manual_seed(1)
    ref = [r for r, _ in run_cycle(model, letkf, letkf.initial_state(twin.truth[0], 1.0, g), twin.truth,
                                   twin.observations, twin.steps_per_cycle, generator=g, probabilistic_scores=False)]
    g = torch.Generator().manual_seed(1)
    again = [r for r, _ in run_cycle(model, method, method.initial_state(twin.truth[0], 1.0, g), twin.truth,
                                     twin.observations, twin.steps_per_cycle, generator=g, probabilistic_scores=False)]
    for r, q in zip(again, ref, strict=True):
        assert r.rmse_a == pytest.approx(q.rmse_a, rel=1e-3)  # up to the taper floor 1e-7
    with pytest.raises(ValueError, match="N"):
        learned.load_learned_analysis(path, N=1)


def test_particle_channels_are_the_localised_particle_filter_mean_and_its_sample_size():
    """By hand at one grid point; an untrained correction with them is still the LETKF; saved and rebuilt."""
    from hybrida.assimilation.ensemble.learned_filter import MeanCorrection
    from hybrida.assimilation.learned.base import rebuild_network

    E, idx, y, sig = _case(6, seed=4)
    rho = dense_taper(40, idx.to(D), torch.tensor(2.0, dtype=D))
    inc, ess = MeanCorrection.particle_channels(E, E[..., idx], y, sig, rho)
    i = 5
    logw = torch.tensor([-0.5 * sum(float(rho[i, j]) * float((y[j] - E[m, idx[j]]) / sig[j]) ** 2
                                    for j in range(len(idx))) for m in range(6)], dtype=D)
    w = torch.softmax(logw, 0)
    assert inc[i].item() == pytest.approx(float((w * E[:, i]).sum() - E[:, i].mean()), abs=1e-12)
    assert ess[i].item() == pytest.approx(float(1.0 / (6 * (w * w).sum())), abs=1e-12)
    assert bool(((ess >= 1 / 6 - 1e-12) & (ess <= 1 + 1e-12)).all())
    _, ess_flat = MeanCorrection.particle_channels(E, E[..., idx], y, sig, torch.zeros_like(rho))
    torch.testing.assert_close(ess_flat, torch.ones(40, dtype=D))  # no observation in reach: equal weights
    net = LearnedFilterNet(40, loc_rad=2.0, infl=1.05, correction={"hidden": 4, "width": 1, "particles": True})
    plain = LearnedFilterNet(40, loc_rad=2.0, infl=1.05)
    torch.testing.assert_close(net(E, E[..., idx], y, sig, idx), plain(E, E[..., idx], y, sig, idx))
    with torch.no_grad():
        net.correction.body[-1].weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(0))
    spec = {"module": type(net).__module__, "class": type(net).__name__, "config": net.config,
            "state_dict": net.state_dict()}
    again = rebuild_network(spec)
    assert again.correction.particles
    torch.testing.assert_close(again(E, E[..., idx], y, sig, idx), net(E, E[..., idx], y, sig, idx))
    assert not torch.allclose(net(E, E[..., idx], y, sig, idx), plain(E, E[..., idx], y, sig, idx))
    with pytest.raises(ValueError, match="particle"):
        net.correction(E, E, torch.zeros(40, dtype=D), torch.zeros(40, dtype=D))
