"""Cycle records -> xarray Dataset: series, per-iteration diagnostics, NetCDF round trip."""

from __future__ import annotations

import math

import numpy as np
import torch

from hybrida.cycle import Record
from hybrida.io.results import records_to_dataset


def _record(i: int, diagnostics: dict) -> Record:
    z = torch.zeros(3, dtype=torch.float64)
    return Record(
        cycle=i + 1,
        time=float(i + 1),
        truth=z + i,
        prior_mean=z,
        posterior_mean=z + 0.5 * i,
        rmse_f=float(i),
        rmse_a=0.5 * i,
        spread_f=1.0,
        spread_a=0.5,
        crps_a=0.1,
        n_obs=3,
        diagnostics=diagnostics,
    )


def test_scalar_and_per_iteration_diagnostics(tmp_path):
    recs = [
        _record(0, {"cost_per_iteration": [3.0, 2.0], "dfs": 1.5}),
        _record(1, {"cost_per_iteration": [4.0, 2.5, 2.0], "grad_norm_per_iteration": [1.0]}),
        _record(2, {"dfs": 2.5}),
    ]
    ds = records_to_dataset(recs)
    cost = ds["diag_cost_per_iteration"]
    assert cost.dims == ("time", "iteration")
    np.testing.assert_array_equal(cost.values[0, :2], [3.0, 2.0])
    assert math.isnan(cost.values[0, 2])
    np.testing.assert_array_equal(cost.values[1], [4.0, 2.5, 2.0])
    assert np.isnan(cost.values[2]).all()
    assert ds.sizes["iteration"] == 3
    np.testing.assert_array_equal(ds["diag_grad_norm_per_iteration"].values[1, :1], [1.0])
    dfs = ds["diag_dfs"].values
    assert dfs[0] == 1.5 and math.isnan(dfs[1]) and dfs[2] == 2.5
    np.testing.assert_allclose(ds["rmse_a"].values, [0.0, 0.5, 1.0])
    path = tmp_path / "r.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    import xarray as xr

    with xr.open_dataset(path, engine="h5netcdf") as back:
        np.testing.assert_array_equal(back["diag_cost_per_iteration"].values[1], [4.0, 2.5, 2.0])


def test_no_iteration_dimension_without_lists():
    ds = records_to_dataset([_record(0, {"dfs": 1.0})])
    assert "iteration" not in ds.dims
