"""Throughput of a 64-run seed x inflation sweep: hybrida's vectorised runs against DAPPER's ``xpList.launch``.

Run with the project's Python (``.venv/bin/python benchmarks/peers/sweep_throughput.py``).

* Cases (issue 16, part 1): Lorenz-63 ``sakov2012`` with the ETKF N=10, Lorenz-96
  ``sakov2008`` with the ETKF N=20 and with the LETKF N=10, loc_rad 4; each a sweep of
  16 seeds x 4 inflations (1.0, 1.02, 1.05, 1.1) = 64 twin experiments of K cycles
  (default K = 200 for L63, burn-in 16 time units; K = 150 for L96, burn-in 2.5; chosen so
  that the whole benchmark, DAPPER's serial launches included, takes about 6 minutes on 2
  free cores). No random rotations (hybrida's
  vectorised path has none; DAPPER's ``EnKF('Sqrt')`` default has none either).
* hybrida: :func:`hybrida.experiment.vectorized.run_vectorized` on the 64 configs (one
  process; torch intra-op threads 1, then 2; then, like DAPPER's 2-process pool, its two
  halves in 2 forked 1-thread processes), and for reference ``run_experiment`` run by
  run with 1 thread on a subset (the first ``--subset`` configs; their wall time is scaled
  to 64 runs). Each wall time covers building the runs (nature run, observations,
  ensembles) and cycling them; the subset's rmse_a also checks the vectorised numbers
  (equal to 1e-12).
* DAPPER: the same sweep built from its own HMMs (``mods.Lorenz63.sakov2012``,
  ``mods.Lorenz96.sakov2008``, chronology cut to K analyses; for L96 the mean of X0 is
  hybrida's spun-up reference state, as in hybrida's preset, instead of DAPPER's ``e_0``,
  which is off the attractor and gives a ~3 time-unit transient) and launched its own way,
  ``xps.launch(HMM, save_as, mp=2)`` (a 2-process pathos pool; DAPPER pins numpy to 1
  thread per worker) and ``xps.launch(HMM)`` serially in one process with
  ``OMP_NUM_THREADS=1``; ``benchmarks/peers/sweep_throughput_dapper_side.py`` runs in the
  DAPPER venv ``benchmarks/.dapper-venv`` (found or made by ``dapper_venv.py``).
* The frameworks draw different truths from their seeds, so rmse_a agree statistically:
  per inflation the median over seeds of each, with a seed-noise band.

The table goes to section ``sweep-throughput`` of ``docs/benchmarks.md``. The heading says
"contended" when the 1-min load average exceeded ``--quiet-load`` before the first timed block,
or ``--quiet-load`` + 2 (this benchmark's own 2 processes) before a later one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))

from dapper_venv import find_dapper_python, run_side

from benchmarks.common import (
    add_output_args,
    load_average,
    md_table,
    output_path,
    provenance,
    write_section,
)

HERE = Path(__file__).resolve().parent
SIDE = HERE / "sweep_throughput_dapper_side.py"
SECTION = "sweep-throughput"
BAR = 20.0  # issue 16: vectorised sweep throughput >= 20x DAPPER's on the same 2 cores


@dataclass
class Case:
    key: str
    title: str
    preset: str
    model: str  # DAPPER side: "lorenz63" | "lorenz96"
    method: str  # "ETKF" | "LETKF"
    N: int
    dt_obs: float
    cycles: int
    burn_in_time: float
    loc_rad: float | None = None
    result: dict = field(default_factory=dict)

    @property
    def burn_in(self) -> float:
        """Model time not scored: ``burn_in_time``, or the first 20 % of a run shorter than twice that."""
        total = self.cycles * self.dt_obs
        return self.burn_in_time if self.burn_in_time < 0.5 * total else round(0.2 * total, 6)

    def overrides(self, infl: float, threads: int) -> list[str]:
        out = [f"method.name={self.method.lower()}", f"method.params.N={self.N}", f"method.params.infl={infl}"]
        if self.loc_rad is not None:
            out.append(f"method.params.loc_rad={self.loc_rad}")
        return [*out, f"cycles={self.cycles}", f"burn_in={self.burn_in}", f"threads={threads}"]


def make_cases(args) -> list[Case]:
    c63 = args.cycles_l63 or (20 if args.quick else 200)
    c96 = args.cycles_l96 or (20 if args.quick else 150)
    # burn-in: L63 the preset's 16 time units (64 cycles); L96 2.5 (50 cycles)
    cases = [
        Case("l63-etkf", "L63 sakov2012, ETKF N=10", "lorenz63/sakov2012", "lorenz63", "ETKF", 10, 0.25, c63, 16.0),
        Case("l96-etkf", "L96 sakov2008, ETKF N=20", "lorenz96/sakov2008", "lorenz96", "ETKF", 20, 0.05, c96, 2.5),
        Case("l96-letkf", "L96 sakov2008, LETKF N=10, loc_rad 4", "lorenz96/sakov2008", "lorenz96", "LETKF", 10,
             0.05, c96, 2.5, loc_rad=4.0),
    ]
    return [c for c in cases if not args.cases or c.key in args.cases]


# ----------------------------------------------------------------------------- hybrida


def configs(case: Case, seeds: list[int], infls: list[float], threads: int) -> list:
    """The sweep's configs, seed-major (seed, then inflation), as the DAPPER side orders them."""
    from hybrida.experiment.config import load_config

    return [
        load_config(case.preset, overrides=case.overrides(i, threads)).model_copy(update={"seed": s})
        for s in seeds
        for i in infls
    ]


def label(variant: str) -> str:
    """Column label of a vectorised variant: ``"2"`` -> 2 thr., ``"2x1"`` -> 2 proc. × 1 thr."""
    procs, _, threads = variant.rpartition("x")
    return f"{procs} proc. × {threads} thr." if procs else f"{threads} thr."


def _vectorized_in_processes(cfgs: list, procs: int) -> list[dict]:
    """``run_vectorized`` on ``procs`` consecutive slices of ``cfgs``, one forked process each.

    Exactly what ``hybrida sweep --vectorize --workers procs`` does with one group of points.
    """
    from hybrida.experiment.sweep import _run_parts, _vectorized_parts

    return _run_parts(_vectorized_parts(cfgs, procs), progress=False)


def run_hybrida(case: Case, seeds: list[int], infls: list[float], variants: list[str], subset: int,
                repeat: int = 1) -> dict:
    """Wall seconds of the vectorised sweep per variant ("T": T threads, "PxT": P processes), and one by one.

    Each vectorised variant runs ``repeat`` times (interleaved with the other variants); its wall and
    CPU seconds are the medians (a single ~1-s run moves by ±20% with the load).
    """
    from hybrida.experiment.runner import run_experiment
    from hybrida.experiment.vectorized import run_vectorized

    warm = replace(case, cycles=4, result={})  # imports and caches (L96 spin-up) out of the timings
    run_vectorized(configs(warm, seeds[:1], infls[:2], 1))
    run_experiment(configs(warm, seeds[:1], infls[:1], 1)[0], None, progress=False)
    out: dict = {"vectorized": {}, "load_before": {}}
    times: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    for rep in range(max(1, repeat)):
        for variant in variants:
            procs, _, threads = variant.rpartition("x")
            cfgs = configs(case, seeds, infls, int(threads))
            out["load_before"].setdefault(f"vec{variant}", load_average())
            t0, c0 = time.perf_counter(), time.process_time()
            summaries = _vectorized_in_processes(cfgs, int(procs)) if procs else run_vectorized(cfgs)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0  # cpu: this process only
            times[variant].append((wall, cpu))
            out["vectorized"][variant] = {
                "wall_s": statistics.median(w for w, _ in times[variant]),
                "cpu_s": statistics.median(c for _, c in times[variant]),
                "wall_s_all": [w for w, _ in times[variant]],
                "runs": [{"seed": c.seed, "infl": c.method.params["infl"], "rmse_a": s["rmse_a"],
                          "diverged": bool(s["diverged"])} for c, s in zip(cfgs, summaries)],
            }
            print(f"hybrida: {case.key} vectorised, {label(variant)}, run {rep + 1}: {wall:.2f} s", flush=True)
    cfgs = configs(case, seeds, infls, 1)[:subset]
    out["load_before"]["serial"] = load_average()
    t0, c0 = time.perf_counter(), time.process_time()
    alone = [run_experiment(c, None, progress=False).summary for c in cfgs]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    vec = next(iter(out["vectorized"].values()))["runs"][: len(cfgs)]
    diffs = [abs(a["rmse_a"] - v["rmse_a"]) for a, v in zip(alone, vec) if math.isfinite(a["rmse_a"])]
    out["serial"] = {"wall_s": wall, "cpu_s": cpu, "n": len(cfgs), "max_abs_diff_vs_vectorized": max(diffs, default=math.nan)}
    print(f"hybrida: {case.key} one by one, {len(cfgs)} runs: {wall:.2f} s", flush=True)
    return out


# ----------------------------------------------------------------------------- DAPPER


def reference_state(case: Case) -> list[float] | None:
    """L96: hybrida's spun-up reference state, the mean of DAPPER's X0 too (its own e_0 is off the attractor)."""
    if case.model != "lorenz96":
        return None  # L63: both use x* = (1.509, -1.531, 25.46)
    from hybrida.models import Lorenz96

    return Lorenz96(n=40, F=8.0, dt=0.05).initial_state().tolist()


def run_dapper(cases: list[Case], seeds: list[int], infls: list[float], tmp: Path, args) -> tuple[dict | None, str]:
    """Both DAPPER launches (mp=2, then serial) of every case, in one DAPPER-venv process."""
    py, why = find_dapper_python(args, log_failures=True)
    if py is None:
        return None, why
    spec = [
        {"name": f"{c.key}:{mp}", "model": c.model, "method": c.method, "N": c.N, "loc_rad": c.loc_rad,
         "seeds": seeds, "infls": infls, "cycles": c.cycles, "burn_in": c.burn_in, "mp": mp,
         "x0": reference_state(c)}
        for c in cases
        for mp in (2, 0)
    ]
    print(f"dapper: {len(spec)} launches of {len(seeds) * len(infls)} experiments in {py}", flush=True)
    load0 = load_average()
    res, why = run_side(py, SIDE, spec, tmp, "sweep", 1, args.dapper_timeout)
    if res is None:
        return None, why
    by_name = {d["name"]: d for d in res["cases"]}
    for c in cases:
        c.result["dapper"] = {mp: by_name.get(f"{c.key}:{mp}", {"error": "not run"}) for mp in ("2", "0")}
    res["load_before"] = load0
    return res, ""


# ----------------------------------------------------------------------------- report


def _median_band(values: list[float]) -> tuple[float, float]:
    """Median of the finite values and its seed-noise standard error, 1.2533 * std / sqrt(n)."""
    v = np.asarray([x for x in values if math.isfinite(x)])
    if v.size == 0:
        return math.nan, math.nan
    se = 1.2533 * v.std(ddof=1) / math.sqrt(v.size) if v.size > 1 else math.nan
    return float(np.median(v)), float(se)


def _s(v) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.1f}"


def _x(num, den) -> str:
    return "—" if not num or not den else f"{num / den:.1f}×"


def timing_rows(cases: list[Case], n_runs: int, thread_list: list[int]) -> list[list[str]]:
    rows = []
    for c in cases:
        h, d = c.result.get("hybrida", {}), c.result.get("dapper", {})
        d2, d0 = d.get("2", {}).get("wall_s"), d.get("0", {}).get("wall_s")
        vec = {t: h.get("vectorized", {}).get(t, {}).get("wall_s") for t in thread_list}
        cpu_d0 = d.get("0", {}).get("cpu_s")
        cpu_v = h.get("vectorized", {}).get(thread_list[0], {}).get("cpu_s")
        ser = h.get("serial", {})
        ser64 = ser["wall_s"] * n_runs / ser["n"] if ser.get("n") else None
        best = min((v for v in vec.values() if v), default=None)  # one process, or `sweep --workers 2`'s two
        met = "—" if not best or not d2 else ("met" if d2 / best >= BAR else "missed")
        rows.append([
            c.title, f"{c.cycles} ({round(c.burn_in / c.dt_obs)})", _s(d0), _s(d2),
            *[_s(vec[t]) for t in thread_list], _s(ser64),
            *[_x(d2, vec[t]) for t in thread_list], _x(d0, vec[thread_list[0]]),
            _x(d2, ser64), _x(cpu_d0, cpu_v), _x(cpu_d0 / 2 if cpu_d0 else None, cpu_v), met,
        ])
    return rows


def rmse_rows(cases: list[Case], infls: list[float], thread_list: list[int]) -> list[list[str]]:
    rows = []
    for c in cases:
        h = c.result.get("hybrida", {}).get("vectorized", {}).get(thread_list[0], {}).get("runs", [])
        d = c.result.get("dapper", {}).get("2", {}).get("runs", [])
        for infl in infls:
            hm, hs = _median_band([r["rmse_a"] for r in h if abs(r["infl"] - infl) < 1e-9])
            dm, ds = _median_band([r["rmse_a"] for r in d if abs(r["infl"] - infl) < 1e-9])
            nd_h = sum(1 for r in h if abs(r["infl"] - infl) < 1e-9 and not math.isfinite(r["rmse_a"]))
            nd_d = sum(1 for r in d if abs(r["infl"] - infl) < 1e-9 and not math.isfinite(r["rmse_a"]))
            z = abs(hm - dm) / math.hypot(hs, ds) if math.isfinite(hm + dm + hs + ds) and hs + ds > 0 else math.nan
            verdict = "—" if not math.isfinite(z) else ("yes" if z <= 2.0 else "no")
            rows.append([
                c.title, f"{infl:g}", f"{dm:.3f} ± {ds:.3f}" if math.isfinite(dm) else "—",
                f"{hm:.3f} ± {hs:.3f}" if math.isfinite(hm) else "—", f"{nd_d} / {nd_h}",
                "—" if not math.isfinite(z) else f"{z:.1f}", verdict,
            ])
    return rows


def build_section(cases, args, seeds, infls, thread_list, loads, dapper_version, notes) -> str:
    n_runs = len(seeds) * len(infls)
    # the first reading is before anything of ours runs; the later ones include up to 2 of our own processes
    vals = list(loads.values())
    worst = max(vals, default=math.nan)
    quiet = bool(vals) and vals[0] <= args.quiet_load and all(v <= args.quiet_load + 2 for v in vals[1:])
    first = f"1-min load {vals[0]:.1f} at the start" if vals else "load unknown"
    state = f"quiet machine, {first}" if quiet else f"contended, load up to {worst:.1f}"
    tcols = [f"hybrida vectorised {label(t)} s" for t in thread_list]
    header = ["sweep", "cycles (burn-in)", "DAPPER serial s", "DAPPER mp=2 s", *tcols,
              f"hybrida one by one s (from {args.subset} runs)",
              *[f"throughput ×, vec {label(t)} / DAPPER mp=2" for t in thread_list],
              f"×, vec {label(thread_list[0])} / DAPPER serial",
              "×, hybrida one by one / DAPPER mp=2",
              f"CPU-s ×, DAPPER serial / vec {label(thread_list[0])}",
              f"CPU-s ×, DAPPER serial ÷ 2 / vec {label(thread_list[0])}", f"bar ≥{BAR:g}× vs mp=2"]
    lines = [
        f"## Sweep throughput: {n_runs}-run seed × inflation sweeps, hybrida vectorised vs DAPPER ({state})",
        "",
        "Written by `benchmarks/peers/sweep_throughput.py`; do not edit between the markers.",
        (f"Each sweep is {len(seeds)} seeds × inflations {', '.join(f'{i:g}' for i in infls)} = {n_runs} twin "
        "experiments, timed whole (building truth, observations and ensembles, cycling, time-averaged "
        "scores). hybrida: `run_vectorized` (one process, one tensor program for all runs) with 1 and 2 torch "
        f"threads, and (2 proc.) its two halves in 2 forked processes of 1 thread, each the median of "
        f"{args.repeat} runs; `run_experiment` run by run "
        "(1 thread) on a subset, scaled to all runs. DAPPER: its own "
        "`xps.launch(HMM, save_as, mp=2)` (2 worker processes, numpy 1 thread each, results pickled) and "
        "`xps.launch(HMM)` in one process with OMP_NUM_THREADS=1, on its sakov2012 / sakov2008 HMMs. "
        "throughput × = DAPPER wall ÷ hybrida wall (> 1: hybrida faster); the bar compares the fastest "
        "vectorised variant with DAPPER mp=2, both on the same 2 cores: one process with 1 or 2 threads, or "
        "(2 proc.) two processes of 1 thread as `hybrida sweep --vectorize --workers 2` runs a group, against "
        "DAPPER's 2 worker processes. CPU-s × compares process CPU seconds "
        "(less sensitive to other load) of the two single-process runs; CPU-s × with DAPPER serial ÷ 2 is the bar's "
        "load-insensitive proxy: DAPPER's work spread perfectly over 2 cores, against hybrida's 1-thread CPU seconds."),
        "",
        *md_table(header, timing_rows(cases, n_runs, thread_list)),
        "",
        ("rmse_a (mean analysis RMSE after burn-in) per inflation: median over seeds ± its seed-noise "
        "standard error (1.25·std/√n). The frameworks simulate different truths from their seeds, so the "
        "medians agree statistically; z = |Δ median| / combined error, agree when z ≤ 2. "
        "Diverged (non-finite) runs are left out of the medians."),
        "",
        *md_table(["sweep", "infl", "DAPPER median", "hybrida median", "diverged D / h", "z", "agree"],
                  rmse_rows(cases, infls, thread_list)),
        "",
    ]
    checks = [f"{c.key} {c.result['hybrida']['serial']['max_abs_diff_vs_vectorized']:.1e}"
              for c in cases if "serial" in c.result.get("hybrida", {})]
    extra = {
        "load_average_before_timed_blocks": ", ".join(f"{k} {v:.1f}" for k, v in loads.items())
        + " (after the first: including this benchmark's own recent processes)",
        "DAPPER": dapper_version or "not run",
        "vectorised_vs_one_by_one_rmse_a": "max |Δ| " + "; ".join(checks),
    }
    threads = (f"hybrida vectorised {', '.join(label(t) for t in thread_list)}, one by one 1 thr.; "
               "DAPPER 1 numpy thread per process (mp=2: 2 processes)")
    lines += provenance(__file__, threads, sys.argv[1:], **extra)
    lines += [f"- **Note:** {n}" for n in notes]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles-l63", type=int, default=None, help="L63 cycles per run (default 200)")
    p.add_argument("--cycles-l96", type=int, default=None, help="L96 cycles per run (default 150)")
    p.add_argument("--seeds", type=int, default=16, help="seeds per inflation (1..SEEDS)")
    p.add_argument("--infls", default="1.0,1.02,1.05,1.1", help="comma-separated inflations")
    p.add_argument("--threads", default="1,2,2x1",
                   help="vectorised variants: T (one process, T torch threads), PxT (P processes, T threads each)")
    p.add_argument("--subset", type=int, default=8, help="runs timed one by one (scaled to all)")
    p.add_argument("--repeat", type=int, default=5,
                   help="runs of each vectorised variant; the table gives the median (DAPPER's sweeps run once)")
    p.add_argument("--cases", nargs="*", default=None, help="l63-etkf l96-etkf l96-letkf (default all)")
    p.add_argument("--quick", action="store_true", help="20 cycles: a smoke run")
    p.add_argument("--skip-dapper", action="store_true", help="hybrida only")
    p.add_argument("--quiet-load", type=float, default=2.5, help="1-min load above which the table says contended")
    p.add_argument("--dapper-version", default=None, help="DAPPER release (default: as dapper_venv.py)")
    p.add_argument("--dapper-python", default=None, help="interpreter for the DAPPER venv")
    p.add_argument("--dapper-timeout", type=float, default=1800.0)
    p.add_argument("--json", default=None, help="also write all results (per-run rmse_a) here")
    add_output_args(p, SECTION)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    seeds = list(range(1, args.seeds + 1))
    infls = [float(x) for x in args.infls.split(",")]
    thread_list = args.threads.split(",")
    cases = make_cases(args)
    notes: list[str] = []
    loads: dict[str, float] = {}
    dapper_version = None
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hybrida-sweep-tp-") as tmpdir:
        if args.skip_dapper:
            notes.append("DAPPER skipped (--skip-dapper).")
        else:
            res, why = run_dapper(cases, seeds, infls, Path(tmpdir), args)
            if res is not None:
                dapper_version = f"{res['dapper_version']} (Python {res['python']}, numpy {res.get('numpy')})"
                loads["DAPPER"] = res["load_before"]
            if why:
                notes.append(f"DAPPER columns empty: {why}")
                print(f"dapper: {why}", file=sys.stderr, flush=True)
    for c in cases:
        for mp, d in c.result.get("dapper", {}).items():
            if "error" in d:
                notes.append(f"{c.title}, DAPPER mp={mp}: {d['error']}")
            elif d.get("n_results") != len(seeds) * len(infls):
                notes.append(f"{c.title}, DAPPER mp={mp}: {d.get('n_results')} results")
        try:
            c.result["hybrida"] = run_hybrida(c, seeds, infls, thread_list, args.subset, args.repeat)
            loads.update({f"{c.key} {k}": v for k, v in c.result["hybrida"]["load_before"].items()})
        except Exception as err:  # noqa: BLE001 - report it in the section
            notes.append(f"{c.title}, hybrida: {type(err).__name__}: {err}")
    notes.append(f"whole benchmark {time.perf_counter() - t_all:.0f} s wall, {datetime.datetime.now(datetime.UTC):%H:%M} UTC end")
    body = build_section(cases, args, seeds, infls, thread_list, loads, dapper_version, notes)
    print(body)
    out = output_path(args)
    if out is not None:
        write_section(SECTION, body, out)
        print(f"wrote section {SECTION!r} of {out}")
    if args.json:
        Path(args.json).write_text(json.dumps([{"key": c.key, **c.result} for c in cases], default=str))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
