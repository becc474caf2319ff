"""Joint state-parameter estimation on the augmented state (F of Lorenz-96)."""

from __future__ import annotations

import pytest
import torch

from hybrida.assimilation.ensemble.augmented import AugmentedEnsemble, augment_observation
from hybrida.cycle import run_cycle
from hybrida.experiment.twin import make_twin, nature_run
from hybrida.models.augmented import AugmentedModel
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.networks import IdentityObs, SubsetObs


def test_each_member_runs_with_its_own_parameter():
    model = Lorenz96(n=12, F=8.0)
    aug = AugmentedModel(model, ["F"])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 12, generator=g, dtype=torch.float64) + 8
    F = torch.tensor([[7.0], [8.0], [9.5]], dtype=torch.float64)
    z = aug.forecast(torch.cat((x, F), -1), 5)
    for i in range(3):
        ref = Lorenz96(n=12, F=float(F[i, 0])).forecast(x[i], 5)
        torch.testing.assert_close(z[i, :12], ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(z[:, 12:], F)
    # step and trajectory agree with forecast; the model itself is untouched
    torch.testing.assert_close(aug.forecast(torch.cat((x, F), -1), 5, trajectory=True)[-1], z)
    assert model.F == 8.0


def test_augmented_observation_ignores_parameters():
    net = SubsetObs(n=6, indices=[0, 3], std=1.0).network(1)
    aug = augment_observation(net, 6, 2)
    z = torch.arange(8, dtype=torch.float64)
    torch.testing.assert_close(aug.H(z), net.H(z[:6]))
    torch.testing.assert_close(aug.matrix @ z, net.matrix @ z[:6])


def _estimate(truth_F: list[float], cycles_each: int, param_infl: float, seed: int = 1):
    """Cycle an augmented ETKF on a truth whose forcing takes the values ``truth_F`` in turn."""
    g = torch.Generator().manual_seed(seed)
    net = IdentityObs(n=40, every=1, std=1.0)
    x = Lorenz96(40, F=truth_F[0]).initial_state()
    truth, obs = [x], []
    for k, F in enumerate(truth_F):
        tw = make_twin(Lorenz96(40, F=F), net, truth[-1], cycles_each, g)
        truth.extend(tw.truth[1:])
        obs.extend(tw.observations)
        assert k > 0 or torch.equal(tw.truth[0], x)
    truth = torch.stack(truth)
    method = AugmentedEnsemble({"F": [6.5, 1.0]}, "etkf", {"N": 30, "infl": 1.02}, param_infl=param_infl)
    state = method.initial_state(truth[0], 0.1, g)
    model = Lorenz96(40, F=8.0)  # the value of F the filter starts from is not used: each member has its own
    estimates = []
    for record, _ in run_cycle(model, method, state, truth, obs, 1, generator=g):
        estimates.append(record.diagnostics["param_F"])
        assert record.posterior_mean.shape == (40,)
    return torch.tensor(estimates), record


def test_forcing_estimated_within_one_percent():
    est, record = _estimate([8.0], 300, param_infl=1.0)
    assert abs(float(est[-100:].mean()) - 8.0) < 0.08
    assert record.rmse_a < 0.4


def test_forcing_tracked_when_the_truth_changes():
    est, _ = _estimate([8.0, 9.0], 250, param_infl=1.02)
    assert abs(float(est[150:250].mean()) - 8.0) < 0.1
    assert abs(float(est[-80:].mean()) - 9.0) < 0.1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"estimate": {}}, "estimate"),
        ({"estimate": {"F": [8.0]}}, "prior mean, prior std"),
        ({"estimate": {"F": [8.0, 0.0]}}, "std > 0"),
        ({"estimate": {"F": [8.0, 1.0]}, "inner": "letkf"}, "inner"),
        ({"estimate": {"F": [8.0, 1.0]}, "param_infl": -1}, "param_infl"),
        ({"estimate": {"F": [8.0, 1.0]}, "param_noise": -0.1}, "param_noise"),
    ],
)
def test_bad_input(kwargs, match):
    kwargs.setdefault("inner_params", {"N": 10})
    with pytest.raises(ValueError, match=match):
        AugmentedEnsemble(**kwargs)


def test_param_noise_is_centred_additive_noise_on_the_parameters_only():
    estimate = {"F": [8.0, 0.5], "G": [1.0, 0.1]}
    x = Lorenz96(10).initial_state()
    prior = AugmentedEnsemble(estimate, inner_params={"N": 50}).initial_state(x, 1.0, torch.Generator().manual_seed(0))
    obs = IdentityObs(n=10, std=1.0).observe(x, 1, torch.Generator().manual_seed(1))
    plain, noisy = (
        AugmentedEnsemble(estimate, inner_params={"N": 50}, param_noise=q).analyse(
            prior, obs, 0.0, torch.Generator().manual_seed(2)
        )
        for q in (0.0, 0.3)
    )
    assert torch.equal(plain[:, :10], noisy[:, :10])  # states untouched
    d = noisy[:, 10:] - plain[:, 10:]
    assert torch.allclose(d.mean(0), torch.zeros(2, dtype=d.dtype), atol=1e-12)  # centred: means kept
    assert 0.2 < float(d.std()) < 0.4


def test_unknown_parameter_name():
    with pytest.raises(ValueError, match="no parameter G"):
        AugmentedModel(Lorenz96(8), ["G"])


def test_nature_run_unchanged_by_augmentation():
    model = Lorenz96(10)
    x = model.initial_state()
    z = torch.cat((x, torch.tensor([8.0], dtype=x.dtype)))
    traj = nature_run(AugmentedModel(model, ["F"]), z, 4, 2)
    torch.testing.assert_close(traj[:, :10], nature_run(model, x, 4, 2), rtol=0, atol=1e-13)
