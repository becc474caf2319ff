"""Parameter sweeps: a base experiment × a grid of methods/hyper-parameters/seeds, run on Dask."""

from __future__ import annotations

import inspect
import itertools
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import Field, ValidationError

from hybrida import registry
from hybrida.experiment.config import (
    ConfigError,
    ExperimentConfig,
    _Strict,
    apply_overrides,
    format_validation_error,
    load_yaml,
    read_source,
    switch_method,
    validate_config,
)

log = logging.getLogger(__name__)

#: shorthand grid keys that set ``method.params.<key>`` where the method accepts it
METHOD_SHORTHANDS = ("N", "infl", "loc_rad")
SCORES = ("rmse_a", "rmse_f", "spread_a", "wall_s")


class SweepConfig(_Strict):
    """A sweep: base experiment plus lists whose Cartesian product is run."""

    name: str = Field("sweep", description="name of the sweep (folder and table titles)")
    base: str | dict[str, Any] = Field(
        "lorenz96/sakov2008",
        description="preset name, path to an experiment YAML, or an inline config",
    )
    set: dict[str, Any] = Field(
        default_factory=dict, description="dotted-key overrides applied to the base"
    )
    methods: list[str] = Field(
        default_factory=list, description="method names (tuned params per preset)"
    )
    N: list[int] = Field(default_factory=list, description="ensemble sizes (methods that take N)")
    infl: list[float] = Field(
        default_factory=list, description="inflation factors (methods that take infl)"
    )
    loc_rad: list[float] = Field(
        default_factory=list, description="localization radii (methods that take loc_rad)"
    )
    seeds: list[int] = Field(
        default_factory=list, description="master seeds; the table shows medians over them"
    )
    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="generic grid {dotted.key: [values]}"
    )


@dataclass
class SweepRun:
    """One point of the grid."""

    run_id: str
    labels: dict[str, Any]
    config: ExperimentConfig


@dataclass
class SweepResult:
    """Per-run rows, the table of medians over seeds, and the files written."""

    runs: pd.DataFrame
    table: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)


def load_sweep(source: str | Path | dict[str, Any]) -> SweepConfig:
    """Read and validate a sweep YAML file (or dict)."""
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"sweep config file not found: {source}")
        try:
            data = load_yaml(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: invalid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ConfigError("sweep: expected a mapping at the top level")
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError("sweep " + format_validation_error(err, SweepConfig)) from None


def _accepts(method_name: str, param: str) -> bool:
    """Whether the method class (registered name or ``module:Class`` plugin) takes ``param``."""
    try:
        cls = registry.resolve(registry.METHODS, method_name, "method")
    except (ValueError, ImportError):
        return True  # let validation/building report the real problem
    params = inspect.signature(cls.__init__).parameters
    return param in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _slug(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text)


def expand(sweep: SweepConfig) -> list[SweepRun]:
    """The list of distinct runs of the grid (shorthands skipped where a method lacks them)."""
    base = read_source(sweep.base)
    if sweep.set:
        if "method.name" in sweep.set:
            base = switch_method(base, sweep.set["method.name"])
        base = apply_overrides(base, dict(sweep.set))
    methods = sweep.methods or [base.get("method", {}).get("name", "etkf")]
    axes: list[tuple[str, list[Any]]] = [("method", methods)]
    axes += [(k, getattr(sweep, k)) for k in METHOD_SHORTHANDS if getattr(sweep, k)]
    axes += [(k, v) for k, v in sweep.grid.items()]
    axes.append(("seed", sweep.seeds or [base.get("seed", 3000)]))

    runs: list[SweepRun] = []
    seen: set[tuple] = set()
    for combo in itertools.product(*(vals for _, vals in axes)):
        labels = dict(zip((k for k, _ in axes), combo))
        data = switch_method(base, labels["method"])
        overrides: dict[str, Any] = {"method.name": labels["method"], "seed": labels["seed"]}
        for k in METHOD_SHORTHANDS:
            if k in labels:
                if _accepts(labels["method"], k):
                    overrides[f"method.params.{k}"] = labels[k]
                else:
                    labels[k] = None
        for k in sweep.grid:
            overrides[k] = labels[k]
        key = tuple(sorted((k, repr(v)) for k, v in labels.items()))
        if key in seen:
            continue
        seen.add(key)
        try:
            config = validate_config(apply_overrides(data, overrides))
        except ConfigError as err:
            raise ConfigError(f"sweep point {labels}: {err}") from None
        parts = (
            [_slug(labels["method"])]
            + [
                f"{k.split('.')[-1]}{_slug(v)}"
                for k, v in labels.items()
                if k not in ("method", "seed") and v is not None
            ]
            + [f"s{labels['seed']}"]
        )
        runs.append(SweepRun(run_id="-".join(parts), labels=labels, config=config))
    return runs


def run_point(config_data: dict[str, Any], out_dir: str | None) -> dict[str, Any]:
    """Run one grid point (in a worker): one torch thread, no progress bar; errors become rows."""
    import torch

    from hybrida.experiment.runner import run_experiment

    torch.set_num_threads(1)
    try:
        config = validate_config(config_data)
        return run_experiment(config, out_dir, progress=False).summary
    except Exception as err:  # noqa: BLE001 - a broken point must not sink the whole sweep
        return {"error": f"{type(err).__name__}: {err}", "diverged": True, "rmse_a": math.nan}


def _vectorized_parts(batch: list, workers: int) -> list[list]:
    """``batch`` cut into at most ``workers`` consecutive parts of two runs or more."""
    k = max(1, min(workers, len(batch) // 2))
    step = math.ceil(len(batch) / k)
    return [batch[i : i + step] for i in range(0, len(batch), step)]


def _run_parts(parts: list[list], progress: bool) -> list[dict[str, Any]]:
    """``run_vectorized`` on each part: in this process for one part, else one local process per part.

    Processes are forked where the platform allows it (no re-import, ~0.1 s), else spawned.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from hybrida.experiment.vectorized import run_vectorized

    if len(parts) == 1:
        return run_vectorized(parts[0], progress=progress)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(len(parts), mp_context=multiprocessing.get_context(method)) as pool:
        return [s for part in pool.map(run_vectorized, parts) for s in part]


def _run_vectorized(runs: list[SweepRun], summaries: list, progress: bool, workers: int = 1) -> None:
    """Fill ``summaries`` for the groups of ``runs`` that batch (two runs or more); leave the others None.

    With ``workers`` > 1 a group is cut into up to ``workers`` batches run side by side in local
    processes (each run's numbers are those of its unbatched run to ~1e-12 either way).
    """
    from hybrida.experiment.vectorized import split_groups, why_not_vectorizable

    configs = [r.config for r in runs]
    for group in split_groups(configs):
        batch = [configs[i] for i in group]
        if len(group) < 2 or why_not_vectorizable(batch) is not None:
            continue
        try:
            results = _run_parts(_vectorized_parts(batch, workers), progress)
        except Exception as err:  # noqa: BLE001 - a broken group falls back to single runs
            log.warning("vectorised group failed (%s); running it point by point", err)
            continue
        for i, summary in zip(group, results):
            summaries[i] = summary


def aggregate(runs: pd.DataFrame, label_cols: list[str]) -> pd.DataFrame:
    """Medians over seeds of the scores, the fraction of diverged runs and the seed count."""
    keys = [c for c in label_cols if c != "seed"]
    df = runs.copy()
    df["diverged"] = df["diverged"].astype(float)
    agg = {s: "median" for s in SCORES if s in df}
    agg["diverged"] = "mean"
    grouped = df.groupby(keys, dropna=False, sort=False)
    table = grouped.agg(agg).rename(columns={"diverged": "diverged_frac"})
    table["n_seeds"] = grouped.size()
    return table.reset_index()


def run_sweep(
    sweep: SweepConfig,
    out_dir: str | Path,
    *,
    scheduler: str | None = None,
    workers: int = 2,
    progress: bool = True,
    on_start: Callable[[], None] | None = None,
    vectorize: bool = False,
) -> SweepResult:
    """Run every grid point on Dask and write runs.csv, table.csv and table.md to ``out_dir``.

    ``scheduler`` is the address of a running Dask scheduler; otherwise a
    process-based ``LocalCluster`` with ``min(workers, runs)`` single-threaded
    workers is started. ``workers=0`` runs the points serially in this process.
    ``on_start()`` is called once the workers are reachable, before the first run.
    ``vectorize=True`` runs each group of points that differ only in seed and inflation as
    batches (:mod:`hybrida.experiment.vectorized`; no per-run output folders): without a
    ``scheduler``, up to ``workers`` batches side by side in local processes (``workers`` 0 or
    1: one batch in this process); the points that cannot be batched run as usual.
    """
    from tqdm.auto import tqdm

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(
            f"--workers: must be an integer >= 1 (or 0 to run serially in-process), got {workers!r}"
        )
    out = Path(out_dir)
    runs = expand(sweep)
    payloads = [(r.config.model_dump(mode="json"), str(out / r.run_id)) for r in runs]
    summaries: list[dict[str, Any] | None] = [None] * len(runs)
    if vectorize:
        _run_vectorized(runs, summaries, progress, workers if scheduler is None else 1)
        payloads = [(cfg, d) if summaries[i] is None else None for i, (cfg, d) in enumerate(payloads)]
    serial = (scheduler is None and workers == 0) or all(p is None for p in payloads)
    # connect first: an unreachable scheduler fails before anything is written
    client, cluster = (None, None) if serial else _client(scheduler, workers, len(payloads))
    try:
        if on_start is not None:
            on_start()
        out.mkdir(parents=True, exist_ok=True)
        with tqdm(total=len(runs), disable=not progress, desc=sweep.name, unit="run") as bar:
            bar.update(sum(s is not None for s in summaries))
            if client is None:
                for i, payload in enumerate(payloads):
                    if payload is not None:
                        summaries[i] = run_point(*payload)
                        bar.update(1)
            else:
                _run_dask(client, payloads, summaries, bar)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    label_cols = list(runs[0].labels) if runs else ["method", "seed"]
    rows = [{"run_id": r.run_id, **r.labels, **(s or {})} for r, s in zip(runs, summaries)]
    df = pd.DataFrame(rows)
    table = aggregate(df, label_cols) if len(df) else pd.DataFrame()
    files = {
        "runs": out / "runs.csv",
        "table_csv": out / "table.csv",
        "table_md": out / "table.md",
    }
    df.to_csv(files["runs"], index=False)
    table.to_csv(files["table_csv"], index=False)
    title = f"# {sweep.name}: medians over seeds\n\n"
    files["table_md"].write_text(title + _markdown(table) + "\n")
    return SweepResult(runs=df, table=table, files=files)


def _label(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _markdown(table: pd.DataFrame) -> str:
    """The table as Markdown; labels a method does not have (N of 3D-Var) show as '-'."""
    shown = table.copy()
    for col in shown.columns:
        if col not in (*SCORES, "diverged_frac", "n_seeds") and shown[col].isna().any():
            shown[col] = [_label(v) for v in shown[col]]
    return shown.to_markdown(index=False, floatfmt=".4g")


#: seconds to wait for a Dask scheduler given by address
CONNECT_TIMEOUT_S = 3


def _client(scheduler: str | None, workers: int, n_runs: int) -> tuple[Any, Any]:
    """A Dask client and its LocalCluster (None when ``scheduler`` gives the address of one)."""
    from distributed import Client, LocalCluster

    if scheduler is None:
        cluster = LocalCluster(
            n_workers=max(1, min(workers, n_runs)),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout=CONNECT_TIMEOUT_S), None
    except (OSError, TimeoutError, ValueError, TypeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(
            f"--scheduler {scheduler}: cannot reach a Dask scheduler ({reason}); start one (`dask scheduler`) or drop --scheduler to use local workers"
        ) from None


def _run_dask(client: Any, payloads: list, summaries: list, bar: Any) -> None:
    from distributed import as_completed

    futures = {
        client.submit(run_point, *payload, pure=False): i for i, payload in enumerate(payloads) if payload is not None
    }
    for fut in as_completed(futures):
        summaries[futures[fut]] = fut.result()
        bar.update(1)
