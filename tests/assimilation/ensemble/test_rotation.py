"""Random mean-preserving rotations keep the ensemble's first two moments."""

from __future__ import annotations

import pytest
import torch

from hybrida.assimilation.ensemble import ETKF
from hybrida.assimilation.ensemble.rotation import mean_preserving_rotation, rotate_anomalies


@pytest.mark.parametrize("N", [3, 5, 20])
def test_rotation_is_orthogonal_and_keeps_ones(N):
    g = torch.Generator().manual_seed(N)
    omega = mean_preserving_rotation(N, g)
    eye = torch.eye(N, dtype=torch.float64)
    assert torch.allclose(omega @ omega.mT, eye, atol=1e-12)
    ones = torch.ones(N, dtype=torch.float64)
    assert torch.allclose(omega @ ones, ones, atol=1e-12)
    assert torch.allclose(omega.mT @ ones, ones, atol=1e-12)
    assert not torch.allclose(omega, eye, atol=1e-3)


def test_rotated_ensemble_keeps_mean_and_covariance_but_moves_members():
    g = torch.Generator().manual_seed(0)
    E = torch.randn(3, 10, 6, generator=g, dtype=torch.float64)
    Er = rotate_anomalies(E, g)
    assert torch.allclose(Er.mean(-2), E.mean(-2), atol=1e-12)
    A, Ar = E - E.mean(-2, keepdim=True), Er - Er.mean(-2, keepdim=True)
    assert torch.allclose(Ar.mT @ Ar, A.mT @ A, atol=1e-10)
    assert (Er - E).abs().max() > 1e-3


def test_rotation_is_reproducible_and_off_by_default():
    E = torch.randn(8, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = rotate_anomalies(E, torch.Generator().manual_seed(5))
    b = rotate_anomalies(E, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert ETKF(N=8).rot is False
    with pytest.raises(ValueError, match="rot"):
        ETKF(N=8, rot="yes")
