"""Fixtures for the variational/classical method tests."""

from __future__ import annotations

import pytest
import torch
from lingauss import random_spd


@pytest.fixture
def clim8():
    """A climatology (mean (8,), SPD cov (8, 8))."""
    mean = torch.linspace(-1.0, 2.0, 8, dtype=torch.float64)
    return mean, random_spd(8, seed=11)
