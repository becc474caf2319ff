"""Homogeneous B by FFT: exact for homogeneous covariances, the circulant projection otherwise, and 4D-Var with it."""

from __future__ import annotations

import pytest
import torch

from hybrida.assimilation.variational.fourdvar import FourDVar
from hybrida.assimilation.variational.homogeneous_b import HomogeneousB
from hybrida.assimilation.window import Window
from hybrida.models.base import Model
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError

F64 = torch.float64


def homogeneous_cov(grid, seed):
    """C = G Gᵀ with G a random periodic convolution coupling the fields: homogeneous by construction."""
    L, ny, nx = grid
    n = L * ny * nx
    K = torch.fft.fft2(torch.randn(L, L, ny, nx, generator=torch.Generator().manual_seed(seed), dtype=F64))

    def conv(v):
        V = torch.fft.fft2(v.reshape(*v.shape[:-1], L, ny, nx))
        return torch.fft.ifft2(torch.einsum("ijyx,...jyx->...iyx", K, V)).real.reshape(v.shape)

    G = conv(torch.eye(n, dtype=F64)).T
    return G @ G.T


def circulant_projection(C, grid):
    L, ny, nx = grid
    idx = torch.arange(C.shape[0]).reshape(L, ny, nx)
    P = torch.zeros_like(C)
    for dy in range(ny):
        for dx in range(nx):
            perm = torch.roll(idx, shifts=(dy, dx), dims=(1, 2)).reshape(-1)
            P += C[perm][:, perm]
    return P / (ny * nx)


@pytest.mark.parametrize("grid", [(2, 4, 6), (2, 5, 7), (1, 8, 8), (3, 3, 4)])
def test_square_root_is_symmetric_and_exact_for_a_homogeneous_covariance(grid):
    C = homogeneous_cov(grid, 0)
    R = HomogeneousB.from_covariance(C, grid, scale=0.3).dense_sqrt()
    torch.testing.assert_close(R, R.T, atol=1e-13 * C.abs().max(), rtol=0)
    torch.testing.assert_close(R @ R, 0.3 * C, atol=1e-12 * C.abs().max(), rtol=0)
    B = HomogeneousB.from_covariance(C, grid)
    torch.testing.assert_close(B.variance(), C.diagonal().reshape(grid[0], -1).mean(-1))


@pytest.mark.parametrize("grid", [(2, 4, 6), (2, 5, 3)])
def test_any_covariance_becomes_its_translation_average(grid):
    n = grid[0] * grid[1] * grid[2]
    A = torch.randn(n, n, generator=torch.Generator().manual_seed(1), dtype=F64)
    C = A @ A.T
    R = HomogeneousB.from_covariance(C, grid).dense_sqrt()
    P = circulant_projection(C, grid)
    torch.testing.assert_close(R @ R, P, atol=1e-12 * P.abs().max(), rtol=0)
    assert (R @ R - C).abs().max() > 0.1 * C.abs().max()  # C itself is not homogeneous


def test_adjoint_by_autodiff_is_the_operator_itself():
    grid = (2, 4, 6)
    B = HomogeneousB.from_covariance(homogeneous_cov(grid, 2), grid)
    g = torch.Generator().manual_seed(3)
    u, w = torch.randn(48, generator=g, dtype=F64), torch.randn(48, generator=g, dtype=F64)
    _, vjp = torch.func.vjp(lambda v: B @ v, u)
    torch.testing.assert_close(vjp(w)[0], B @ w)
    assert abs(torch.dot(B @ u, w) - torch.dot(u, B @ w)) < 1e-12 * float((B @ u).norm() * w.norm())
    batch = torch.stack((u, w))
    torch.testing.assert_close(B @ batch, torch.stack((B @ u, B @ w)))  # leading dims
    torch.testing.assert_close((B.to(u.float()) @ u.float()).double(), B @ u, atol=1e-4, rtol=1e-4)


class Shift(Model):
    """x_{k+1} = a x_k shifted by one grid point in x on every field: linear and translation invariant."""

    def __init__(self, grid, a=0.9):
        self.grid, self.a, self.dt, self.n = grid, a, 1.0, grid[0] * grid[1] * grid[2]

    def step(self, x, t=0.0):
        L, ny, nx = self.grid
        return self.a * torch.roll(x.reshape(*x.shape[:-1], L, ny, nx), 1, -1).reshape(x.shape)


@pytest.mark.parametrize("linearization", ["dense", "matrix_free"])
def test_fourdvar_with_homogeneous_b_equals_the_dense_climatological_b(linearization):
    grid = (2, 3, 4)
    n = 24
    C = homogeneous_cov(grid, 4)
    clim = (torch.zeros(n, dtype=F64), C)
    model = Shift(grid)
    g = torch.Generator().manual_seed(5)
    xb = torch.randn(n, generator=g, dtype=F64)
    obs = []
    for c in range(2):
        idx = torch.randperm(n, generator=g)[:7]
        H = torch.eye(n, dtype=F64)[idx]
        obs.append(Observation(y=torch.randn(7, generator=g, dtype=F64), operator=lambda x, H=H: x @ H.mT,
                               error=DiagonalError(torch.full((7,), 0.5, dtype=F64)), matrix=H))
    window = Window(model, xb, 0.0, obs, [1, 2], 2, 1)
    kw = {"xB": 0.8, "lag": 2, "shift": 2, "tol": 1e-13, "max_inner": 200, "linearization": linearization}
    dense = FourDVar(clim, B="climatology", **kw).analyse_window(window, None)
    spectral = FourDVar(clim, B="homogeneous", grid=list(grid), **kw).analyse_window(window, None)
    torch.testing.assert_close(spectral, dense, atol=1e-9 * float(dense.abs().max()), rtol=0)
    assert (dense - xb).norm() > 0.1 * xb.norm()  # the observations moved the state


def test_bad_input_is_named():
    C = homogeneous_cov((2, 4, 6), 0)
    with pytest.raises(ValueError, match="does not match the state size n=48"):
        HomogeneousB.from_covariance(C, (2, 4, 5))
    with pytest.raises(ValueError, match="three positive integers"):
        HomogeneousB.from_covariance(C, (48,))
    bad = C.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        HomogeneousB.from_covariance(bad, (2, 4, 6))
    with pytest.raises(ValueError, match="needs grid"):
        FourDVar((torch.zeros(48, dtype=F64), C), B="homogeneous")
    with pytest.raises(ValueError, match="expected n=48"):
        HomogeneousB.from_covariance(C, (2, 4, 6)) @ torch.zeros(40, dtype=F64)


@pytest.mark.parametrize("grid", [(2, 4, 6), (1, 5, 7), (3, 3, 4)])
def test_from_anomalies_equals_from_covariance_of_the_same_sample(grid):
    """The mean cross-periodogram of the anomalies is the spectrum of their covariance's translation average."""
    L, ny, nx = grid
    n, T = L * ny * nx, 17
    X = torch.randn(T, n, generator=torch.Generator().manual_seed(1), dtype=F64)
    X = X + 0.6 * torch.roll(X, 1, 1)  # correlated neighbours
    A = X - X.mean(0)
    ref = HomogeneousB.from_covariance(A.T @ A / (T - 1), grid, scale=0.7)
    got = HomogeneousB.from_anomalies(A, grid, scale=0.7)
    torch.testing.assert_close(got.sqrt_spectrum, ref.sqrt_spectrum, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="anomalies must be"):
        HomogeneousB.from_anomalies(A[:1], grid)


def test_fourdvar_from_a_climatology_sample_equals_the_dense_climatology():
    """The builder's anomaly path (no n x n matrix) gives 4D-Var the same B and the same analysis."""
    from hybrida.assimilation.variational.climatology import ClimatologySample

    grid, n, T = (2, 3, 4), 24, 40
    X = torch.randn(T, n, generator=torch.Generator().manual_seed(2), dtype=F64)
    X = X + 0.8 * torch.roll(X, 2, 1)
    mean = X.mean(0)
    sample = ClimatologySample(mean, X - mean)
    dense = (mean, (X - mean).T @ (X - mean) / (T - 1))
    model = Shift(grid)
    g = torch.Generator().manual_seed(5)
    xb = torch.randn(n, generator=g, dtype=F64)
    idx = torch.randperm(n, generator=g)[:7]
    H = torch.eye(n, dtype=F64)[idx]
    obs = [Observation(y=torch.randn(7, generator=g, dtype=F64), operator=lambda x: x @ H.mT,
                       error=DiagonalError(torch.full((7,), 0.5, dtype=F64)), matrix=H)]
    window = Window(model, xb, 0.0, obs, [1], 1, 1)
    kw = {"B": "homogeneous", "grid": list(grid), "xB": 0.8, "lag": 1, "shift": 1, "tol": 1e-13, "max_inner": 200}
    a_dense = FourDVar(dense, **kw).analyse_window(window, None)
    a_sample = FourDVar(sample, **kw).analyse_window(window, None)
    torch.testing.assert_close(a_sample, a_dense, atol=1e-10 * float(a_dense.abs().max()), rtol=0)
    assert (a_dense - xb).norm() > 0.1 * xb.norm()
    assert FourDVar.climatology_sample_suffices({"B": "homogeneous"})
    assert not FourDVar.climatology_sample_suffices({"B": "climatology"})
    with pytest.raises(ValueError, match="ClimatologySample"):
        FourDVar(sample, B="climatology")
