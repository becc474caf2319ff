"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Run single-threaded: tiny states gain nothing from intra-op threads, and on a
    shared 2-core machine batched ops (FFT, triu) can stall for ms waiting on them."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
