"""Sweeps: grid expansion, Dask LocalCluster execution, table of medians over seeds."""

from __future__ import annotations

import pandas as pd
import pytest

from hybrida.experiment.config import ConfigError
from hybrida.experiment.sweep import aggregate, expand, load_sweep, run_sweep

SMALL = {
    "model.params.n": 12,
    "cycles": 20,
    "burn_in": 0.2,
    "climatology.steps": 500,
    "climatology.spinup": 100,
}


def _spec(**changes):
    data = {
        "name": "tiny",
        "base": "lorenz96/sakov2008",
        "set": dict(SMALL),
        "methods": ["etkf", "3dvar"],
        "N": [6, 8],
        "seeds": [1, 2],
    }
    data.update(changes)
    return load_sweep(data)


def test_expand_skips_shorthands_a_method_lacks():
    runs = expand(_spec())
    # etkf: 2 N x 2 seeds; 3dvar takes no N: 2 seeds only
    assert len(runs) == 6
    var = [r for r in runs if r.labels["method"] == "3dvar"]
    assert len(var) == 2 and all(r.labels["N"] is None for r in var)
    assert all(r.config.method.params == {"xB": 0.02} for r in var)
    etkf = [r for r in runs if r.labels["method"] == "etkf"]
    assert sorted(r.config.method.params["N"] for r in etkf) == [6, 6, 8, 8]
    assert all(r.config.model.params["n"] == 12 and r.config.cycles == 20 for r in runs)
    assert len({r.run_id for r in runs}) == 6 and "etkf-N6-s1" in {r.run_id for r in runs}


def test_plugin_methods_get_the_same_shorthand_filtering():
    plugin = "hybrida.assimilation.variational.threedvar:ThreeDVar"
    runs = expand(_spec(methods=["etkf", plugin], N=[6, 8], seeds=[1]))
    var = [r for r in runs if r.labels["method"] == plugin]
    assert len(var) == 1 and var[0].labels["N"] is None  # ThreeDVar takes no N
    assert "N" not in var[0].config.method.params


def test_generic_grid_key():
    runs = expand(
        _spec(methods=["etkf"], N=[], seeds=[3], grid={"observations.params.std": [0.5, 2.0]})
    )
    assert [r.config.observations.params["std"] for r in runs] == [0.5, 2.0]
    assert all(r.config.seed == 3 for r in runs)


def test_sweep_validation_errors_name_fields(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'Ns'"):
        load_sweep({"Ns": [1]})
    with pytest.raises(ConfigError, match="method.params.N"):
        expand(_spec(N=[1]))
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        expand(_spec(methods=["nope"]))


def test_aggregate_medians_over_seeds():
    runs = pd.DataFrame(
        {
            "method": ["a", "a", "a", "b"],
            "seed": [1, 2, 3, 1],
            "rmse_a": [1.0, 2.0, 10.0, 5.0],
            "rmse_f": [1.0] * 4,
            "spread_a": [1.0] * 4,
            "wall_s": [1.0] * 4,
            "diverged": [False, False, True, False],
        }
    )
    table = aggregate(runs, ["method", "seed"]).set_index("method")
    assert table.loc["a", "rmse_a"] == 2.0 and table.loc["a", "n_seeds"] == 3
    assert (
        table.loc["a", "diverged_frac"] == pytest.approx(1 / 3)
        and table.loc["b", "diverged_frac"] == 0
    )


def test_run_sweep_on_local_cluster(tmp_path):
    spec = _spec(methods=["etkf", "oi"], N=[6], seeds=[1, 2])
    result = run_sweep(spec, tmp_path, workers=1, progress=False)
    assert len(result.runs) == 4 and "error" not in result.runs
    assert (~result.runs["diverged"].astype(bool)).all()
    table = pd.read_csv(tmp_path / "table.csv")
    assert list(table["method"]) == ["etkf", "oi"]
    assert set(table.columns) >= {
        "method",
        "N",
        "rmse_a",
        "rmse_f",
        "spread_a",
        "wall_s",
        "diverged_frac",
        "n_seeds",
    }
    assert (table["n_seeds"] == 2).all() and (table["rmse_a"] < 1.0).all()
    md = (tmp_path / "table.md").read_text()
    assert "| method" in md and "rmse_a" in md and "etkf" in md
    # each run wrote its own results
    assert (tmp_path / "etkf-N6-s1" / "summary.json").exists()
    runs = pd.read_csv(tmp_path / "runs.csv")
    med = runs[runs["method"] == "etkf"]["rmse_a"].median()
    assert table.loc[table["method"] == "etkf", "rmse_a"].item() == pytest.approx(med)
