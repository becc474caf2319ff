"""Two-scale Lorenz-96 specifics: layout, coupling structure, decoupled limit."""

from __future__ import annotations

import pytest
import torch

from hybrida.models import Lorenz96, Lorenz96TwoScale, jacobian
from hybrida.models.lorenz96 import l96_advection


def test_defaults_are_wilks_2005():
    m = Lorenz96TwoScale()
    assert (m.K, m.J, m.F, m.h, m.b, m.c, m.dt) == (8, 32, 20.0, 1.0, 10.0, 10.0, 0.005)
    assert m.n_slow == 8 and m.n == 8 + 8 * 32
    x = m.initial_state()
    assert m.slow(x).shape == (8,) and m.fast(x).shape == (256,)
    torch.testing.assert_close(torch.cat((m.slow(x), m.fast(x))), x, rtol=0, atol=0)


def test_decoupled_limit():
    """h=0: X follows one-scale L96 and Y a scaled L96 on the reversed ring."""
    K, J, b, c = 5, 4, 10.0, 10.0
    m = Lorenz96TwoScale(K=K, J=J, F=8.0, h=0.0, b=b, c=c)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, m.n, generator=gen, dtype=torch.float64)
    d = m.tendency(x)
    torch.testing.assert_close(
        m.slow(d), Lorenz96(n=K, F=8.0).tendency(m.slow(x)), rtol=1e-14, atol=1e-14
    )
    Y = m.fast(x)
    dY = c / b * l96_advection(b * Y.flip(-1)).flip(-1)
    torch.testing.assert_close(m.fast(d), dY, rtol=1e-13, atol=1e-13)


def test_coupling_structure_in_jacobian():
    """dX_k/dY_{j,k'} = -h c/b δ_kk' and dY_{j,k}/dX_k' = h c/b δ_kk' (Wilks 2005 eq. 1-2)."""
    K, J, h, b, c = 4, 3, 0.7, 10.0, 10.0
    m = Lorenz96TwoScale(K=K, J=J, h=h, b=b, c=c)
    x = torch.randn(m.n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    Jm = torch.func.jacfwd(m.tendency)(x)
    sector = torch.arange(K * J) // J
    own = (torch.arange(K)[:, None] == sector[None, :]).double()
    torch.testing.assert_close(Jm[:K, K:], -h * c / b * own, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(Jm[K:, :K], h * c / b * own.T, rtol=1e-14, atol=1e-14)
    # the step's Jacobian helper works too
    assert jacobian(m, x).shape == (m.n, m.n)


def test_trajectory_bounded():
    m = Lorenz96TwoScale()
    traj = m.forecast(m.initial_state(), 400, trajectory=True)
    assert torch.isfinite(traj).all()
    X = m.slow(traj)
    assert X.abs().max() < 30 and m.fast(traj).abs().max() < 5
    assert X.std() > 2  # active slow dynamics, not a fixed point


@pytest.mark.parametrize(
    "kwargs", [{"K": 3}, {"J": 0}, {"b": 0.0}, {"c": -1.0}, {"dt": 0.0}, {"F": float("inf")}]
)
def test_invalid_parameters(kwargs):
    with pytest.raises(ValueError):
        Lorenz96TwoScale(**kwargs)
