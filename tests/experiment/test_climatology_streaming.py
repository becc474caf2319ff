"""The climatology accumulated chunk by chunk equals the one of the stored trajectory."""

from __future__ import annotations

import pytest
import torch

from hybrida.experiment.twin import climatology
from hybrida.models.lorenz96 import Lorenz96


@pytest.mark.parametrize(("thin", "chunk"), [(1, 7), (3, 100), (2, 10_000)])
def test_streamed_climatology_equals_the_trajectory_statistics(thin, chunk):
    model = Lorenz96(n=12)
    x0 = model.initial_state()
    mean, cov = climatology(model, x0, 500, spinup=5, thin=thin, chunk=chunk)
    with torch.no_grad():
        traj = model.forecast(model.forecast(x0, 5), 500, trajectory=True)[1::thin]
    anomalies = traj - traj.mean(0)
    torch.testing.assert_close(mean, traj.mean(0), rtol=0, atol=1e-13)
    torch.testing.assert_close(cov, anomalies.T @ anomalies / (traj.shape[0] - 1), rtol=0, atol=1e-12)


def test_too_short_a_run_is_refused():
    with pytest.raises(ValueError, match="at least 2 states"):
        climatology(Lorenz96(n=8), Lorenz96(n=8).initial_state(), 1)


def test_build_shows_the_climatology_progress_only_when_asked(capsys):
    from hybrida.experiment.builder import build
    from hybrida.experiment.config import load_config

    config = load_config(
        "lorenz96/sakov2008", overrides=["method.name=3dvar", "cycles=2", "burn_in=0", "climatology.steps=300"]
    )
    quiet = build(config)
    assert "climatology" not in capsys.readouterr().err
    shown = build(config, progress=True)
    assert "climatology" in capsys.readouterr().err
    # the bar changes nothing
    torch.testing.assert_close(shown.method.B, quiet.method.B, rtol=0, atol=0)
