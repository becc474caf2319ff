"""Wiring of the forecast–analysis loop, with tiny inline model and method."""

from __future__ import annotations

import pytest
import torch

from hybrida.assimilation.base import AssimilationMethod
from hybrida.cycle import FilterDiverged, run_cycle
from hybrida.experiment.twin import make_twin
from hybrida.models.base import Model
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError
from hybrida.observations.system import ObservationSystem


class Rotation(Model):
    """x_{k+1} = A x_k with a fixed 2-D rotation (energy preserving)."""

    dt = 0.1
    n = 2

    def step(self, x, t=0.0):
        c, s = 0.9950041652780258, 0.09983341664682815
        return torch.stack([c * x[..., 0] - s * x[..., 1], s * x[..., 0] + c * x[..., 1]], -1)


class ObserveAll(ObservationSystem):
    every = 3

    def network(self, cycle, generator=None):
        var = torch.full((2,), 0.25, dtype=torch.float64)
        return Observation(
            y=torch.full((2,), float("nan"), dtype=torch.float64),
            operator=lambda x: x,
            error=DiagonalError(var),
            locations=torch.arange(2.0, dtype=torch.float64),
            matrix=torch.eye(2, dtype=torch.float64),
        )


class Blend(AssimilationMethod):
    """Deterministic analysis xa = (xb + y) / 2 (enough to test the loop)."""

    kind = "deterministic"

    def analyse(self, prior, obs, t=0.0, generator=None):
        obs = obs.valid()
        return 0.5 * (prior + obs.y)


class Explode(Blend):
    def analyse(self, prior, obs, t=0.0, generator=None):
        return prior * float("nan") if t > 1.0 else super().analyse(prior, obs, t)


def _twin(n_cycles=12):
    g = torch.Generator().manual_seed(5)
    return make_twin(Rotation(), ObserveAll(), torch.tensor([1.0, 0.0], dtype=torch.float64), n_cycles, g)


def test_truth_and_observations_layout():
    twin = _twin()
    assert twin.truth.shape == (13, 2) and len(twin.observations) == 12
    expected = Rotation().forecast(twin.truth[0], 3 * 4)
    assert torch.allclose(twin.truth[4], expected)
    # observations scatter around the truth at their own time with the stated variance
    d = torch.stack([o.y - twin.truth[k + 1] for k, o in enumerate(twin.observations)])
    assert 0.1 < float(d.var()) < 0.6


def test_records_follow_the_loop():
    twin = _twin()
    method = Blend()
    state = twin.truth[0] + 1.0
    records = [r for r, _ in run_cycle(Rotation(), method, state, twin.truth, twin.observations, 3)]
    assert [r.cycle for r in records] == list(range(1, 13))
    assert records[0].time == pytest.approx(0.3)
    xf = Rotation().forecast(state, 3)
    xa = 0.5 * (xf + twin.observations[0].y)
    assert torch.allclose(records[0].prior_mean, xf)
    assert torch.allclose(records[0].posterior_mean, xa)
    assert records[0].rmse_a == pytest.approx(float(((xa - twin.truth[1]) ** 2).mean().sqrt()))
    assert records[0].n_obs == 2 and records[0].spread_a == 0.0


def test_resume_from_middle_is_identical():
    twin = _twin()
    method = Blend()
    state0 = twin.truth[0] + 1.0
    full = list(run_cycle(Rotation(), method, state0, twin.truth, twin.observations, 3))
    mid_state = full[5][1]
    rest = list(run_cycle(Rotation(), method, mid_state, twin.truth, twin.observations, 3, start_cycle=7))
    assert [r.rmse_a for r, _ in rest] == [r.rmse_a for r, _ in full[6:]]


def test_divergence_is_raised_with_cycle():
    twin = _twin()
    with pytest.raises(FilterDiverged) as info:
        list(run_cycle(Rotation(), Explode(), twin.truth[0], twin.truth, twin.observations, 3))
    assert info.value.cycle == 4


class Blowup(Rotation):
    """Overflows to inf after t = 1 (e.g. an unstable surrogate forecast)."""

    def step(self, x, t=0.0):
        return super().step(x) * (float("inf") if t > 1.0 else 1.0)


def test_non_finite_forecast_is_divergence_not_a_crash_of_the_analysis():
    """An ensemble forecast that overflows must stop as FilterDiverged before the analysis (whose
    eigendecomposition of an inf matrix would raise a LinAlgError instead)."""
    from hybrida.assimilation.ensemble.etkf import ETKF

    twin = _twin()
    method = ETKF(N=4)
    E0 = method.initial_state(twin.truth[0], 0.5, torch.Generator().manual_seed(0))
    with pytest.raises(FilterDiverged) as info:
        list(run_cycle(Blowup(), method, E0, twin.truth, twin.observations, 3))
    assert info.value.cycle == 4 and "forecast" in str(info.value)


def test_probabilistic_scores_can_be_skipped():
    twin = _twin()
    full = [r for r, _ in run_cycle(Rotation(), Blend(), twin.truth[0], twin.truth, twin.observations, 3)]
    lean = [
        r
        for r, _ in run_cycle(
            Rotation(), Blend(), twin.truth[0], twin.truth, twin.observations, 3, probabilistic_scores=False
        )
    ]
    assert [r.rmse_a for r in lean] == [r.rmse_a for r in full]
    assert all(r.crps_a != r.crps_a and r.rank_a is None for r in lean)
    assert all(r.crps_a == r.crps_a for r in full)
