"""Lorenz-96 and Lorenz-63 side by side: hybrida's ETKF/LETKF/PF against DAPPER's, on the same data.

Run with the project's Python (``.venv/bin/python benchmarks/peers/dapper_compare.py``).

* The truth and the observations of each state size are made once (with
  hybrida's :class:`~hybrida.models.Lorenz96`; plain NumPy RK4 when hybrida's
  model cannot be imported) and saved to an ``.npz`` together with the initial
  ensemble, so that both frameworks assimilate the *same* observations of the
  *same* truth from the *same* initial ensemble.
* DAPPER is never imported here and none of its code is in this repository:
  the script creates a separate virtual environment ``benchmarks/.dapper-venv``
  (git-ignored), ``pip install``\\ s a pinned DAPPER from PyPI there (1.8.1 when a
  Python >= 3.12 is found on PATH or in pyenv, else 1.7.1, the last release
  for Python 3.10/3.11) and runs
  ``benchmarks/peers/dapper_side.py`` in it as a subprocess, which reads the ``.npz``,
  builds DAPPER's Sakov (2008) L96 HMM around it and times ``xp.assimilate``.
* hybrida's ETKF/LETKF then run through :func:`hybrida.cycle.run_cycle` on the
  same arrays in this process; the loop, including the per-cycle scores the
  cycle computes (as DAPPER's ``assimilate`` computes its statistics), is timed,
  and so is a bare forecast + analysis loop (the only one at n=10^6, where
  run_cycle's CRPS alone takes seconds).
* The table (rmse_a after burn-in of both, s/cycle of both, speed-up) is
  printed and written to ``docs/benchmarks.md`` between the markers
  ``<!-- dapper:start -->`` and ``<!-- dapper:end -->``; the rest of that file
  is left alone.

Setup (Sakov & Oke 2008 as in DAPPER's ``mods.Lorenz96.sakov2008``): F=8,
dt=0.05, every variable observed at every step with R = I; ETKF N=28,
infl=1.02 (DAPPER ``EnKF('Sqrt')``); LETKF N=10, infl=1.02, loc_rad=4 (DAPPER
``LETKF``, Gaspari-Cohn taper, state batches of 2 grid points as in
sakov2008). hybrida-only: LETKF at n=10^6, N=20. Lorenz-63 rows (issue 16, part 2; DAPPER
``mods.Lorenz63.sakov2012``: dt 0.01, 25 steps per analysis, all observed, R = 2I): ETKF N=10
(infl 1.02) and the bootstrap PF N=200 (reg 2.4, NER 0.3; DAPPER ``PartFilt``), the DAPPER half
in ``benchmarks/peers/dapper_side_l63.py``; ``--cycles-l63``, ``--skip-l63``, ``--skip-l96``.

Flags: ``--cycles`` (n=40 cycles), ``--quick`` (smoke run), ``--skip-dapper``,
``--skip-huge`` (no n=10^6 case), ``--output`` (Markdown file, ``-`` for none),
``--threads`` (default 1 for both: on 2 cores busy with other work, multi-threaded
torch slows down many-fold; 0 = the libraries' defaults; -1 = hybrida picks per
case as its runner does, one thread for small states and all cores for large ones,
while DAPPER keeps its libraries' defaults).
If DAPPER cannot be installed or run, the table keeps the hybrida columns and
says why in a note.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))

from dapper_venv import (
    DAPPER_VERSION,
    DAPPER_VERSION_PY312,
    find_dapper_python,
    run_dapper,
    run_side,
    section_footer,
)
from l96_cases import DT, OBS_VAR, Case, F, make_cases, prepare_data

from benchmarks.common import DOC, command, machine, write_section

DEFAULT_OUTPUT = DOC


# ----------------------------------------------------------------------------- hybrida


def _make_method(c: Case):
    from hybrida.assimilation.ensemble.etkf import ETKF

    if c.method == "ETKF":
        return ETKF(N=c.N, infl=c.infl)
    from hybrida.assimilation.ensemble.letkf import LETKF

    return LETKF(N=c.N, loc_rad=c.loc_rad, infl=c.infl)


def run_hybrida_case(c: Case) -> dict:
    import torch

    from hybrida.cycle import run_cycle
    from hybrida.models import Lorenz96
    from hybrida.observations.base import Observation
    from hybrida.observations.errors import DiagonalError

    if c.auto_threads:
        from hybrida.experiment.runner import SMALL_PROBLEM

        torch.set_num_threads(1 if c.n * 100 < SMALL_PROBLEM else (os.cpu_count() or 1))
    data = np.load(c.npz)
    truth = torch.from_numpy(data["xx"])
    yy = torch.from_numpy(data["yy"])
    E0 = torch.from_numpy(data["E0"])
    n = truth.shape[1]
    model = Lorenz96(n=n, F=F, dt=DT)
    method = _make_method(c)
    # Identity observations of every variable; built once, shared by all cycles
    # (no dense (p, n) matrix: at n=10^6 it could not be stored).
    error = DiagonalError(torch.full((n,), OBS_VAR, dtype=torch.float64))
    locations = torch.arange(n, dtype=torch.float64)

    def identity(x):
        return x

    observations = [
        Observation(y=yy[k], operator=identity, error=error, locations=locations)
        for k in range(c.cycles)
    ]
    walls, cpus, walls_bare = [], [], []
    with torch.no_grad():
        for _ in range(c.repeat):  # deterministic filters: the same result every time
            # 1) the public loop: run_cycle, with the scores it computes every cycle
            if c.full_loop:
                method = _make_method(c)
                rmse = []
                t0, c0 = time.perf_counter(), time.process_time()
                for record, _state in run_cycle(model, method, E0.clone(), truth, observations, 1):
                    rmse.append(record.rmse_a)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            # 2) the filter alone: forecast + analysis (+ the analysis RMSE), nothing else
            method = _make_method(c)
            state = E0.clone()
            rmse_bare = []
            t0 = time.perf_counter()
            for k in range(1, c.cycles + 1):
                state = method.forecast(model, state, 1, (k - 1) * DT)
                state = method.analyse(state, observations[k - 1], k * DT)
                rmse_bare.append(float(((state.mean(0) - truth[k]) ** 2).mean().sqrt()))
            walls_bare.append(time.perf_counter() - t0)
    if not c.full_loop:
        rmse = rmse_bare
    wall, wall_bare = (min(walls) if walls else None), min(walls_bare)
    tail = np.asarray(rmse[c.burn_in :])
    return {
        "rmse_a": float(tail.mean()) if tail.size else float("nan"),
        "rmse_a_series": rmse,
        "wall_s": wall,
        "wall_s_all": walls,
        "s_per_cycle": None if wall is None else wall / c.cycles,
        "cpu_s_per_cycle": min(cpus) / c.cycles if cpus else None,
        "filter_wall_s": wall_bare,
        "filter_s_per_cycle": wall_bare / c.cycles,
        "filter_rmse_a": float(np.mean(rmse_bare[c.burn_in :])) if rmse_bare[c.burn_in :] else None,
        "description": f"{type(method).__name__}({', '.join(f'{k}={v}' for k, v in _params(method).items())})",
    }


def _params(method) -> dict:
    out = {}
    for k in ("N", "infl", "loc_rad", "taper"):
        if hasattr(method, k):
            out[k] = getattr(method, k)
    return out


def run_hybrida(cases: list[Case]) -> str:
    try:
        _make_method(Case("probe", "LETKF", 40, 2, 1, 0, loc_rad=1.0))
        _make_method(Case("probe", "ETKF", 40, 2, 1, 0))
    except Exception as err:  # noqa: BLE001 - the methods are not there (yet): say so in the table
        return f"hybrida's ETKF/LETKF could not be constructed: {type(err).__name__}: {err}"
    for c in cases:
        print(f"hybrida: {c.name}, {c.cycles} cycles", flush=True)
        try:
            c.result["hybrida"] = run_l63_case(c) if isinstance(c, L63Case) else run_hybrida_case(c)
        except Exception as err:  # noqa: BLE001 - report in the table, go on with the next case
            traceback.print_exc()
            c.result["hybrida"] = {"error": f"{type(err).__name__}: {err}"}
    return ""


# ----------------------------------------------------------------------------- Lorenz-63 (sakov2012)

#: DAPPER ``mods.Lorenz63.sakov2012``: RK4 step dt, steps per analysis, R = OBS_VAR I (all 3 observed)
L63_DT, L63_DKO, L63_OBS_VAR = 0.01, 25, 2.0
L63_SIDE = Path(__file__).resolve().parent / "dapper_side_l63.py"


@dataclass
class L63Case(Case):
    """A Lorenz-63 sakov2012 row: the ETKF, or the bootstrap PF with DAPPER ``PartFilt``'s ``reg``, ``NER``."""

    reg: float = 0.0
    NER: float = 1.0


def make_l63_cases(args) -> list[L63Case]:
    """ETKF N=10 (infl 1.02) and bootstrap PF N=200 (reg 2.4, NER 0.3) on sakov2012, 16 time units burn-in."""
    if args.skip_l63:
        return []
    K = args.cycles_l63 or (100 if args.quick else 1000)
    burn = min(64, K // 5)
    common = {"target": "≥ 2× faster", "target_speedup": 2.0, "repeat": max(1, args.repeat)}
    return [
        L63Case("L63 sakov2012, ETKF N=10", "ETKF", 3, 10, K, burn, infl=1.02, **common),
        L63Case("L63 sakov2012, bootstrap PF N=200 (reg 2.4, NER 0.3)", "PF", 3, 200, K, burn,
                reg=2.4, NER=0.3, **common),
    ]


def prepare_l63_data(cases: list[L63Case], tmp: Path, seed: int) -> dict:
    """One truth (every model step) and observation set; one initial ensemble per case, all in ``.npz``.

    Truth from x* + N(0, 2 I) (x* = (1.509, -1.531, 25.46)), observed every 25 steps with
    R = 2 I; initial ensembles x* + N(0, 2 I), as the preset and DAPPER's X0.
    """
    import torch

    from hybrida.models import Lorenz63
    from hybrida.models.lorenz63 import X_STAR

    K = max(c.cycles for c in cases)
    rng = np.random.default_rng(seed + 63)
    x0 = np.asarray(X_STAR) + np.sqrt(2.0) * rng.standard_normal(3)
    with torch.no_grad():
        xx = Lorenz63(dt=L63_DT).forecast(torch.from_numpy(x0), K * L63_DKO, trajectory=True).numpy()
    yy = xx[L63_DKO::L63_DKO][:K] + np.sqrt(L63_OBS_VAR) * rng.standard_normal((K, 3))
    for c in cases:
        E0 = np.asarray(X_STAR) + np.sqrt(2.0) * np.random.default_rng(seed + c.N).standard_normal((c.N, 3))
        c.npz = str(tmp / f"l63_{c.method}_N{c.N}.npz")
        np.savez(c.npz, xx=xx[: c.cycles * L63_DKO + 1], yy=yy[: c.cycles], E0=E0)
    return {"source": "hybrida.models.Lorenz63 from x* + N(0, 2I)", "cycles": K}


def run_l63_dapper(cases: list[L63Case], tmp: Path, args) -> tuple[dict | None, str]:
    """The L63 rows in DAPPER (``dapper_side_l63.py`` in the DAPPER venv)."""
    py, why = find_dapper_python(args, log_failures=True)
    if py is None:
        return None, why
    spec = [
        {"name": c.name, "npz": c.npz, "method": c.method, "N": c.N, "infl": c.infl, "reg": c.reg, "NER": c.NER,
         "dt": L63_DT, "dko": L63_DKO, "obs_var": L63_OBS_VAR, "burn_in": c.burn_in, "cycles": c.cycles,
         "repeat": c.repeat, "seed": args.seed}
        for c in cases
    ]
    res, why = run_side(py, L63_SIDE, spec, tmp, "dapper_l63", args.threads, args.dapper_timeout)
    if res is None:
        return None, why
    by_name = {d["name"]: d for d in res["cases"]}
    for c in cases:
        c.result["dapper"] = by_name.get(c.name, {"error": "not run (DAPPER side stopped early)"})
    return res, ""


def run_l63_case(c: L63Case) -> dict:
    """hybrida on the L63 row's data: ``run_cycle`` (with its per-cycle scores), then forecast + analysis alone."""
    import torch

    from hybrida.assimilation.base import ParticleState, state_mean
    from hybrida.assimilation.ensemble.etkf import ETKF
    from hybrida.assimilation.particle.bootstrap import BootstrapPF
    from hybrida.cycle import run_cycle
    from hybrida.models import Lorenz63
    from hybrida.observations.base import Observation
    from hybrida.observations.errors import DiagonalError

    data = np.load(c.npz)
    truth = torch.from_numpy(data["xx"][::L63_DKO][: c.cycles + 1].copy())
    yy, E0 = torch.from_numpy(data["yy"]), torch.from_numpy(data["E0"])
    model = Lorenz63(dt=L63_DT)
    error = DiagonalError(torch.full((3,), L63_OBS_VAR, dtype=torch.float64))
    locations = torch.arange(3, dtype=torch.float64)
    observations = [
        Observation(y=yy[k], operator=lambda x: x, error=error, locations=locations) for k in range(c.cycles)
    ]

    def fresh():
        if c.method == "ETKF":
            return ETKF(N=c.N, infl=c.infl), E0.clone()
        w = torch.full((c.N,), 1.0 / c.N, dtype=torch.float64)
        return BootstrapPF(N=c.N, reg=c.reg, NER=c.NER), ParticleState(E0.clone(), w)

    walls, cpus, walls_bare, means = [], [], [], []
    with torch.no_grad():
        for r in range(c.repeat):  # the PF draws its resampling from seed r; the ETKF repeats itself
            method, state = fresh()
            gen = torch.Generator().manual_seed(r)
            t0, c0 = time.perf_counter(), time.process_time()
            rmse = [rec.rmse_a for rec, _ in run_cycle(model, method, state, truth, observations, L63_DKO,
                                                       generator=gen)]
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            means.append(float(np.mean(rmse[c.burn_in :])))
            method, state = fresh()
            t0 = time.perf_counter()
            for k in range(1, c.cycles + 1):
                state = method.forecast(model, state, L63_DKO, (k - 1) * L63_DKO * L63_DT)
                state = method.analyse(state, observations[k - 1], k * L63_DKO * L63_DT, gen)
                float(((state_mean(state) - truth[k]) ** 2).mean().sqrt())
            walls_bare.append(time.perf_counter() - t0)
    return {
        "rmse_a": float(np.mean(means)),  # mean over the repeats (PF: over resampling seeds)
        "rmse_a_runs": means,
        "rmse_a_series": rmse,
        "wall_s": min(walls),
        "wall_s_all": walls,
        "s_per_cycle": min(walls) / c.cycles,
        "cpu_s_per_cycle": min(cpus) / c.cycles,
        "filter_wall_s": min(walls_bare),
        "filter_s_per_cycle": min(walls_bare) / c.cycles,
        "description": repr(method),
    }


# ----------------------------------------------------------------------------- report


def _fmt(v, spec):
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def _s(v):
    if v is None:
        return "—"
    return f"{v * 1e3:.2f} ms" if v < 1.0 else f"{v:.2f} s"


def agreement_notes(cases: list[Case], tol: float = 1e-6) -> list[str]:
    """For the global ETKF (the same deterministic algorithm in both): up to which cycle the analysis RMSEs agree to ``tol``."""
    out = []
    for c in cases:
        d = c.result.get("dapper", {}).get("rmse_a_series")
        h = c.result.get("hybrida", {}).get("rmse_a_series")
        if c.method != "ETKF" or not d or not h:
            continue
        d, h = np.asarray(d[-len(h) :]), np.asarray(h)
        bad = np.flatnonzero(~(np.abs(d - h) <= tol))
        if bad.size == 0:
            out.append(f"{c.name}: per-cycle rmse_a of the two agree to {tol:g} over all {len(h)} cycles")
        else:
            out.append(f"{c.name}: per-cycle rmse_a of the two agree to {tol:g} over cycles 1-{bad[0]} of {len(h)}, "
                       "then drift apart (same algorithm; rounding differences grow on the chaotic attractor, so "
                       "long-run means differ like seeds)")
    return out


def build_table(cases: list[Case], meta: dict, notes: list[str]) -> str:
    lines = [
        "## L96 speed versus DAPPER",
        "",
        "Written by `benchmarks/peers/dapper_compare.py`; do not edit between the markers.",
        (
            "Both frameworks get the same truth, observations and initial ensemble. rmse_a is the "
            "mean analysis RMSE after burn-in. s/cycle is the wall time of the whole assimilation "
            "loop divided by the number of cycles: DAPPER's `xp.assimilate` and hybrida's "
            "`run_cycle`, each with the statistics it computes every cycle. speed-up = DAPPER "
            "s/cycle ÷ hybrida s/cycle. *hybrida filter s/cycle* times hybrida's forecast + "
            "analysis alone, without run_cycle's per-cycle scores (CRPS, rank, spread); the "
            "n=10^6 case is timed only so (its rmse_a comes from that loop), and its target is "
            "checked on it. The n=40 and L63 timings are the fastest of several runs; CPU-s speed-up "
            "compares process CPU seconds of the same loops (less sensitive to other load on the "
            "machine). L63 rows: DAPPER's `mods.Lorenz63.sakov2012` (RK4 dt 0.01, 25 steps per "
            "analysis, all 3 variables observed, R = 2I), ETKF = DAPPER `EnKF('Sqrt')`, bootstrap PF = "
            "DAPPER `PartFilt` (systematic resampling when N_eff ≤ NER·N, regularisation jitter reg); the "
            "PF rmse_a is the mean over the repeats' resampling seeds on both sides (not the same draws)."
        ),
        "",
        (
            "| experiment | cycles (burn-in) | DAPPER rmse_a | hybrida rmse_a | DAPPER s/cycle "
            "| hybrida s/cycle | speed-up | CPU-s speed-up | hybrida filter s/cycle | target | met |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        d, h = c.result.get("dapper", {}), c.result.get("hybrida", {})
        ds, hs, hf = d.get("s_per_cycle"), h.get("s_per_cycle"), h.get("filter_s_per_cycle")
        speed = ds / hs if (ds and hs) else None
        dc, hc = d.get("cpu_s_per_cycle"), h.get("cpu_s_per_cycle")
        cpu_speed = f"{dc / hc:.1f}×" if (dc and hc) else "—"
        met = "—"
        if c.target_speedup is not None and speed is not None:
            met = "yes" if speed >= c.target_speedup else "no"
        elif c.target_s_per_cycle is not None and hf is not None:
            met = "yes" if hf < c.target_s_per_cycle else "no"
        d_rmse = "error" if "error" in d else _fmt(d.get("rmse_a"), ".3f")
        h_rmse = "error" if "error" in h else _fmt(h.get("rmse_a"), ".3f")
        lines.append(
            f"| {c.name} | {c.cycles} ({c.burn_in}) | {d_rmse if c.dapper else 'n/a'} | {h_rmse} "
            f"| {_s(ds) if c.dapper else 'n/a'} | {_s(hs)} "
            f"| {_fmt(speed, '.1f') + '×' if speed else '—'} | {cpu_speed} | {_s(hf)} | {c.target} | {met} |"
        )
    lines.append("")
    notes = notes + agreement_notes(cases)
    lines += section_footer(cases, meta, notes)
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--cycles", type=int, default=None, help="cycles of the n=40 cases (default 2000)"
    )
    p.add_argument("--cycles-4000", type=int, default=None, help="cycles at n=4000 (default 30)")
    p.add_argument("--cycles-huge", type=int, default=None, help="cycles at n=10^6 (default 5)")
    p.add_argument("--quick", action="store_true", help="small cycle counts: a smoke run")
    p.add_argument("--skip-dapper", action="store_true", help="hybrida only")
    p.add_argument(
        "--huge-n",
        type=int,
        default=None,
        help="state size of the hybrida-only case (default 10^6; 10^5 with --quick)",
    )
    p.add_argument("--skip-huge", action="store_true", help="leave out the n=10^6 case")
    p.add_argument("--cycles-l63", type=int, default=None, help="cycles of the L63 rows (default 1000)")
    p.add_argument("--skip-l63", action="store_true", help="leave out the L63 rows")
    p.add_argument("--skip-l96", action="store_true", help="leave out the L96 rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--output",
        default=str(DEFAULT_OUTPUT),
        help="Markdown file whose DAPPER section is (re)written; '-' writes none",
    )
    p.add_argument(
        "--dapper-version",
        default=None,
        help=f"DAPPER release (default {DAPPER_VERSION_PY312} on Python >= 3.12, found on PATH "
        f"or in pyenv, else {DAPPER_VERSION} on this Python)",
    )
    p.add_argument(
        "--dapper-python",
        default=None,
        help="interpreter for the DAPPER venv (default: a Python >= 3.12 if found, else this "
        "Python's base install)",
    )
    p.add_argument(
        "--dapper-batch",
        type=int,
        default=2,
        help="DAPPER LETKF state batch size (sakov2008 uses 2; 1 = one local "
        "analysis per grid point)",
    )
    p.add_argument("--dapper-timeout", type=float, default=3600.0)
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="timed runs of the n=40 cases (the fastest counts; default 3)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads for both (torch.set_num_threads here; OMP/OpenBLAS/MKL_NUM_THREADS in "
        "DAPPER's process); default 1, 0 = each library's own default, "
        "-1 = hybrida's per-case rule (see hybrida.experiment.runner.torch_threads)",
    )
    p.add_argument("--json", default=None, help="also write all results (per-cycle RMSE too) here")
    args = p.parse_args(argv)

    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    l96 = [] if args.skip_l96 else make_cases(args)
    l63 = make_l63_cases(args)
    cases = [*l63, *l96]
    for c in cases:
        c.auto_threads = args.threads == -1
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hybrida-dapper-") as tmpdir:
        tmp = Path(tmpdir)
        data_info = prepare_data(l96, tmp, args.seed, args.quick)
        l63_info = prepare_l63_data(l63, tmp, args.seed) if l63 else None
        dapper_res = None
        if args.skip_dapper:
            notes.append("DAPPER skipped (--skip-dapper).")
        else:
            for run, todo in ((run_l63_dapper, l63), (run_dapper, l96)):
                if not todo:
                    continue
                try:
                    res, why = run(todo, tmp, args)
                except Exception as err:  # noqa: BLE001 - degrade to a hybrida-only table
                    res, why = None, f"{type(err).__name__}: {err}"
                dapper_res = dapper_res or res
                if why:
                    notes.append(f"DAPPER columns empty: {why}")
                    print(f"dapper: {why}", file=sys.stderr, flush=True)
        why = run_hybrida(cases)
        if why:
            notes.append(why)
            print(f"hybrida: {why}", file=sys.stderr, flush=True)

    import torch

    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{machine()}, torch threads {torch.get_num_threads()}",
        "hybrida": f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {np.__version__}, float64",
        "DAPPER": (
            f"{dapper_res['dapper_version']} on Python {dapper_res['python']}, numpy "
            f"{dapper_res['numpy']}, in `benchmarks/.dapper-venv`; LETKF state batches of "
            f"{args.dapper_batch}"
            if dapper_res
            else "not run"
        ),
        "truth": "; ".join(
            [f"L96 n={n}: {v['source']}, spin-up {v['spinup']} steps" for n, v in data_info.items()]
            + ([f"L63: {l63_info['source']}"] if l63_info else [])
        ),
        "setup": "L96: F=8, dt=0.05, all variables observed every step, R=I; initial ensemble "
        "truth + N(0, I); ETKF infl 1.02; LETKF infl 1.02, loc_rad 4. L63 (sakov2012): dt 0.01, "
        "observed every 25 steps, R=2I; initial ensemble x* + N(0, 2I); ETKF infl 1.02; PF reg 2.4, NER 0.3",
        "timing": (
            f"n=40 and L63 cases: fastest of {max(1, args.repeat)} runs, others one run; threads: "
            + (
                str(args.threads)
                if args.threads > 0
                else "library defaults"
                if args.threads == 0
                else "hybrida per case (1 below n=2000, else all cores), DAPPER library defaults"
            )
            + f"; load average at start {load0:.2f} "
            "(timings on a busy machine are slower and noisier)"
        ),
        "command": f"`{command(__file__, argv)}`",
    }
    table = build_table(cases, meta, notes)
    print()
    print(table)
    if args.output != "-":
        write_section("dapper", table, path=Path(args.output))
        print(f"\nwrote {args.output}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "meta": meta,
                    "notes": notes,
                    "cases": [
                        {
                            "name": c.name,
                            "n": c.n,
                            "N": c.N,
                            "method": c.method,
                            "cycles": c.cycles,
                            "burn_in": c.burn_in,
                            **c.result,
                        }
                        for c in cases
                    ],
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
