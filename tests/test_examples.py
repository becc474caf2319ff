"""The examples a newcomer runs first keep working and give sensible numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_reaches_the_published_rmse():
    rmse_a = _load("quickstart").main(n_cycles=300, seed=0)
    assert 0.14 < rmse_a < 0.24


def test_example_sweep_expands_to_the_documented_grid():
    from hybrida.experiment.sweep import expand, load_sweep

    runs = expand(load_sweep(EXAMPLES / "sweep_l96.yaml"))
    # etkf and letkf take N (2 values), 3dvar does not: (2 + 2 + 1) points x 3 seeds
    assert len(runs) == 15
    assert {r.labels["method"] for r in runs} == {"etkf", "letkf", "3dvar"}
