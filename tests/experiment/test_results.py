"""results.nc / summary.json: dims, CF attributes, round trip, atomic writes; plots."""

from __future__ import annotations

import json
import math

import numpy as np
import yaml

from hybrida.experiment.config import validate_config
from hybrida.experiment.runner import run_experiment
from hybrida.io.results import read_dataset, write_summary
from hybrida.plots import plot_all


def test_results_round_trip(tiny_config, tmp_path):
    cfg = validate_config(tiny_config(cycles=20, store_members=True))
    res = run_experiment(cfg, tmp_path, progress=False)
    ds = read_dataset(tmp_path / "results.nc")
    assert ds["truth"].dims == ("time", "x") and ds["posterior_mean"].shape == (20, 12)
    assert ds["prior_mean"].dims == ("time", "x")
    for name in ("rmse_a", "rmse_f", "spread_a", "spread_f", "crps_a", "n_obs", "diag_history"):
        assert ds[name].dims == ("time",), name
        assert ds[name].attrs["long_name"] and "units" in ds[name].attrs
    assert ds["members"].dims == ("time", "member", "x") and ds.sizes["member"] == 8
    assert ds["time"].attrs["units"] and ds["x"].size == 12
    # rank histogram: N + 1 bins, one count per (cycle, variable)
    assert ds["rank_histogram"].dims == ("rank",) and ds.sizes["rank"] == 9
    assert int(ds["rank_histogram"].sum()) == 20 * 12
    # the stored numbers are the records'
    np.testing.assert_array_equal(ds["rmse_a"].values, [r.rmse_a for r in res.records])
    np.testing.assert_allclose(ds["members"].values[-1], res.final_state.numpy())
    np.testing.assert_allclose(ds["time"].values, 0.05 * np.arange(1, 21))
    # global attributes carry the config, seed and version
    assert yaml.safe_load(ds.attrs["config"]) == cfg.model_dump(mode="json")
    assert ds.attrs["seed"] == 7 and ds.attrs["hybrida_version"] and ds.attrs["created"]
    assert json.loads(ds.attrs["summary"])["rmse_a"] == res.summary["rmse_a"]
    assert ds.attrs["diverged"] == 0
    # no temporary files left behind by the atomic writes
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["config.yaml", "results.nc", "summary.json"]


def test_members_absent_by_default(tiny_config, tmp_path):
    run_experiment(validate_config(tiny_config(cycles=5, burn_in=0.0)), tmp_path, progress=False)
    ds = read_dataset(tmp_path / "results.nc")
    assert "members" not in ds and ds.sizes["rank"] == 9


def test_summary_json_keys_and_nan(tiny_config, tmp_path, summary_keys):
    res = run_experiment(
        validate_config(tiny_config(cycles=10, burn_in=0.0)), tmp_path, progress=False
    )
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in sorted(summary_keys):
        assert key in on_disk, key
    assert on_disk["rmse_a"] == res.summary["rmse_a"] and on_disk["n_cycles"] == 10
    path = write_summary({"rmse_a": math.nan, "x": math.inf}, tmp_path / "s.json")
    assert json.loads(path.read_text()) == {"rmse_a": None, "x": "inf"}


def test_plots_written(tiny_config, tmp_path):
    res = run_experiment(validate_config(tiny_config(cycles=10, burn_in=0.1)), progress=False)
    paths = plot_all(res.dataset(), tmp_path, burn_in=0.1)
    assert {p.name for p in paths} == {"rmse.png", "hovmoller.png", "rank_histogram.png"}
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000


def test_running_mean_of_the_rmse_series_marks_lost_cycles_and_short_series():
    from hybrida.plots import running_mean

    idx, smooth = running_mean([1.0, 2.0, 3.0, 4.0], 2)
    assert idx.tolist() == [1, 2, 3] and smooth.tolist() == [1.5, 2.5, 3.5]
    idx, smooth = running_mean([1.0, float("nan"), 3.0], 2)
    assert smooth.tolist() == [float("inf"), float("inf")]  # a lost cycle shows, it is not averaged away
    idx, smooth = running_mean([1.0, 2.0], 5)
    assert idx.tolist() == [0, 1] and smooth.tolist() == [1.0, 2.0]


def test_the_rmse_series_plot_is_written_atomically(tmp_path):
    from hybrida.plots import plot_rmse_series

    path = plot_rmse_series({"a": [1.0, 0.5, 0.4] * 20, "b": [2.0] * 60}, tmp_path / "sub" / "rmse.png", burn_in=5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["rmse.png"]  # no temporary file left
