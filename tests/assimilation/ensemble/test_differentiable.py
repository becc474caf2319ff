"""The differentiable LETKF: equal to the LETKF, finite gradients at repeated eigenvalues, gradchecks."""

from __future__ import annotations

import pytest
import torch

from hybrida.assimilation.ensemble.differentiable import (
    TrainableLETKF,
    dense_taper,
    local_etkf_update,
)
from hybrida.assimilation.ensemble.inflation import inflate_multiplicative
from hybrida.assimilation.ensemble.letkf import LETKF
from hybrida.assimilation.ensemble.spectral import inv_sqrt_and_inv
from hybrida.observations.networks import EveryKthObs, IdentityObs

D = torch.float64


def _rank_deficient(N: int, r: int, seed: int) -> torch.Tensor:
    """S of shape (N, r), r < N: C = I + S Sᵀ has the eigenvalue 1 exactly N − r times."""
    return torch.randn(N, r, generator=torch.Generator().manual_seed(seed), dtype=D)


def test_matrix_functions_and_their_gradcheck_at_repeated_eigenvalues():
    S = _rank_deficient(6, 2, 0).requires_grad_()
    W = torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=D)

    def f(S):
        Z, Cinv = inv_sqrt_and_inv(torch.eye(6, dtype=D) + S @ S.T)
        return (Z * W).sum() + (Cinv * W.T).sum()

    assert torch.autograd.gradcheck(f, (S,))
    C = torch.eye(6, dtype=D) + S.detach() @ S.detach().T
    Z, Cinv = inv_sqrt_and_inv(C)
    torch.testing.assert_close(Z @ Z, Cinv, rtol=0, atol=1e-13)
    torch.testing.assert_close(Cinv @ C, torch.eye(6, dtype=D), rtol=0, atol=1e-13)


def test_plain_eigh_backward_fails_where_ours_does_not():
    """The reason for the Daleckii–Krein backward: eigh's own gives NaN for an exactly repeated eigenvalue."""
    S0 = _rank_deficient(20, 3, 2)
    W = torch.randn(20, 20, generator=torch.Generator().manual_seed(3), dtype=D)
    grads = []
    for plain in (True, False):
        S = S0.clone().requires_grad_()
        C = torch.eye(20, dtype=D) + S @ S.T
        if plain:
            lam, V = torch.linalg.eigh(C)
            Z = (V * lam.rsqrt()) @ V.T
        else:
            Z = inv_sqrt_and_inv(C)[0]
        (Z * W).sum().backward()
        grads.append(S.grad)
    assert not bool(torch.isfinite(grads[0]).all())
    assert bool(torch.isfinite(grads[1]).all())


@pytest.mark.parametrize("network", [IdentityObs(40), EveryKthObs(40, k=4, offset=1)])
def test_equals_the_letkf_for_fixed_parameters(network):
    g = torch.Generator().manual_seed(0)
    E = 3.0 + 2.0 * torch.randn(2, 10, 40, generator=g, dtype=D)  # a batch of two ensembles
    obs = network.observe(torch.randn(40, generator=g, dtype=D), 1, g)
    a = LETKF(N=10, loc_rad=4.0, infl=1.05, solver="eigh").analyse(E, obs)
    b = TrainableLETKF(N=10, loc_rad=4.0, infl=1.05).analyse(E, obs)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-12)


def test_gradcheck_through_one_analysis():
    """d(analysis)/d(prior, inflation, radius) by autograd equal finite differences."""
    g = torch.Generator().manual_seed(4)
    n, N = 12, 4
    obs = EveryKthObs(n, k=2).observe(torch.randn(n, generator=g, dtype=D), 1, g)
    E = torch.randn(N, n, generator=g, dtype=D, requires_grad=True)
    infl = torch.tensor(1.1, dtype=D, requires_grad=True)
    radius = torch.tensor(2.0, dtype=D, requires_grad=True)

    def analysis(E, infl, radius):
        return inflate_multiplicative(local_etkf_update(E, obs, dense_taper(n, obs.locations, radius)), infl)

    assert torch.autograd.gradcheck(analysis, (E, infl, radius))


def test_constraints_and_bad_input():
    f = TrainableLETKF(N=5, loc_rad=3.0, infl=1.02)
    assert float(f.infl.detach()) == pytest.approx(1.02) and float(f.loc_rad.detach()) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="infl must be > 1"):
        TrainableLETKF(N=5, loc_rad=3.0, infl=0.9)
    with pytest.raises(ValueError, match="loc_rad"):
        TrainableLETKF(N=5, loc_rad=0.0)
    obs = IdentityObs(8).observe(torch.zeros(8, dtype=D), 1, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="ensemble"):
        f.analyse(torch.zeros(4, 8, dtype=D), obs)
