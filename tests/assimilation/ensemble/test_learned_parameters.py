"""The learned localisation/inflation fields: untrained = the plain LETKF; gradients reach the network."""

from __future__ import annotations

import torch

from hybrida.assimilation.ensemble.differentiable import TrainableLETKF
from hybrida.assimilation.ensemble.learned_parameters import EnsembleFieldNet
from hybrida.observations.networks import EveryKthObs

D = torch.float64


def _case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    E = 2.0 + 3.0 * torch.randn(10, 40, generator=g, dtype=D)
    obs = EveryKthObs(40, k=4).observe(torch.randn(40, generator=g, dtype=D), 1, g)
    return E, obs


def test_an_untrained_network_gives_the_plain_letkf():
    E, obs = _case()
    plain = TrainableLETKF(N=10, loc_rad=3.0, infl=1.05).analyse(E, obs)
    learned = TrainableLETKF(N=10, loc_rad=3.0, infl=1.05, field_net=EnsembleFieldNet()).analyse(E, obs)
    torch.testing.assert_close(learned, plain, rtol=0, atol=1e-13)


def test_scales_are_bounded_permutation_invariant_and_trainable():
    E, obs = _case(1)
    net = EnsembleFieldNet(max_scale=2.0)
    torch.nn.init.normal_(net.head[-1].weight, std=1.0)  # as if trained: non-trivial fields
    r, i = net(E)
    assert r.shape == i.shape == (40,)
    assert bool(((r > 0.5) & (r < 2.0) & (i > 0.5) & (i < 2.0)).all())
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(2))
    r2, i2 = net(E[perm])
    torch.testing.assert_close((r2, i2), (r, i), rtol=0, atol=1e-12)
    f = TrainableLETKF(N=10, loc_rad=3.0, infl=1.05, field_net=net, train_infl=False, train_radius=False)
    f.analyse(E, obs).pow(2).mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
