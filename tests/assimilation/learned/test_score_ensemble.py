"""Generated-ensemble ETKF: an AssimilationMethod cycled by run_cycle; its checks."""

from __future__ import annotations

import pytest
import torch

from hybrida.assimilation.learned.score import NetworkPrior
from hybrida.assimilation.learned.score_ensemble import GeneratedEnsembleETKF
from hybrida.cycle import run_cycle
from hybrida.experiment.twin import make_twin
from hybrida.models.lorenz96 import Lorenz96
from hybrida.nn.score import ScoreNet
from hybrida.observations.networks import RandomSubsetObs


def _prior() -> NetworkPrior:
    torch.manual_seed(0)
    return NetworkPrior(ScoreNet(4, 1, embed=8), 4, 40, 2.35, 3.6, spacing=1)


def test_cycles_through_run_cycle_with_generated_members() -> None:
    """Each forecast is N generated members recentred on the deterministic forecast; the cycle stays finite."""
    model = Lorenz96(40, 8.0, 0.05)
    gen = torch.Generator().manual_seed(1)
    x0 = model.forecast(8.0 + torch.randn(40, generator=gen, dtype=torch.float64), 300)
    twin = make_twin(model, RandomSubsetObs(40, 0.5, std=1.0, every=1), x0, 4, gen)
    method = GeneratedEnsembleETKF(_prior(), 10, 1.0, steps=4, seed=2)
    state = method.initial_state(twin.truth[0], 1.0, gen)
    prior = method.forecast(model, state, 1)
    assert prior.shape == (10, 40)
    assert torch.allclose(prior.mean(0), model.forecast(state.mean(0), 1))
    method.reset()
    out = list(run_cycle(model, method, state, twin.truth, twin.observations, 1, generator=gen))
    records = [rec for rec, _ in out]
    assert len(records) == 4 and all(r.spread_f > 0 for r in records)
    assert method.history.shape == (10, 3, 40)  # every member's last L-1 analysed states
    assert torch.equal(method.history[:, -1], out[-1][1])


def test_same_seed_same_members() -> None:
    model = Lorenz96(40, 8.0, 0.05)
    E = 8.0 + torch.randn(10, 40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = GeneratedEnsembleETKF(_prior(), 10, steps=3, seed=5).forecast(model, E, 1)
    b = GeneratedEnsembleETKF(_prior(), 10, steps=3, seed=5).forecast(model, E, 1)
    assert torch.equal(a, b)


def test_saved_and_rebuilt_with_run_time_settings(tmp_path) -> None:
    from hybrida.assimilation.learned import save_learned_analysis

    method = GeneratedEnsembleETKF(_prior(), 10, 1.05, steps=3, seed=4)
    path = save_learned_analysis(method, tmp_path / "score.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["kind"] == "score" and payload["n"] == 40
    back = GeneratedEnsembleETKF.from_payload(payload, path, N=12, steps=5)
    assert (back.N, back.infl, back.steps, back.seed) == (12, 1.05, 5, 4)
    z, t = torch.randn(2, 4, 40), torch.rand(2)
    assert torch.allclose(back.prior.eps(z, t), method.prior.eps(z, t))
    with pytest.raises(ValueError, match="unknown parameters"):
        GeneratedEnsembleETKF.from_payload(payload, path, radius=3)
    with pytest.raises(ValueError, match="n=40 states in float64"):
        back.check_inputs(torch.zeros(12, 20, dtype=torch.float64), None)  # type: ignore[arg-type]


def test_bad_input_is_a_clear_value_error() -> None:
    model = Lorenz96(40, 8.0, 0.05)
    method = GeneratedEnsembleETKF(_prior(), 10, steps=3)
    E = torch.zeros(10, 40, dtype=torch.float64)
    with pytest.raises(ValueError, match="cycle every 1 steps, not 2"):
        method.forecast(model, E, 2)
    with pytest.raises(ValueError, match="N=10"):
        method.forecast(model, E[:5], 1)
    with pytest.raises(ValueError, match=r"\(N, n=40\)"):
        method.forecast(Lorenz96(20, 8.0, 0.05), torch.zeros(10, 20, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="NaN"):
        method.forecast(model, torch.full((10, 40), float("nan"), dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="N must be"):
        GeneratedEnsembleETKF(_prior(), 1)
    with pytest.raises(ValueError, match="history_std"):
        GeneratedEnsembleETKF(_prior(), 10, history_std=0.0)
