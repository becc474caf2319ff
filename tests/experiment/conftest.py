"""Stand-in assimilation methods for the experiment tests (registered per test via monkeypatch)."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch

from hybrida import registry
from hybrida.assimilation.base import AssimilationMethod


class StandInEnKF(AssimilationMethod):
    """Perturbed-observation EnKF with a history-dependent inflation (tests method-state checkpoints)."""

    kind = "ensemble"

    def __init__(self, N: int = 8, infl: float = 1.0, adaptive: bool = True):
        self.N, self.infl, self.adaptive = N, infl, adaptive
        self.history = 0.0

    def analyse(self, prior, obs, t=0.0, generator=None):
        obs = obs.valid()
        N = prior.shape[0]
        xm = prior.mean(0)
        factor = self.infl * (1.0 + 0.02 * math.tanh(self.history) if self.adaptive else 1.0)
        A = (prior - xm) * factor
        H = obs.matrix.to(prior)
        R = obs.error.cov.to(prior)
        HA = A @ H.T
        Pyy = HA.T @ HA / (N - 1) + R
        Pxy = A.T @ HA / (N - 1)
        K = torch.linalg.solve(Pyy, Pxy.T).T
        Y = obs.y + obs.error.sample((N,), generator).to(prior)
        Xf = xm + A
        self.history += float(((obs.y - H @ xm) ** 2).mean()) * 1e-3
        return Xf + (Y - Xf @ H.T) @ K.T

    def diagnostics(self):
        return {"history": self.history}


class Exploding(StandInEnKF):
    """Works for ``at - 1`` cycles, then returns NaN."""

    def __init__(self, N: int = 6, at: int = 5):
        super().__init__(N=N)
        self.at, self.count = at, 0

    def analyse(self, prior, obs, t=0.0, generator=None):
        self.count += 1
        post = super().analyse(prior, obs, t, generator)
        return post * float("nan") if self.count >= self.at else post


class Biased(AssimilationMethod):
    """A deterministic 'analysis' 10 units off the truth: finite but worse than climatology."""

    kind = "deterministic"

    def __init__(self, offset: float = 10.0):
        self.offset = offset

    def analyse(self, prior, obs, t=0.0, generator=None):
        return torch.full_like(prior, self.offset)


@pytest.fixture
def standins(monkeypatch):
    """Register the stand-ins under 'standin', 'explode', 'biased' (via a uniquely named module)."""
    module = types.ModuleType("hybrida_test_standins")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for name, cls in (("standin", StandInEnKF), ("explode", Exploding), ("biased", Biased)):
        setattr(module, cls.__name__, cls)
        monkeypatch.setitem(registry.METHODS, name, f"{module.__name__}:{cls.__name__}")
    return registry.METHODS


def tiny(**changes) -> dict:
    """A small Lorenz-96 experiment dict (n=12, 30 cycles) with the stand-in EnKF."""
    data = {
        "name": "tiny",
        "seed": 7,
        "model": {"name": "lorenz96", "params": {"n": 12, "F": 8.0, "dt": 0.05}},
        "observations": {"name": "identity", "params": {"std": 1.0}, "every": 1},
        "method": {"name": "standin", "params": {"N": 8, "infl": 1.05}},
        "cycles": 30,
        "burn_in": 0.5,
        "initial": {"std": 1.0},
    }
    data.update(changes)
    return data


@pytest.fixture
def tiny_config(standins):
    """Factory of tiny experiment dicts (the stand-in methods are registered)."""
    return tiny


@pytest.fixture
def summary_keys() -> frozenset[str]:
    """The keys every run summary (``result.summary`` and summary.json) must have."""
    return frozenset(
        {
            "rmse_a",
            "rmse_f",
            "spread_a",
            "spread_f",
            "spread_skill",
            "crps_a",
            "wall_s",
            "diverged",
            "diverged_cycle",
            "n_cycles",
            "seed",
            "method",
            "preset",
        }
    )
