"""Optimal interpolation (BLUE with static B), the climatology baseline, climatology validation."""

from __future__ import annotations

import pytest
import torch
from lingauss import blue_information_form

from hybrida.assimilation.variational import Climatology, OptimalInterpolation, ThreeDVar
from hybrida.observations import RadianceObs, SubsetObs
from hybrida.registry import METHODS, resolve


def _obs(n: int = 8, corr: float = 2.0):
    sys = SubsetObs(n, [1, 4, 5, 7], std=[0.5, 1.0, 0.8, 1.2], correlation_length=corr)
    g = torch.Generator().manual_seed(3)
    return sys.observe(torch.randn(n, generator=g, dtype=torch.float64), 1, g)


def test_oi_forecast_background_equals_blue(clim8):
    mean, C = clim8
    xb = mean - 0.5
    obs = _obs()
    xa = OptimalInterpolation((mean, C), xB=2.0, background="forecast").analyse(xb, obs)
    ref, _ = blue_information_form(xb, 2.0 * C, obs.matrix, obs.error.cov, obs.y)
    assert torch.allclose(xa, ref, atol=1e-10)
    # and 3D-Var reaches the same analysis iteratively
    assert torch.allclose(ThreeDVar((mean, C), xB=2.0).analyse(xb, obs), ref, atol=1e-8)


def test_oi_default_uses_climatological_mean(clim8):
    mean, C = clim8
    obs = _obs()
    method = OptimalInterpolation((mean, C))
    a1 = method.analyse(mean + 3.0, obs)
    a2 = method.analyse(mean - 7.0, obs)
    ref, _ = blue_information_form(mean, C, obs.matrix, obs.error.cov, obs.y)
    assert torch.allclose(a1, ref, atol=1e-10) and torch.equal(a1, a2)
    assert 0 < method.diagnostics()["trHK"] < 1


def test_oi_nonlinear_uses_jacobian_at_background(clim8):
    mean, C = clim8
    obs = RadianceObs(8, 4, 1.0, "square", scale=3.0, std=0.5).observe(
        mean + 1.0, 1, torch.Generator().manual_seed(0)
    )
    xb = mean + 0.2
    xa = OptimalInterpolation((mean, C), background="forecast").analyse(xb, obs)
    # H'(xb) = W diag(2 xb / scale) for g(x) = x^2 / scale
    H = RadianceObs(8, 4, 1.0, "square", scale=3.0).weights * (2 * xb / 3.0)
    K = C @ H.T @ torch.linalg.inv(H @ C @ H.T + obs.error.cov)
    assert torch.allclose(xa, xb + K @ (obs.y - obs.H(xb)), atol=1e-10)


def test_oi_masks_nan_and_handles_no_obs(clim8):
    mean, C = clim8
    obs = _obs(corr=0.0)
    obs.y[:] = float("nan")
    method = OptimalInterpolation((mean, C), background="forecast")
    assert torch.equal(method.analyse(mean + 1.0, obs), mean + 1.0)


def test_climatology_method(clim8):
    mean, C = clim8
    method = Climatology((mean, C))
    x0 = method.initial_state(torch.zeros(8, dtype=torch.float64), 1.0)
    assert torch.equal(x0, mean)
    assert method.forecast(None, x0, 10) is x0
    assert torch.equal(method.analyse(mean + 5.0, _obs()), mean)
    assert resolve(METHODS, "climatology", "method") is Climatology


@pytest.mark.parametrize("cls", [Climatology, OptimalInterpolation, ThreeDVar])
def test_climatology_validation(clim8, cls):
    mean, C = clim8
    bad = [
        (mean,),  # not a pair
        (mean[:-1], C),  # shape mismatch
        (mean.unsqueeze(0), C),  # mean not 1-D
        (mean, C + torch.triu(torch.ones(8, 8, dtype=torch.float64), 1)),  # not symmetric
        (mean, C - 2.0 * torch.eye(8, dtype=torch.float64)),  # not PSD (min eigenvalue 1)
        (mean, torch.where(C > 0, C, torch.nan)),  # NaN
    ]
    for clim in bad:
        with pytest.raises(ValueError, match="climatolog"):
            cls(clim)


@pytest.mark.parametrize("cls", [OptimalInterpolation, ThreeDVar])
@pytest.mark.parametrize("xB", [0.0, -0.1, float("inf")])
def test_xB_must_be_positive(clim8, cls, xB):
    with pytest.raises(ValueError, match="xB"):
        cls(clim8, xB=xB)


def test_oi_bad_background_name(clim8):
    with pytest.raises(ValueError, match="background"):
        OptimalInterpolation(clim8, background="truth")
