"""Ensemble bias correction by state augmentation with the bias coefficients."""

from __future__ import annotations

import torch

from hybrida.assimilation.ensemble.bias_aug import BiasAugmentedEnsemble, bias_augmented_observation
from hybrida.cycle import run_cycle
from hybrida.experiment.twin import make_twin
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.bias import BiasedObs, BiasPredictors, ChannelBias, scan_covariate
from hybrida.observations.networks import IdentityObs, SubsetObs


def test_augmented_operator_adds_each_members_bias():
    pred = BiasPredictors([-1, 0, 1, 0], scan_covariate(4, 2), offset=1.0, scale=2.0)
    obs = SubsetObs(4, [1, 2, 0]).network(1)
    obs.y = torch.zeros(3, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(5, 4 + pred.n_coefficients, generator=g, dtype=torch.float64)
    Hz = bias_augmented_observation(obs, pred, 4).H(Z)
    for i in range(5):
        hx = obs.H(Z[i, :4])
        torch.testing.assert_close(Hz[i], hx + pred.design(obs, hx) @ Z[i, 4:])


def test_augmented_etkf_recovers_a_constant_bias():
    n = 40
    model = Lorenz96(n)
    g = torch.Generator().manual_seed(0)
    x0 = model.forecast(model.initial_state() + torch.randn(n, generator=g, dtype=torch.float64), 300)
    loc = torch.arange(n)
    pred = BiasPredictors(torch.where(loc % 2 == 0, -1, (loc // 2) % 3), names=("constant",))
    truth = torch.tensor([1.0, -0.8, 0.6], dtype=torch.float64)
    twin = make_twin(model, BiasedObs(IdentityObs(n, std=1.0), ChannelBias(pred, truth, [0.0] * 3)), x0, 200, g)
    method = BiasAugmentedEnsemble(pred, beta_std=1.0, inner="etkf", inner_params={"N": 30, "infl": 1.03})
    state = method.initial_state(x0, 1.0, g)
    assert state.shape == (30, n + 3)
    est, rmse = [], []
    for rec, _ in run_cycle(model, method, state, twin.truth, twin.observations, 1, generator=g, innovations=False):
        est.append(torch.tensor([rec.diagnostics[f"param_beta_{i}"] for i in range(3)]))
        rmse.append(rec.rmse_a)
        assert rec.posterior_mean.shape == (n,)
    mean = torch.stack(est[-80:]).mean(0).double()
    assert float((mean - truth).abs().max()) < 0.1, mean
    assert sum(rmse[-80:]) / 80 < 0.3
