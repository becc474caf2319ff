"""Fitting reduced representations: POD exactness, autoencoder training and the latent surrogate learn."""

from __future__ import annotations

import pytest
import torch

from hybrida.assimilation.learned.latent import LatentSurrogate
from hybrida.experiment.twin import nature_run
from hybrida.learn.latent import fit_autoencoder, fit_latent_surrogate, fit_pod, reconstruction_rmse
from hybrida.models.lorenz96 import Lorenz96


@pytest.fixture(scope="module")
def l96_run() -> torch.Tensor:
    torch.set_num_threads(1)
    model = Lorenz96(40, 8.0, 0.05)
    x0 = model.forecast(8.0 + torch.randn(40, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 500)
    return nature_run(model, x0, 1600, 1)


def test_pod_orders_by_variance_and_beats_mean(l96_run):
    pod = fit_pod(l96_run[:1200], 16)
    ev = pod.explained_variance()
    assert bool((ev[1:] >= ev[:-1]).all()) and float(ev[-1]) == pytest.approx(1.0)
    std = float((l96_run[1200:] - l96_run[:1200].mean(0)).pow(2).mean().sqrt())
    assert reconstruction_rmse(pod, l96_run[1200:]) < 0.75 * std
    assert torch.allclose(fit_pod(l96_run[:1200], 40).reconstruct(l96_run[1200:]), l96_run[1200:], atol=1e-10)


def _fit(run: torch.Tensor, lr: float):
    return fit_autoencoder(run[:1200], run[1200:], 16, channels=8, levels=2, lr=lr, batch=32, max_epochs=8,
                           max_seconds=20, patience=8, pod_init=False, seed=0)


def test_autoencoder_fit_reduces_reconstruction_error(l96_run):
    """From a random start (no POD initialisation); fails with training disabled (lr=0: rmse stays ~3.6)."""
    fit = _fit(l96_run, 1e-2)
    first, last = fit.history[0]["valid_rmse"], fit.best_valid  # history[0]: before training
    assert last < 0.85 * first
    assert reconstruction_rmse(fit.reduction, l96_run[1200:]) < 3.1  # state std 3.6; POD k=16: ~2.3
    assert fit.reduction.k == 16 and fit.train_s > 0


def test_autoencoder_pod_init_starts_at_pod(l96_run):
    """With pod_init the untrained network reproduces POD (epoch-0 error = POD's, tolerance 1e-4 in float32)."""
    fit = fit_autoencoder(l96_run[:1200], l96_run[1200:], 16, channels=4, levels=2, lr=0.0, max_epochs=1, seed=0)
    pod = fit_pod(l96_run[:1200], 16)
    assert fit.history[0]["valid_rmse"] == pytest.approx(reconstruction_rmse(pod, l96_run[1200:]), rel=1e-4)


def test_latent_surrogate_beats_persistence(l96_run):
    """The trained latent MLP predicts one cycle ahead better than persistence z_{c+1} = z_c."""
    pod = fit_pod(l96_run[:1200], 20)
    fit = fit_latent_surrogate(pod, l96_run[:1200], l96_run[1200:], 1, width=64, max_epochs=60, max_seconds=15,
                               lr=3e-3, seed=0)
    Z = pod.encode(l96_run[1200:])
    model_err = float((fit.surrogate.forecast(Z[:-1], 1) - Z[1:]).pow(2).mean().sqrt())
    persist = float((Z[:-1] - Z[1:]).pow(2).mean().sqrt())
    assert model_err < 0.85 * persist
    two = LatentSurrogate(fit.surrogate.net, 2, fit.surrogate.loc, fit.surrogate.scale)
    with pytest.raises(ValueError, match="trained for 2 steps per cycle, asked for 3"):
        two.forecast(Z[:2], 3)


def test_fit_bad_input(l96_run):
    with pytest.raises(ValueError, match="larger than the state size n=40"):
        fit_autoencoder(l96_run[:100], l96_run[100:150], 41)
    with pytest.raises(ValueError, match="valid has state size 39"):
        fit_autoencoder(l96_run[:100], l96_run[100:150, :39], 8)
    with pytest.raises(ValueError, match=r"snapshots \(T, n\)"):
        fit_pod(l96_run[0], 4)
