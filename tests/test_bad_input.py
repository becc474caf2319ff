"""Bad input at the boundary: clear one-line errors, or graceful handling, never a deep traceback."""

from __future__ import annotations

import math

import pytest
import torch

from hybrida import registry
from hybrida.cycle import run_cycle
from hybrida.experiment.builder import build
from hybrida.experiment.config import ConfigError, load_config
from hybrida.experiment.twin import climatology
from hybrida.models import Lorenz96
from hybrida.observations import IdentityObs

METHOD_PARAMS = {
    "enkf": {"N": 10},
    "etkf": {"N": 10},
    "enkf_n": {"N": 10},
    "denkf": {"N": 10},
    "letkf": {"N": 10, "loc_rad": 4.0},
    "3dvar": {"xB": 0.1},
    "oi": {},
    "ekf": {"infl": 1.0},
    "climatology": {},
    "augmented": {"estimate": {"F": [8.0, 0.5]}, "inner_params": {"N": 10}},
    "ienks": {"N": 10, "lag": 2},
    "4dvar": {"xB": 0.1, "lag": 2},
    "envar": {"N": 10, "xB": 0.1, "beta": 0.5, "loc_rad": 3.0},
    "envar4d": {"N": 10, "xB": 0.1, "beta": 0.5, "loc_rad": 3.0, "lag": 2},
    "pf": {"N": 50, "reg": 1.0, "NER": 0.5},
    "lpf": {"N": 20, "loc_rad": 1.0},
    "online_correction": {"inner_params": {"N": 10}, "in_mean": 2.3, "in_std": 3.6, "theta_std": 0.01},
}


#: registered methods that need a trained file: their missing-data handling is tested with them
#: (tests/assimilation/learned: NaN observations enter the learned analyses through the mask)
LOADED_FROM_FILE = {"learned"}


def test_every_registered_method_is_covered():
    assert set(METHOD_PARAMS) | LOADED_FROM_FILE == set(registry.METHODS)


@pytest.mark.parametrize("name", sorted(METHOD_PARAMS))
def test_nan_only_observations_leave_the_forecast(name):
    """Cycles whose observations are all missing must run and keep the background as analysis.

    The background is the forecast, except for OI (DAPPER convention) and the
    climatology baseline, whose background is the climatological mean.
    """
    model = Lorenz96(n=12, F=8.0, dt=0.05)
    obs_system = IdentityObs(n=12, std=1.0)
    g = torch.Generator().manual_seed(0)
    x0 = model.forecast(torch.full((12,), 8.0, dtype=torch.float64) + 0.1 * torch.arange(12.0), 200)
    truth = model.forecast(x0, 3, trajectory=True)
    observations = []
    for k in range(1, 4):
        obs = obs_system.observe(truth[k], k, g)
        obs.y = torch.full_like(obs.y, math.nan)
        observations.append(obs)
    cls = registry.resolve(registry.METHODS, name, "method")
    kwargs = dict(METHOD_PARAMS[name])
    clim = climatology(model, x0, 500)
    if getattr(cls, "needs_climatology", False):
        kwargs["climatology"] = clim
    method = cls(**kwargs)
    state = method.initial_state(x0, 0.5, generator=g)
    records = [r for r, _ in run_cycle(model, method, state, truth, observations, 1, generator=g)]
    assert [r.n_obs for r in records] == [0, 0, 0]
    for r in records:
        assert torch.isfinite(r.posterior_mean).all()
        background = clim[0] if name in ("oi", "climatology") else r.prior_mean
        assert torch.allclose(r.posterior_mean, background)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["method.name=kalman9000"], "method.name"),
        (["model.name=lorenz99"], "model.name"),
        (["observations.params.std=-1"], "std"),
        (["observations.name=subset", "observations.params.indices=[0, 41]"], "indices"),
        (["method.params.N=1"], "N"),
        (["cycles=0"], "cycles"),
    ],
)
def test_config_errors_name_what_to_fix(overrides, fragment):
    with pytest.raises((ConfigError, ValueError)) as info:
        build(load_config("lorenz96/sakov2008", overrides))
    message = str(info.value)
    assert fragment in message and "\n" not in message.strip()
