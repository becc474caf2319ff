"""Shortened reproductions of the published RMSE tables (``shared/REFERENCES.md``).

Each row runs the preset with the published hyper-parameters for fewer cycles
than the reference and takes the median rmse_a over three seeds. Short runs
are noisier than the published 10^3-10^4-cycle averages, so the bar is
``LOOSE`` times the benchmark's (+-0.02, or 5% above 0.5); the full-length
runs with the strict bar are ``benchmarks/reproduce.py``.
"""

from __future__ import annotations

import statistics

import pytest

from hybrida.experiment.references import ROWS
from hybrida.experiment.runner import run_experiment

#: (cycles, burn-in in model time, climatology steps) of the shortened runs
SHORT = {
    "lorenz63/sakov2012": (500, 8.0, 5_000),
    "lorenz96/sakov2008": (500, 5.0, 5_000),
    "ks/bocquet2019": (300, 50.0, 4_000),
    "lorenz96/wilks05": (300, 3.0, 5_000),
    "lorenz96/model_error": (500, 5.0, 2_000),
    "lorenz96/bocquet2013": (100, 4.0, 2_000),
}
SEEDS = (1, 2, 3)  # extended per row by ReferenceRow.seeds
LOOSE = 2.5


@pytest.mark.reproduction
@pytest.mark.parametrize("row", ROWS, ids=[r.label for r in ROWS])
def test_reference_rmse(row):
    cycles, burn_in, clim_steps = SHORT[row.preset]
    cycles = row.short_cycles or cycles
    scores = []
    for seed in row.seed_list(SEEDS):
        config = row.config(seed=seed, cycles=cycles, burn_in=burn_in, climatology_steps=clim_steps)
        summary = run_experiment(config, progress=False).summary
        assert not summary["diverged"], f"seed {seed}: {summary.get('diverged_reason')}"
        scores.append(summary["rmse_a"])
    median = statistics.median(scores)
    tol = row.tolerance(LOOSE)
    assert abs(median - row.rmse_a) <= tol, (
        f"{row.label}: median rmse_a {median:.3f} {scores}, published {row.rmse_a} +- {tol:.3f}"
    )


def test_seed_list_extends_to_the_rows_seeds():
    from hybrida.experiment.references import ReferenceRow

    row = ReferenceRow("lorenz63/sakov2012", "enkf", {"N": 10}, 0.65, seeds=5)
    assert row.seed_list((1, 2, 3)) == [1, 2, 3, 4, 5]
    assert row.seed_list([7, 9]) == [7, 9, 10, 11, 12]
    assert row.seed_list(range(1, 8)) == list(range(1, 8))  # more given than needed: all kept
    assert ReferenceRow("lorenz63/sakov2012", "etkf").seed_list() == [1, 2, 3]
