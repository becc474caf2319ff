"""Innovation statistics on the exact linear-Gaussian analysis (Desroziers et al. 2005 identities)."""

from __future__ import annotations

import pytest
import torch

from hybrida.assimilation.base import GaussianState
from hybrida.innovations import cycle_innovations, summarize_innovations
from hybrida.observations import Observation
from hybrida.observations.errors import DiagonalError

N_STATE, SIGMA_O = 6, 0.7


def _setup():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(N_STATE, N_STATE, generator=g, dtype=torch.float64)
    B = A @ A.T / N_STATE + 0.2 * torch.eye(N_STATE, dtype=torch.float64)
    H = torch.zeros(3, N_STATE, dtype=torch.float64)
    H[0, 0], H[1, 2], H[2, 5] = 1.0, 1.0, 1.0
    R = SIGMA_O**2 * torch.eye(3, dtype=torch.float64)
    K = B @ H.T @ torch.linalg.inv(H @ B @ H.T + R)
    return g, B, H, R, K


def _stats(gain_scale: float, samples: int = 6000) -> tuple[dict, torch.Tensor, torch.Tensor]:
    g, B, H, R, K = _setup()
    L = torch.linalg.cholesky(B)
    cycles = []
    for _ in range(samples):
        x_t = torch.randn(N_STATE, generator=g, dtype=torch.float64)
        x_b = x_t + L @ torch.randn(N_STATE, generator=g, dtype=torch.float64)
        y = H @ x_t + SIGMA_O * torch.randn(3, generator=g, dtype=torch.float64)
        x_a = x_b + gain_scale * K @ (y - H @ x_b)
        obs = Observation(y=y, operator=lambda x: x @ H.T, error=DiagonalError(torch.diag(R)), matrix=H)
        cycles.append(cycle_innovations(obs, GaussianState(x_b, B), x_a, N_STATE))
    return summarize_innovations(cycles), H @ B @ H.T, H @ K


def test_optimal_analysis_satisfies_the_desroziers_identities():
    s, HBH, HK = _stats(1.0)
    assert s["desroziers_sigma_o"] == pytest.approx(SIGMA_O, rel=0.03)
    assert s["desroziers_sigma_b"] ** 2 == pytest.approx(float(torch.diagonal(HBH).mean()), rel=0.05)
    assert s["dfs_per_cycle"] == pytest.approx(float(torch.trace(HK)), rel=0.05)
    assert s["chi2_per_obs"] == pytest.approx(1.0, rel=0.04)
    assert s["spread_ratio"] == pytest.approx(1.0, rel=0.04)
    assert abs(s["omb_mean"]) < 0.05
    assert s["n_innovations"] == 3 * 6000


def test_a_suboptimal_gain_breaks_them():
    """Half the Kalman gain: O−A keeps too much of the innovation, the σ_o estimate overshoots."""
    s, _, _ = _stats(0.5, samples=3000)
    assert s["desroziers_sigma_o"] > 1.1 * SIGMA_O


def test_rejected_and_missing_observations_are_left_out():
    _, B, H, R, _ = _setup()
    x_b = torch.zeros(N_STATE, dtype=torch.float64)
    y = torch.tensor([1.0, float("nan"), 100.0], dtype=torch.float64)
    obs = Observation(y=y, operator=lambda x: x @ H.T, error=DiagonalError(torch.diag(R)), matrix=H)
    c = cycle_innovations(obs, GaussianState(x_b, B), x_b, N_STATE, used=torch.tensor([True, True, False]))
    assert torch.isnan(c.omb[1]) and c.omb[2] == 100.0  # kept in the record
    assert c.sums()["n"] == 1 and c.scalars()["omb_rms"] == pytest.approx(1.0)
