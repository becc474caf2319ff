"""QG presets: they validate and build, and a scaled-down LETKF twin beats climatology."""

from __future__ import annotations

import copy

import torch

from hybrida.assimilation.variational.climatology import ClimatologySample
from hybrida.experiment.builder import build_method, build_model, build_observations
from hybrida.experiment.config import ExperimentConfig
from hybrida.experiment.presets import get_preset
from hybrida.experiment.runner import run_experiment
from hybrida.models.qg import QGModel
from hybrida.observations.grid2d import RandomGridObs

DAY = 86400.0
#: the registered preset (model "qg", observations "random_grid")
LETKF64 = get_preset("qg/letkf64")


def _small(method: dict, cycles: int = 60) -> dict:
    """LETKF64 scaled down for a test: 32×32 on a 500 km domain (same grid spacing), stronger shear."""
    cfg = copy.deepcopy(LETKF64)
    qg = {"nx": 32, "L": 5e5, "U1": 0.05, "dt": 14400.0, "spinup_time": 300 * DAY}
    cfg["model"]["params"] = qg
    cfg["truth_model"]["params"] = {**qg, "seed": 1}
    cfg["observations"] = {"name": "random_grid", "params": {"p": 256, "layer_std": [3e-6, 5e-7]}, "every": 6}
    cfg["method"] = method
    cfg["cycles"] = cycles
    cfg["burn_in"] = 30 * DAY
    cfg["initial"] = {"std": 3e-5, "truth_std": 0.0, "center": "reference"}
    return cfg


def test_letkf64_preset_validates_and_builds():
    config = ExperimentConfig(**LETKF64)
    model = build_model(config)
    assert isinstance(model, QGModel) and model.n == 8192 and model.dt == 7200.0
    obs = build_observations(config, model, torch.float64)
    assert isinstance(obs, RandomGridObs) and (obs.ny, obs.nx, obs.p) == (64, 64, 1024)
    net = obs.network(1, torch.Generator().manual_seed(0))
    assert net.locations.shape == (1024, 2) and net.meta["grid"] == (64, 64)


def test_letkf128_preset_keeps_the_64_twin_in_physical_units():
    """qg/letkf128: same observation density, localisation length (km) and day-long cycles as qg/letkf64."""
    c64, c128 = ExperimentConfig(**LETKF64), ExperimentConfig(**get_preset("qg/letkf128"))
    m64, m128 = build_model(c64), build_model(c128)
    assert m128.n == 4 * m64.n and m128.dt * c128.observations.every == m64.dt * c64.observations.every == DAY
    assert c128.observations.params["p"] / m128.n == c64.observations.params["p"] / m64.n
    assert c128.method.params["loc_rad"] * m128.dx == c64.method.params["loc_rad"] * m64.dx


def test_4dvar128_preset_is_4dvar64_at_twice_the_resolution():
    """qg/4dvar128: qg/letkf128's twin (observations, day-long windows) with qg/4dvar64's method and B."""
    c64, c128 = ExperimentConfig(**get_preset("qg/4dvar64")), ExperimentConfig(**get_preset("qg/4dvar128"))
    l128 = ExperimentConfig(**get_preset("qg/letkf128"))
    m128 = build_model(c128)
    assert m128.n == 2 * 128 * 128 and c128.method.params["grid"] == [2, 128, 128]
    assert c128.observations == l128.observations and c128.model == l128.model
    assert m128.dt * c128.observations.every == DAY
    same = ("B", "xB", "linearization", "max_outer", "max_inner")
    assert {k: c128.method.params[k] for k in same} == {k: c64.method.params[k] for k in same}
    clim64, clim128 = c64.climatology, c128.climatology
    assert clim128.steps * m128.dt == clim64.steps * build_model(c64).dt  # 500 days both
    assert clim128.thin * m128.dt == clim64.thin * build_model(c64).dt == DAY


def test_small_letkf_twin_beats_climatology():
    """Scaled-down qg/letkf64: rmse_a well below the truth's climatological std (independent truth)."""
    res = run_experiment(ExperimentConfig(**_small({"name": "letkf", "params": {"N": 10, "infl": 1.1,
                                                                                  "loc_rad": 1.0}})),
                         progress=False)
    s = res.summary
    assert not s["diverged"], s["diverged_reason"]
    assert s["rmse_a"] < 0.5 * s["clim_std"], (s["rmse_a"], s["clim_std"])


def test_small_twin_without_observations_does_not():
    """The same twin with no observation weight (a free ensemble, no inflation) stays at climatology."""
    cfg = _small({"name": "letkf", "params": {"N": 10, "infl": 1.0, "loc_rad": 1.0}})
    cfg["observations"]["params"]["layer_std"] = [1.0, 1.0]  # errors 10^5 times the signal
    s = run_experiment(ExperimentConfig(**cfg), progress=False).summary
    assert s["rmse_a"] > 0.8 * s["clim_std"], (s["rmse_a"], s["clim_std"])


def _small_4dvar(cycles: int = 24) -> dict:
    cfg = _small({"name": "4dvar", "params": {"B": "homogeneous", "grid": [2, 32, 32], "xB": 1.0,
                                              "linearization": "matrix_free", "max_outer": 1, "max_inner": 15}},
                 cycles)
    cfg["burn_in"] = 12 * DAY
    cfg["climatology"] = {"steps": 1800, "spinup": 0, "thin": 6}
    return cfg


def test_homogeneous_b_keeps_the_climatology_as_anomalies():
    """For B homogeneous the builder keeps the free run's anomalies (T, n): no dense (n, n) covariance."""
    cfg = _small_4dvar()
    cfg["climatology"] = {"steps": 60, "spinup": 0, "thin": 6}
    config = ExperimentConfig(**cfg)
    model = build_model(config)
    x0 = model.random_state(torch.Generator().manual_seed(0))
    method, clim = build_method(config, model, x0)
    assert isinstance(clim, ClimatologySample) and clim.anomalies.shape == (10, 2048)
    assert method.B_sqrt.grid == (2, 32, 32)
    cfg["method"]["params"]["B"] = "climatology"  # the dense B still gets the dense covariance
    _, dense = build_method(ExperimentConfig(**cfg), model, x0)
    assert not isinstance(dense, ClimatologySample) and dense[1].shape == (2048, 2048)
    torch.testing.assert_close(dense[1].diagonal(), clim.variance(), rtol=1e-10, atol=0)


def test_small_4dvar_twin_with_homogeneous_b_beats_climatology():
    """4D-Var on the 2-D QG model, B homogeneous by FFT (no 2048² square root), adjoint by autodiff."""
    config = ExperimentConfig(**_small_4dvar())
    s = run_experiment(config, progress=False).summary
    assert not s["diverged"], s["diverged_reason"]
    assert s["rmse_a"] < 0.5 * s["clim_std"], (s["rmse_a"], s["clim_std"])
