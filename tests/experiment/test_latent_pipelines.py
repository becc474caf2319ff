"""The latent-DA pipelines end to end on tiny configs: files, summary keys, bars, and the AE must learn."""

from __future__ import annotations

import json

import pytest
import torch

from hybrida.assimilation.learned.latent import LatentDA
from hybrida.experiment import latent_ks, latent_l96
from hybrida.experiment.config import ConfigError

TINY = ["free_run=600", "test_cycles=40", "burn_in=10", "tune_cycles=20", "epochs=6", "channels=4", "levels=1",
        "members=8", "particles=16", "letkf_infl=[1.05]", "etkf_infl=[1.1]", "xB=[0.1]", "pf_reg=[1.0]",
        "var_outer=1", "var_iter=10", "pod_init=false", "lr=0.01", "max_minutes=0.3", "latent=8"]


def test_latent_l96_tiny_runs_and_the_autoencoder_learns(tmp_path):
    """Fails with training disabled (lr=0): the randomly initialised AE then reconstructs no better than ~std."""
    s = latent_l96.run(tmp_path, seed=1, quick=True, overrides=TINY)
    for key in ("rmse", "baselines", "train_s", "bar", "met", "table", "bars"):
        assert key in s
    assert set(s["baselines"]) >= {"letkf", "etkf", "3dvar", "pf"}
    assert {"latent_etkf_pod", "latent_etkf_ae", "latent_3dvar_pod", "latent_3dvar_ae", "latent_pf_pod",
            "latent_pf_ae"} <= set(s["table"])
    assert all(v["ms_per_analysis"] > 0 for v in s["table"].values())
    for f in ("summary.json", "latent.pt", "autoencoder.pt", "reconstructions.png", "spectrum.png", "rmse.png"):
        assert (tmp_path / f).is_file(), f
    assert json.loads((tmp_path / "summary.json").read_text())["method"] == "latent_pf_ae"
    history = s["autoencoder"]["reconstruction_rmse"]
    assert history["ae"] < 3.3  # L96 climatological std 3.6; untrained (lr=0) ~3.6-3.9
    assert s["rmse"] > 0 and s["table"]["letkf"]["rmse"] < 1.0  # the full LETKF tracks the truth
    # resume reloads the trained autoencoder instead of training again
    again = latent_l96.run(tmp_path, seed=1, quick=True, overrides=TINY, resume=True)
    assert again["autoencoder"]["reconstruction_rmse"]["ae"] == pytest.approx(history["ae"])


def test_latent_ks_tiny_runs(tmp_path, monkeypatch):
    s = latent_ks.run(tmp_path, seed=2, quick=True, overrides=[*TINY, "free_run=300", "test_cycles=20",
                                                               "tune_cycles=10", "epochs=2", "burn_in=5"])
    assert s["problem"] == "ks/bocquet2019" and s["latent"] == 8
    assert s["bars"][0]["bar"].startswith("latent ETKF") and "speedup" in s["bars"][0]


    payload = torch.load(tmp_path / "latent.pt", weights_only=True)
    assert payload["kind"] == "latent" and isinstance(LatentDA.from_payload(payload), LatentDA)


def test_bad_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="latent"):
        latent_l96.run(tmp_path, quick=True, overrides=["latent=0"])
    with pytest.raises(ValueError, match="larger than the state size n=40"):
        latent_l96.run(tmp_path, quick=True, overrides=[*TINY, "latent=41"])
