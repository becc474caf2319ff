"""ETKF and DEnKF against the exact Kalman analysis of the prior sample; transform properties."""

from __future__ import annotations

import pytest
import torch
from ens_helpers import kalman_analysis, linear_obs, random_spd, sample_stats

from hybrida.assimilation.ensemble import ETKF, DEnKF
from hybrida.assimilation.ensemble.etkf import etkf_transform
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError

F64 = torch.float64


def _problem(case: str, N: int = 9, n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(N, n, generator=g, dtype=F64) * torch.linspace(0.5, 2.0, n, dtype=F64) + 1.0
    if case == "identity":
        Hm = torch.eye(n, dtype=F64)
        R = 0.4 * torch.ones(n, dtype=F64)
    elif case == "subset":
        Hm = torch.eye(n, dtype=F64)[[0, 2, 5]]
        R = torch.tensor([0.3, 1.0, 2.0], dtype=F64)
    else:  # correlated R, dense H
        Hm = torch.randn(4, n, generator=g, dtype=F64)
        R = random_spd(4, g)
    y = Hm @ E.mean(0) + torch.randn(Hm.shape[0], generator=g, dtype=F64)
    return E, Hm, R, y


@pytest.mark.parametrize("case", ["identity", "subset", "correlated"])
def test_etkf_equals_kalman_analysis(case):
    E, Hm, R, y = _problem(case)
    Rm = torch.diag(R) if R.ndim == 1 else R
    mean_kf, cov_kf = kalman_analysis(*sample_stats(E), Hm, Rm, y)
    Ea = ETKF(E.shape[0]).analyse(E, linear_obs(Hm, y, R))
    mean_a, cov_a = sample_stats(Ea)
    assert torch.allclose(mean_a, mean_kf, atol=1e-12, rtol=0)
    assert torch.allclose(cov_a, cov_kf, atol=1e-12, rtol=0)


@pytest.mark.parametrize("case", ["identity", "subset", "correlated"])
def test_denkf_mean_equals_kalman_and_covariance_is_close(case):
    E, Hm, R, y = _problem(case)
    Rm = torch.diag(R) if R.ndim == 1 else R
    xm, P = sample_stats(E)
    mean_kf, cov_kf = kalman_analysis(xm, P, Hm, Rm, y)
    Ea = DEnKF(E.shape[0]).analyse(E, linear_obs(Hm, y, R))
    mean_a, cov_a = sample_stats(Ea)
    assert torch.allclose(mean_a, mean_kf, atol=1e-12, rtol=0)
    # Sakov & Oke 2008: Pa = (I - KH) P + (1/4) K H P Hᵀ Kᵀ, i.e. KF covariance plus a PSD term
    K = torch.linalg.solve(Hm @ P @ Hm.T + Rm, Hm @ P).T
    expected = cov_kf + 0.25 * K @ Hm @ P @ Hm.T @ K.T
    assert torch.allclose(cov_a, expected, atol=1e-12, rtol=0)


def test_etkf_transform_is_symmetric_and_mean_preserving():
    g = torch.Generator().manual_seed(2)
    N, p = 8, 13
    Y = torch.randn(N, p, generator=g, dtype=F64)
    S = (Y - Y.mean(0)) / (N - 1) ** 0.5
    d = torch.randn(p, generator=g, dtype=F64)
    w, T = etkf_transform(S, d)
    ones = torch.ones(N, dtype=F64)
    assert torch.allclose(T, T.T, atol=1e-14)
    assert torch.allclose(
        T @ ones, ones, atol=1e-13
    )  # 1 is an eigenvector: anomalies keep zero mean
    assert abs(float(w.sum())) < 1e-12
    C = torch.eye(N, dtype=F64) + S @ S.T
    assert torch.allclose(T @ T @ C, torch.eye(N, dtype=F64), atol=1e-12)
    E = torch.randn(N, 5, generator=g, dtype=F64)
    A = E - E.mean(0)
    assert torch.allclose((T @ A).mean(0), torch.zeros(5, dtype=F64), atol=1e-14)


def test_etkf_nonlinear_operator_uses_members():
    g = torch.Generator().manual_seed(4)
    N, n = 6, 4
    E = torch.randn(N, n, generator=g, dtype=F64)
    obs = Observation(
        y=torch.tensor([0.3, 1.2], dtype=F64),
        operator=lambda x: x[..., :2] ** 2,
        error=DiagonalError(torch.tensor([0.5, 0.5], dtype=F64)),
    )
    Ea = ETKF(N).analyse(E, obs)
    # equals a linear analysis in the augmented space [x, H(x)] (Evensen 2003, sec. 4.5)
    Z = torch.cat([E, E[:, :2] ** 2], dim=1)
    Haug = torch.zeros(2, n + 2, dtype=F64)
    Haug[0, n], Haug[1, n + 1] = 1.0, 1.0
    mean_kf, cov_kf = kalman_analysis(*sample_stats(Z), Haug, 0.5 * torch.eye(2, dtype=F64), obs.y)
    mean_a, cov_a = sample_stats(Ea)
    assert torch.allclose(mean_a, mean_kf[:n], atol=1e-12)
    assert torch.allclose(cov_a, cov_kf[:n, :n], atol=1e-12)


@pytest.mark.parametrize("cls", [ETKF, DEnKF])
def test_nan_observations_are_dropped(cls):
    E, Hm, R, y = _problem("identity")
    y_nan = y.clone()
    y_nan[[1, 4]] = float("nan")
    keep = torch.tensor([0, 2, 3, 5])
    Ea = cls(E.shape[0]).analyse(E, linear_obs(Hm, y_nan, R))
    Eref = cls(E.shape[0]).analyse(E, linear_obs(Hm[keep], y[keep], R[keep]))
    assert torch.allclose(Ea, Eref, atol=1e-13)
    y_all = torch.full_like(y, float("nan"))
    method = cls(E.shape[0], infl=1.5, rtps=0.5)
    assert torch.equal(method.analyse(E, linear_obs(Hm, y_all, R)), E)
    assert method.diagnostics()["n_obs"] == 0


@pytest.mark.parametrize("cls", [ETKF, DEnKF])
def test_batched_equals_per_slice_and_float32(cls):
    E, Hm, R, y = _problem("correlated", seed=7)
    g = torch.Generator().manual_seed(8)
    Eb = torch.stack([E, E * 0.5 + 1.0, torch.randn(E.shape, generator=g, dtype=F64)])
    obs = linear_obs(Hm, y, R)
    method = cls(E.shape[0])
    out = method.analyse(Eb, obs)
    for b in range(3):
        assert torch.allclose(out[b], method.analyse(Eb[b], obs), atol=1e-12)
    out32 = method.analyse(Eb.float(), obs)
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.double(), out, atol=1e-4)
