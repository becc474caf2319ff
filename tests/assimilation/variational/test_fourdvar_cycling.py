"""4D-Var cycling on Lorenz-96 observed every 0.2 (DAPPER sakov2008 with dto = 0.2)."""

from __future__ import annotations

import statistics

import pytest

from hybrida.experiment.config import load_config
from hybrida.experiment.runner import run_experiment

PLUGIN = "hybrida.assimilation.variational.fourdvar:FourDVar"


@pytest.mark.parametrize(("lag", "xB", "reference"), [(1, 0.2, 0.66), (2, 0.1, 0.593)])
def test_cycling_lorenz96_dto02(lag, xB, reference):
    """Shortened DAPPER sakov2008 with dto = 0.2 and FourDVar's default B = xB x climatology.

    This B is DAPPER 1.8's ``Var4D`` default, not the B = xB I behind the published 0.46 / 0.39
    (those rows are in tests/test_reproduction.py). Reference values, full length (1000 cycles):
    lag 1, DAPPER's own ``Var4D`` on this setup 0.659 / 0.666 (seeds 1, 2), hybrida 0.667 (median
    of seeds 1-3); lag 2, hybrida 0.593 (docs/benchmarks.md, "other runs"). Bar: the REFERENCES
    tolerance, 5% above 0.5. Measured here (100 cycles, median of seeds 1-2): 0.658 and 0.579
    (seeds 3-4: 0.656 and 0.587).
    """
    scores = []
    for seed in (1, 2):
        config = load_config(
            "lorenz96/sakov2008",
            overrides=[
                "observations.every=4",
                "cycles=100",
                "burn_in=5",
                "climatology.steps=2000",
                f"seed={seed}",
                f"method.name={PLUGIN}",
                f"method.params={{lag: {lag}, xB: {xB}, tol: 1.0e-3}}",
            ],
        )
        summary = run_experiment(config, progress=False).summary
        assert not summary["diverged"]
        scores.append(summary["rmse_a"])
    assert abs(statistics.median(scores) - reference) <= 0.05 * reference, scores
