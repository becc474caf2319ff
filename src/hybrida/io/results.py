"""Experiment results: cycle records → xarray Dataset → NetCDF, plus summary.json."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from hybrida.cycle import Record
from hybrida.io.atomic import atomic_write

_SERIES = {
    "rmse_a": "spatial RMS error of the analysis mean",
    "rmse_f": "spatial RMS error of the forecast (prior) mean",
    "spread_a": "analysis ensemble spread sqrt(mean variance)",
    "spread_f": "forecast ensemble spread sqrt(mean variance)",
    "crps_a": "domain-mean CRPS of the analysis",
}


#: series that need no truth
_OBS_SERIES = ("spread_a", "spread_f")

_INNOVATION_SERIES = {
    "omb_mean": "mean observation-minus-background departure",
    "omb_rms": "rms observation-minus-background departure",
    "oma_mean": "mean observation-minus-analysis departure",
    "oma_rms": "rms observation-minus-analysis departure",
    "chi2": "mean d_ob^2 / (HBH^T + R) over the cycle's observations",
    "dfs": "degrees of freedom for signal estimate d_ab^T R^-1 d_oa",
}


def hybrida_version() -> str:
    """Installed hybrida version ("unknown" when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hybrida")
    except PackageNotFoundError:  # pragma: no cover - only without package metadata
        return "unknown"


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def records_to_dataset(
    records: Sequence[Record],
    *,
    n: int | None = None,
    attrs: dict[str, Any] | None = None,
    time_units: str = "model time units",
    ensemble_size: int | None = None,
) -> xr.Dataset:
    """Stack cycle records into a Dataset with dims ``(time, x)``, ``(time,)``, ``(time, member, x)``, ``(rank,)``.

    Scalar diagnostics of the methods become ``diag_<name>`` series (NaN
    where a cycle did not report them).
    """
    T = len(records)
    if n is None:
        n = int(records[0].posterior_mean.shape[-1]) if T else 0
    times = np.array([r.time for r in records], dtype=float)
    coords = {
        "time": ("time", times, {"units": time_units, "long_name": "analysis time"}),
        "cycle": (
            "time",
            np.array([r.cycle for r in records], dtype=np.int64),
            {"long_name": "analysis cycle"},
        ),
        "x": ("x", np.arange(n), {"long_name": "state variable index"}),
    }

    def field(name: str) -> np.ndarray:
        if not T:
            return np.zeros((0, n))
        return np.stack([_np(getattr(r, name)) for r in records]).astype(float)

    data: dict[str, Any] = {
        "prior_mean": (
            ("time", "x"),
            field("prior_mean"),
            {"long_name": "forecast (prior) mean", "units": "1"},
        ),
        "posterior_mean": (
            ("time", "x"),
            field("posterior_mean"),
            {"long_name": "analysis (posterior) mean", "units": "1"},
        ),
    }
    if T and all(r.truth is not None for r in records):
        data["truth"] = (("time", "x"), field("truth"), {"long_name": "true state", "units": "1"})
    for name, long in _SERIES.items():
        if name not in _OBS_SERIES and "truth" not in data:
            continue  # no truth: nothing to score the state against
        data[name] = (
            ("time",),
            np.array([getattr(r, name) for r in records], dtype=float),
            {"long_name": long, "units": "1"},
        )
    data["n_obs"] = (
        ("time",),
        np.array([r.n_obs for r in records], dtype=np.int64),
        {"long_name": "number of valid observations", "units": "1"},
    )

    if T and all(r.innovation is not None for r in records):
        per_cycle = [r.innovation.scalars() for r in records]
        for name, long in _INNOVATION_SERIES.items():
            data[name] = (
                ("time",),
                np.array([c[name] for c in per_cycle], dtype=float),
                {"long_name": long, "units": "1"},
            )

    keys = sorted({k for r in records for k, v in r.diagnostics.items() if _is_scalar(v)})
    for k in keys:
        vals = np.array(
            [
                float(r.diagnostics.get(k, math.nan))
                if _is_scalar(r.diagnostics.get(k, math.nan))
                else math.nan
                for r in records
            ]
        )
        data[f"diag_{k}"] = (
            ("time",),
            vals,
            {"long_name": f"method diagnostic '{k}'", "units": "1"},
        )

    # per-iteration histories (e.g. cost and gradient norm of variational
    # minimisations) become (time, iteration) arrays padded with NaN
    list_keys = sorted({k for r in records for k, v in r.diagnostics.items() if _is_sequence(v)})
    seqs = {
        k: [list(v) if _is_sequence(v := r.diagnostics.get(k)) else [] for r in records] for k in list_keys
    }
    width = max((len(q) for k in list_keys for q in seqs[k]), default=0)
    for k in list_keys:
        arr = np.full((T, width), math.nan)
        for i, q in enumerate(seqs[k]):
            arr[i, : len(q)] = np.asarray(q, dtype=float)
        data[f"diag_{k}"] = (
            ("time", "iteration"),
            arr,
            {"long_name": f"method diagnostic '{k}' per iteration (NaN-padded)", "units": "1"},
        )
    if list_keys:
        coords["iteration"] = ("iteration", np.arange(width), {"long_name": "minimiser iteration"})

    members = [r.members for r in records]
    if T and all(m is not None for m in members):
        stack = np.stack([_np(m) for m in members]).astype(float)
        data["members"] = (
            ("time", "member", "x"),
            stack,
            {"long_name": "analysis ensemble members", "units": "1"},
        )
        coords["member"] = ("member", np.arange(stack.shape[1]), {"long_name": "ensemble member"})

    ranks = [r.rank_a for r in records if r.rank_a is not None]
    if ranks:
        stacked = np.stack([_np(r) for r in ranks]).astype(np.int64)
        N = ensemble_size if ensemble_size else _ensemble_size(records, stacked)
        counts = np.bincount(stacked.reshape(-1), minlength=N + 1)
        data["rank_histogram"] = (
            ("rank",),
            counts,
            {
                "long_name": "rank of the truth among the analysis members (counts over time and x)",
                "units": "1",
            },
        )
        coords["rank"] = ("rank", np.arange(counts.shape[0]), {"long_name": "rank 0..N"})

    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update(_clean_attrs(attrs or {}))
    ds.attrs.setdefault("hybrida_version", hybrida_version())
    ds.attrs.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    ds.attrs.setdefault("Conventions", "CF-1.8")
    return ds


def _ensemble_size(records: Sequence[Record], ranks: np.ndarray) -> int:
    for r in records:
        if r.members is not None:
            return int(r.members.shape[-2])
    return int(ranks.max()) if ranks.size else 0


def _is_sequence(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(_is_scalar(e) for e in v)


def _is_scalar(v: Any) -> bool:
    if isinstance(v, bool):
        return True
    if isinstance(v, (int, float)):
        return True
    return hasattr(v, "numel") and v.numel() == 1


def _clean_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    # netCDF attributes cannot be None, bool or nested: encode those as text
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if v is None:
            out[k] = ""
        elif isinstance(v, bool):
            out[k] = int(v)
        elif isinstance(v, (dict, list, tuple)):
            out[k] = json.dumps(v, default=str)
        else:
            out[k] = v
    return out


def write_dataset(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` atomically: NetCDF (h5netcdf), or chunked Zarr when ``path`` ends in ``.zarr``.

    A Zarr store is written to a temporary folder beside ``path`` and renamed
    into place once complete.
    """
    path = Path(path)
    if path.suffix != ".zarr":
        return atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        chunks = {d: min(size, 256) if d == "time" else size for d, size in ds.sizes.items()}
        # Zarr format 2 with consolidated metadata: readable by every zarr/xarray version
        ds.chunk(chunks).to_zarr(tmp / "store.zarr", mode="w", zarr_format=2, consolidated=True)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp / "store.zarr", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_dataset(path: str | Path) -> xr.Dataset:
    """Load a results file (NetCDF or ``.zarr``) fully into memory (the file is closed afterwards)."""
    if Path(path).suffix == ".zarr":
        with xr.open_zarr(path) as ds:
            return ds.load()
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (np.floating, np.integer)):
        return _jsonable(v.item())
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def write_summary(summary: dict[str, Any], path: str | Path) -> Path:
    """Write ``summary`` as JSON atomically (NaN → null, inf → "inf")."""
    text = json.dumps(_jsonable(summary), indent=2, sort_keys=False)

    def write(tmp: str) -> None:
        Path(tmp).write_text(text + "\n")

    return atomic_write(path, write)


def read_summary(path: str | Path) -> dict[str, Any]:
    """Read a summary.json."""
    return json.loads(Path(path).read_text())
