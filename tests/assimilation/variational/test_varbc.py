"""VarBC: bias coefficients in the 3D-Var control vector."""

from __future__ import annotations

import pytest
import torch
from lingauss import blue_information_form, random_spd

from hybrida.assimilation.variational.varbc import VarBC3D
from hybrida.cycle import run_cycle
from hybrida.experiment.twin import climatology, make_twin
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.bias import BiasedObs, BiasPredictors, ChannelBias, scan_covariate
from hybrida.observations.networks import IdentityObs, SubsetObs


def test_varbc_analysis_is_the_blue_of_the_augmented_problem():
    """Linear H: [x_a, beta_a] = BLUE with B_z = diag(B, B_beta) and H_z = [H, P(x_b)] (Dee 2004)."""
    n = 8
    g = torch.Generator().manual_seed(3)
    cov = random_spd(n, seed=5)
    pred = BiasPredictors([-1, 0, 1, 0, -1, 1, 0, 1], scan_covariate(n, 4), offset=0.5, scale=2.0)
    m = pred.n_coefficients
    beta_std = torch.linspace(0.2, 0.7, m, dtype=torch.float64)
    method = VarBC3D((torch.zeros(n, dtype=torch.float64), cov), pred, xB=0.8, beta_std=beta_std)
    obs = SubsetObs(n, [0, 2, 3, 5, 7, 6], std=[0.5, 1.0, 0.7, 1.2, 0.9, 0.6]).network(1)
    xb = torch.randn(n, generator=g, dtype=torch.float64)
    beta_b = torch.randn(m, generator=g, dtype=torch.float64)
    obs.y = torch.randn(obs.p, generator=g, dtype=torch.float64) * 2
    za = method.analyse(torch.cat((xb, beta_b)), obs)

    Hz = torch.cat((obs.matrix, pred.design(obs, obs.matrix @ xb)), -1)
    Bz = torch.block_diag(0.8 * cov, torch.diag(beta_std**2))
    ref, _ = blue_information_form(torch.cat((xb, beta_b)), Bz, Hz, obs.error.cov, obs.y)
    torch.testing.assert_close(za, ref, rtol=0, atol=1e-9)
    # the coefficients moved: the exactness is not the trivial beta_a = beta_b
    assert float((za[n:] - beta_b).abs().max()) > 1e-2
    assert float(za[n:][[0, 1, 2]].sub(beta_b[[0, 1, 2]]).abs().max()) > 0  # channel 0 coefficients


def test_forecast_persists_the_coefficients():
    n = 8
    pred = BiasPredictors([0] * n)
    method = VarBC3D((torch.zeros(n, dtype=torch.float64), torch.eye(n, dtype=torch.float64)), pred)
    model = Lorenz96(n)
    z = method.initial_state(model.initial_state(), 0.0)
    assert z.shape == (n + 3,)
    z[n:] = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    zf = method.forecast(model, z, 4)
    torch.testing.assert_close(zf[:n], model.forecast(z[:n], 4))
    torch.testing.assert_close(zf[n:], z[n:])


def _constant_bias_twin(n_cycles: int):
    n = 40
    model = Lorenz96(n)
    g = torch.Generator().manual_seed(0)
    x0 = model.forecast(model.initial_state() + torch.randn(n, generator=g, dtype=torch.float64), 300)
    loc = torch.arange(n)
    pred = BiasPredictors(torch.where(loc % 2 == 0, -1, (loc // 2) % 3), names=("constant",))
    truth = torch.tensor([1.0, -0.8, 0.6], dtype=torch.float64)
    bias = ChannelBias(pred, truth, [0.0, 0.0, 0.0], shape="linear")
    twin = make_twin(model, BiasedObs(IdentityObs(n, std=1.0), bias), x0, n_cycles, g)
    return model, x0, pred, truth, twin


def test_varbc_recovers_a_constant_bias_over_a_short_cycle():
    model, x0, pred, truth, twin = _constant_bias_twin(600)
    clim = climatology(model, x0, 3000, thin=5)
    method = VarBC3D(clim, pred, xB=0.02, beta_std=0.1)
    betas, rmse = [], []
    for rec, z in run_cycle(model, method, method.initial_state(x0, 0.0), twin.truth, twin.observations, 1,
                            innovations=False, probabilistic_scores=False):
        betas.append(z[40:])
        rmse.append(rec.rmse_a)
    # the estimate fluctuates slowly (the state absorbs part of the bias for a while): average 300 cycles
    est = torch.stack(betas[-300:]).mean(0)
    assert float((est - truth).abs().max()) < 0.1, est
    assert float((torch.stack(betas[:20]).mean(0) - truth).abs().max()) > 0.3  # it did have to learn
    assert sum(rmse[-100:]) / 100 < 0.6


@pytest.mark.parametrize(("kwargs", "match"), [({"beta_std": 0.0}, "beta_std"), ({"beta0": torch.zeros(2)}, "beta0")])
def test_varbc_validates(kwargs, match):
    clim = (torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match=match):
        VarBC3D(clim, BiasPredictors([0, 0, 1, -1]), **kwargs)


@pytest.mark.parametrize("nonlinear", [False, True])
def test_varbc_without_bias_coefficients_is_threedvar(nonlinear):
    """With every observation an anchor (no coefficients) VarBC3D is ThreeDVar, for a linear and a nonlinear H."""
    from hybrida.assimilation.variational.threedvar import ThreeDVar
    from hybrida.observations.networks import RadianceObs

    n = 8
    cov = random_spd(n, seed=2)
    clim = (torch.zeros(n, dtype=torch.float64), cov)
    net = RadianceObs(n, 4, 1.0, "tanh", scale=2.0) if nonlinear else SubsetObs(n, [1, 4, 6])
    obs = net.network(1)
    g = torch.Generator().manual_seed(1)
    xb = torch.randn(n, generator=g, dtype=torch.float64)
    obs.y = obs.H(xb) + torch.randn(obs.p, generator=g, dtype=torch.float64)
    za = VarBC3D(clim, BiasPredictors([-1] * n), xB=0.5).analyse(xb.clone(), obs)
    assert za.shape == (n,)
    torch.testing.assert_close(za, ThreeDVar(clim, xB=0.5).analyse(xb.clone(), obs), rtol=0, atol=1e-8)


def test_varbc_with_nonlinear_H_reaches_a_stationary_point_of_the_physical_cost():
    """Gradient of J(x, beta) (written in x and beta, not the control variables) vanishes at the analysis."""
    from hybrida.observations.networks import RadianceObs

    n = 8
    cov = random_spd(n, seed=4)
    pred = BiasPredictors([0, -1, 1, -1, 0, -1, 1, -1], scan_covariate(n, 4), scale=2.0)
    method = VarBC3D((torch.zeros(n, dtype=torch.float64), cov), pred, xB=0.5, beta_std=0.4)
    obs = RadianceObs(n, 8, 1.0, "tanh", scale=2.0, std=0.5).network(1)
    g = torch.Generator().manual_seed(6)
    xb = torch.randn(n, generator=g, dtype=torch.float64)
    beta_b = 0.3 * torch.randn(pred.n_coefficients, generator=g, dtype=torch.float64)
    obs.y = obs.H(xb + torch.randn(n, generator=g, dtype=torch.float64)) + 0.5
    za = method.analyse(torch.cat((xb, beta_b)), obs).requires_grad_(True)
    P = pred.design(obs, obs.H(xb))
    Binv = torch.linalg.inv(0.5 * cov)

    x, beta = za[:n], za[n:]
    r = obs.error.whiten(obs.y - obs.H(x) - P @ beta)
    J = 0.5 * (x - xb) @ Binv @ (x - xb) + 0.5 * (((beta - beta_b) / 0.4) ** 2).sum() + 0.5 * (r * r).sum()
    (grad,) = torch.autograd.grad(J, za)
    g0 = torch.autograd.functional.jacobian(
        lambda z: 0.5 * (z[:n] - xb) @ Binv @ (z[:n] - xb) + 0.5 * (((z[n:] - beta_b) / 0.4) ** 2).sum()
        + 0.5 * obs.error.whiten(obs.y - obs.H(z[:n]) - P @ z[n:]).pow(2).sum(),
        torch.cat((xb, beta_b)),
    )
    assert float(grad.norm()) < 1e-6 * float(g0.norm())
    assert float((za.detach()[n:] - beta_b).abs().max()) > 1e-2
