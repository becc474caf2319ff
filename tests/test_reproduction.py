"""Reproductions of the published RMSE tables (``shared/REFERENCES.md``).

Two variants of each row, the published hyper-parameters on the preset, median rmse_a over the
row's seeds (1-3, more where the row asks):

- ``test_reference_rmse_full_length`` (marked ``slow``: skipped unless ``--run-slow``, about an
  hour on 2 cores): the preset's full length, with the REFERENCES bar itself (+-0.02, or 5%
  above 0.5). Two rows miss it at full length, as measured in docs/benchmarks.md, and are
  expected failures with the reason.
- ``test_reference_rmse`` (default, in ``make test``): shortened runs (``SHORT``). Their medians
  are noisier than the 10^3-10^4-cycle means, so the bar is ``LOOSE`` times the REFERENCES bar.
  Measured on the shortened runs (seeds 1-3, 2026-12-03): 28 of 34 rows within 1x the bar; the
  largest deviations are L63 EKF -0.106 (2.3x its bar of 0.046), KS OI +0.042 (2.1x; 0.529 at full
  length too), L63 PF N=800 +0.029 (1.45x), KS LETKF N=4 +0.029 (1.43x), L96 EKF -0.020 (1.02x).
  ``LOOSE`` = 2.5 covers that spread with a small margin; it is a check that nothing broke, the
  full-length test is the reproduction.
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


#: rows outside the REFERENCES bar at full length (docs/benchmarks.md, reproduction sections)
FULL_LENGTH_MISSES = {
    "lorenz63/sakov2012 ienks (N=10, infl=1.02, rot=True)": "0.332 at full length (seeds 1-3), bar 0.31 +- 0.02",
    "ks/bocquet2019 oi": "0.529 at full length; DAPPER 1.8.1's own OI gives 0.527, the published 0.5 is rounded",
}


def _full_length_params():
    out = []
    for row in ROWS:
        reason = FULL_LENGTH_MISSES.get(row.label)
        marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
        out.append(pytest.param(row, id=row.label, marks=marks))
    return out


@pytest.mark.slow
@pytest.mark.reproduction
@pytest.mark.parametrize("row", _full_length_params())
def test_reference_rmse_full_length(row):
    """The preset's full length (its cycles, burn-in and climatology) and the REFERENCES bar."""
    scores = []
    for seed in row.seed_list(SEEDS):
        summary = run_experiment(row.config(seed=seed), progress=False).summary
        assert not summary["diverged"], f"seed {seed}: {summary.get('diverged_reason')}"
        scores.append(summary["rmse_a"])
    median = statistics.median(scores)
    tol = row.tolerance()
    assert abs(median - row.rmse_a) <= tol, (
        f"{row.label}: median rmse_a {median:.3f} {scores}, published {row.rmse_a} +- {tol:.3f}"
    )


def test_full_length_misses_name_existing_rows():
    assert set(FULL_LENGTH_MISSES) <= {r.label for r in ROWS}


def test_seed_list_extends_to_the_rows_seeds():
    from hybrida.experiment.references import ReferenceRow

    row = ReferenceRow("lorenz63/sakov2012", "enkf", {"N": 10}, 0.65, seeds=5)
    assert row.seed_list((1, 2, 3)) == [1, 2, 3, 4, 5]
    assert row.seed_list([7, 9]) == [7, 9, 10, 11, 12]
    assert row.seed_list(range(1, 8)) == list(range(1, 8))  # more given than needed: all kept
    assert ReferenceRow("lorenz63/sakov2012", "etkf").seed_list() == [1, 2, 3]
