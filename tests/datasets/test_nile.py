"""The Nile as an oracle for the no-truth path: hybrida's Kalman filter against statsmodels and Durbin & Koopman.

Local-level model on the annual Nile flow 1871–1970; σ²_ε (R) and σ²_η (Q)
by maximum innovation likelihood through hybrida's EKF. Reference values:

* statsmodels 0.15 ``UnobservedComponents(nile, 'local level').fit()``
  (approximate diffuse start κ = 10⁶, first innovation left out): σ²_ε = 15078.01,
  σ²_η = 1478.81, llf = −632.5378 with its default L-BFGS tolerances;
  run to convergence it reaches σ²_ε = 15108.3, σ²_η = 1463.55 (llf higher by 7.5e-5);
* Durbin & Koopman (2012), ch. 2, sec. 2.10 (exact diffuse start): σ²_ε = 15099,
  σ²_η = 1469.1.
"""

from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np
import pytest
import xarray as xr

from hybrida.datasets.nile import load_nile, nile_observations, write_nile_observations
from hybrida.io.obsfile import load_observations
from hybrida.learn.variance_mle import (
    fit_local_level,
    local_level_loglik,
    moment_variances,
)

try:
    import statsmodels.api as sm
except ImportError:  # pragma: no cover - the data extra is absent
    sm = None
needs_statsmodels = pytest.mark.skipif(sm is None, reason="the Nile data ship with statsmodels (pip install hybrida[data])")

#: statsmodels' UnobservedComponents(nile, 'local level').fit() with its defaults (issue 18: "≈ 15078 and ≈ 1479")
SM_DEFAULT = (15078.00998643, 1478.81201907)
SM_DEFAULT_LLF = -632.5377605785011
#: Durbin & Koopman (2012), ch. 2, sec. 2.10, exact diffuse initialisation
DURBIN_KOOPMAN = (15099.0, 1469.1)


@pytest.fixture(scope="module")
def nile():
    return nile_observations()


@pytest.fixture(scope="module")
def statsmodels_model():
    _, volume = load_nile()
    return sm.tsa.UnobservedComponents(volume, "local level")


@pytest.fixture(scope="module")
def exact_diffuse_fit(nile):
    """MLE with κ = 10¹⁰: the exact diffuse likelihood to O(σ²/κ) (Durbin & Koopman's treatment)."""
    return fit_local_level(nile, diffuse_variance=1e10, xatol=1e-4)


@pytest.fixture(scope="module")
def statsmodels_converged(statsmodels_model):
    """statsmodels' own fit run to convergence (Nelder–Mead, tight tolerances; 0.1 s)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return statsmodels_model.fit(method="nm", maxiter=4000, xtol=1e-10, ftol=1e-12, disp=False)


@needs_statsmodels
def test_filter_loglik_equals_statsmodels_llf(nile, statsmodels_model):
    """Same model, same start, same data: hybrida's innovation log-likelihood is statsmodels' to round-off."""
    assert local_level_loglik(nile, *SM_DEFAULT) == pytest.approx(SM_DEFAULT_LLF, rel=1e-12, abs=0)
    for params in ([30000.0, 500.0], [5000.0, 8000.0]):  # away from the optimum too
        assert local_level_loglik(nile, *params) == pytest.approx(statsmodels_model.loglike(params), rel=1e-10)


@needs_statsmodels
def test_mle_meets_the_issue_bar_and_durbin_koopman(exact_diffuse_fit):
    """Exact diffuse start: within 1 % of 15078 / 1479 (issue 18) and within 0.1 % of D&K's 15099 / 1469.1."""
    fit = exact_diffuse_fit
    assert fit.converged
    for got, ref, rtol in [
        (fit.obs_variance, SM_DEFAULT[0], 0.01), (fit.level_variance, SM_DEFAULT[1], 0.01),
        (fit.obs_variance, DURBIN_KOOPMAN[0], 1e-3), (fit.level_variance, DURBIN_KOOPMAN[1], 1e-3),
    ]:
        assert got == pytest.approx(ref, rel=rtol)


@needs_statsmodels
def test_statsmodels_optimum_is_the_maximum_of_hybridas_likelihood(nile, statsmodels_converged):
    """κ = 10⁶ as statsmodels: hybrida's likelihood peaks where statsmodels run to convergence does
    (σ²_ε = 15108.3, σ²_η = 1463.55); its default fit (σ²_η = 1478.8) stops 1.0 % short of it."""
    eps, eta = statsmodels_converged.params
    best = local_level_loglik(nile, eps, eta)
    assert best == pytest.approx(statsmodels_converged.llf, rel=1e-12)
    assert best > SM_DEFAULT_LLF
    for params in [(eps * 1.002, eta), (eps / 1.002, eta), (eps, eta * 1.002), (eps, eta / 1.002)]:
        assert local_level_loglik(nile, *params) < best
    assert eps == pytest.approx(SM_DEFAULT[0], rel=0.01) and eta == pytest.approx(SM_DEFAULT[1], rel=0.011)


@needs_statsmodels
def test_wrong_variances_give_a_lower_likelihood(nile, statsmodels_converged):
    """The optimum is a maximum: halving or doubling either variance costs likelihood."""
    eps, eta = statsmodels_converged.params
    best = local_level_loglik(nile, eps, eta)
    for params in [(eps, 2 * eta), (eps, eta / 2), (2 * eps, eta), (eps / 2, eta)]:
        assert local_level_loglik(nile, *params) < best - 0.1
    # the moment estimates (a start only) are far off, and the fit improves on them
    start = moment_variances([float(o.y) for o in nile])
    assert local_level_loglik(nile, *start) < best - 1.0


@needs_statsmodels
def test_nile_file_round_trip_and_attributes(tmp_path, nile):
    path = write_nile_observations(tmp_path / "nile.nc", obs_error_std=50.0)
    loaded = load_observations(path, n_state=1)
    years, volume = load_nile()
    assert len(loaded) == 100 and years[0] == 1871 and years[-1] == 1970
    np.testing.assert_array_equal(np.array([float(o.y) for o in loaded]), volume)
    assert [o.meta["time"] for o in loaded] == [float(k) for k in range(1, 101)]  # years since 1870
    assert all(float(o.error.variance) == 2500.0 for o in loaded)
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert int(ds.attrs["n_state"]) == 1 and "public domain" in ds.attrs["license"]
        assert ds["time"].attrs["units"] == "model time units" and "1870" in ds.attrs["time_origin"]
    # the loaded file gives the in-memory series' likelihood
    assert local_level_loglik(loaded, *SM_DEFAULT) == local_level_loglik(nile, *SM_DEFAULT)


@needs_statsmodels
def test_assimilate_path_gives_the_same_likelihood(tmp_path):
    """hybrida assimilate (config + file, no truth) reports statsmodels' llf in its summary."""
    from hybrida.experiment.assimilate import assimilate_file
    from hybrida.experiment.config import validate_config

    eps, eta = SM_DEFAULT
    path = write_nile_observations(tmp_path / "nile.nc", obs_error_std=math.sqrt(eps))
    config = validate_config({
        "model": {"name": "local_level"},
        "method": {"name": "ekf", "params": {"Q": eta}},
        "observations": {"name": "identity"},
        # P_0 + Q = 10⁶ at the first observation, as statsmodels; burn_in 1 leaves that innovation out
        "initial": {"std": math.sqrt(1e6 - eta), "truth_std": 0.0, "center": "reference"},
        "burn_in": 1.0,
        "cycles": 100,
    })
    result = assimilate_file(config, path, None, progress=False)
    assert result.summary["n_innovations"] == 99
    assert result.summary["innovation_loglik"] == pytest.approx(SM_DEFAULT_LLF, rel=1e-12, abs=0)


def test_missing_statsmodels_is_a_one_line_error(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "statsmodels" else real(name, *a))
    with pytest.raises(ImportError, match=r"install hybrida\[data\]") as err:
        write_nile_observations(tmp_path / "nile.nc")
    assert "\n" not in str(err.value) and not (tmp_path / "nile.nc").exists()
