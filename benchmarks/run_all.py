"""Run the cheap benchmark set: every script once, shortened, writing nothing to the docs.

    .venv/bin/python benchmarks/run_all.py            # the cheap set, a few minutes on 2 cores
    .venv/bin/python benchmarks/run_all.py --list     # the cheap and the full commands, without running
    .venv/bin/python benchmarks/run_all.py --only scaling learn

Each entry runs in its own process with ``--output -`` (or ``--no-write``), so
``docs/benchmarks.md`` keeps the full-length numbers; the point is that every script still
runs end to end. The DAPPER side of the peer comparisons is skipped (it needs the separate
DAPPER venv that ``benchmarks/peers/dapper_venv.py`` builds); ``--with-dapper`` includes it.
The full set (the commands that wrote docs/benchmarks.md) is listed with ``--list``; what
each costs is in the README and in the docs sections.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Entry:
    group: str
    script: str
    cheap: tuple[str, ...]
    full: str  # arguments of the run that wrote the docs section
    full_cost: str  # its wall time as recorded in the docs


ENTRIES = [
    Entry("reproduce", "reproduce/reproduce.py",
          ("--only", "lorenz96/sakov2008", "--cycles", "600", "--seeds", "1", "--workers", "2"),
          "--seeds 1 2 3 --workers 2", "72 min on 2 workers on a busy machine"),
    Entry("reproduce", "reproduce/envar_case.py", ("--cycles", "300", "--burn-in", "5", "--seeds", "1", "--output", "-"),
          "--tune", "7 min"),
    Entry("reproduce", "reproduce/innovation_stats.py", ("--quick", "--output", "-"), "", "about 2 min"),
    Entry("reproduce", "reproduce/nile.py", ("--output", "-"), "", "about 30 s"),
    Entry("reproduce", "reproduce/enso.py", ("--quick", "--output", "-"), "", "21 s"),
    Entry("scaling", "scaling/letkf_scaling.py", ("--quick", "--skip-huge", "--threads", "1", "--output", "-"),
          "--threads 1,2", "about 5 min (the n = 10^6 rows dominate)"),
    Entry("scaling", "scaling/letkf_interp_accuracy.py",
          ("--cycles", "40", "--burn-in", "10", "--skip-huge", "--output", "-"),
          "--cycles 600 --burn-in 100 --huge-cycles 4", "about 5 min (the exact n = 10^6 cycles dominate)"),
    Entry("scaling", "scaling/fourdvar_cost.py", ("--quick", "--output", "-"), "--cycles 100 --lags 1,2,4,8", "2 min"),
    Entry("scaling", "scaling/cli_large_state.py", ("--sizes", "20000", "--cycles", "3", "--no-write"), "", "about 5 min"),
    Entry("peers", "peers/dapper_compare.py",
          ("--quick", "--skip-huge", "--skip-dapper", "--threads", "1", "--output", "-"),
          "--threads 1", "5-10 min (+ the DAPPER venv, once)"),
    Entry("peers", "peers/ienks_compare.py", ("--quick", "--skip-dapper", "--output", "-"), "", "3 min"),
    Entry("peers", "peers/sweep_throughput.py", ("--quick", "--skip-dapper", "--no-write"), "",
          "about 5.5 min with DAPPER on 2 free cores (quick, no DAPPER: ~20 s)"),
    Entry("peers", "peers/same_truth_compare.py",
          ("--only", "4D-Var lag 1", "--seeds-4dvar", "1", "--cycles", "150", "--skip-dapper", "--output", "-"),
          "--seeds-4dvar 1 2 3 --seeds-enkf 1 ... 24", "about 1 h"),
    Entry("learn", "learn/model_error.py", ("--quick", "--only", "1", "--no-write"), "", "8 min"),
    Entry("learn", "learn/learned_obs_operator.py", ("--quick", "--seeds", "1", "--output", "-"),
          "(and --analyses conventional)", "12 min (+ 5 min)"),
    Entry("learn", "learn/bias_correction.py", ("--quick", "--seeds", "1", "--output", "-"), "", "21 min on a busy machine"),
    Entry("learn", "learn/quality_control.py", ("--quick", "--seeds", "1", "--output", "-"), "", "6 min"),
    Entry("learn", "learn/aivar.py", ("--seeds", "1", "--radiance-seeds", "", "--no-write"), "--seeds 1,2,3",
          "about 1 CPU-min per seed (6 min wall at load 20)"),
    Entry("learn", "learn/cnn_analysis.py", ("--quick", "--seeds", "1", "--no-write"), "--seeds 1,2,3",
          "about 35 min per seed at load 15-24"),
    Entry("learn", "learn/amortised.py", ("--quick", "--seeds", "1", "--no-write"),
          "--out runs/amortised_long --set max_steps=3000 --set max_minutes=100 --set patience=12",
          "about 28-31 CPU-min of training per seed (33 min wall with 2 seeds on 2 idle cores)"),
    Entry("learn", "learn/fourdvarnet.py", ("--quick", "--seeds", "1", "--no-write"), "--seeds 1,2,3",
          "12 min training per seed at load 15-23"),
    Entry("learn", "learn/filter_tuning.py",
          ("--seeds", "0", "--train", "200", "--test", "400", "--epochs", "1", "--no-write"), "", "10 min"),
    Entry("learn", "learn/model_error.py",
          ("--only", "2", "--train2", "160", "--valid2", "80", "--burn2", "10", "--members2", "10",
           "--test-traj2", "2", "--test-len2", "60", "--test-every2", "20", "--epochs2", "2",
           "--fit-time2", "10", "--no-write"),
          "--only 2", "part 2 (Brajard 2021 two-scale) alone, about 5 min"),
    Entry("learn", "learn/surrogate_da.py",
          ("--train", "800", "--valid", "200", "--test", "200", "--time-limit", "15", "--output", "-"),
          "", "8 min"),
    Entry("learn", "learn/brajard2020.py",
          ("--densities", "0.5", "--train", "800", "--valid", "200", "--test", "300", "--epochs", "2",
           "--time-limit", "15", "--starts", "10", "--lead", "60", "--output", "-"),
          "see the brajard2020 section", "reanalysis table 20 min; each loop row 20-30 min"),
    Entry("learn", "learn/surrogate_upper_bound.py",
          ("--train", "1500", "--epochs", "2", "--time-limit", "15", "--etkf-cycles", "150"),
          "--threads 1 --epochs 40 --time-limit 420", "12 min"),
    Entry("learn", "learn/bach2025.py", ("--quick", "--no-write", "--out", "runs/bench_bach2025_quick"),
          "--set epochs=20 --set patience=5 --set max_minutes=12", "about 25-30 min per sigma_y at load 5-7"),
    Entry("learn", "learn/score_da.py", ("--quick", "--no-write", "--out", "runs/score_da_quick"), "--seeds 1",
          "32 min training + 22 min evaluation per seed at load 8"),
    Entry("learn", "learn/latent_da.py", ("--quick", "--seeds", "1", "--no-write", "--out", "runs/latent_quick"),
          "--seeds 1 2 3", "see the latent-da section"),
    Entry("reproduce", "reproduce/qg_4dvar.py", ("--cycles", "2", "--no-write"), "", "about 25 min at load 6"),
    Entry("scaling", "scaling/letkf_flops.py", ("--quick", "--threads", "1", "--output", "-"), "--cycles 1",
          "about 10 min (the n=10^6 eigh rows dominate)"),
    Entry("learn", "learn/qg_emulator.py", ("--quick", "--out", "runs/qg_emulator_quick", "--output", "-"),
          "--seeds 0 --out runs/qg_emulator", "about 37 min per seed at load 5 (reanalysis 13, training 8)"),
    Entry("scaling", "scaling/gpu_letkf.py", ("--quick",), "--cycles 4 --qg-cycles 20",
          "needs a CUDA device; without one it says so and exits 0 at once"),
    Entry("learn", "learn/qg_subgrid.py", ("--quick", "--out", "runs/qg_subgrid_quick", "--output", "-"),
          "--seeds 1 --out runs/qg_subgrid", "about 17 CPU-min per seed (52 min wall at load 5)"),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=None, help="groups or script names to run")
    ap.add_argument("--list", action="store_true", help="print the cheap and full commands and stop")
    ap.add_argument("--with-dapper", action="store_true", help="include the DAPPER side of the peer scripts")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per script")
    args = ap.parse_args(argv)
    todo = [e for e in ENTRIES if not args.only or any(o in (e.group, Path(e.script).stem) for o in args.only)]
    py = sys.executable
    if args.list:
        shown = ".venv/bin/python" if Path(sys.prefix).resolve() == (ROOT / ".venv").resolve() else py
        for e in todo:
            print(f"{e.group:10s} cheap: {shown} benchmarks/{e.script} {' '.join(e.cheap)}")
            print(f"{'':10s} full:  {shown} benchmarks/{e.script} {e.full}  [{e.full_cost}]")
        return 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    results = []
    t_all = time.perf_counter()
    for e in todo:
        cmd = [py, str(ROOT / "benchmarks" / e.script), *e.cheap]
        if args.with_dapper:
            cmd = [a for a in cmd if a != "--skip-dapper"]
        print(f"\n=== {e.group}: benchmarks/{e.script} {' '.join(e.cheap)}", flush=True)
        t0 = time.perf_counter()
        try:
            r = subprocess.run(
                cmd, check=False, cwd=ROOT, env=env, timeout=args.timeout, capture_output=True, text=True
            )
            status = "ok" if r.returncode == 0 else f"exit {r.returncode}"
            tail = (r.stdout + r.stderr).strip().splitlines()[-4:]
        except subprocess.TimeoutExpired:
            status, tail = "timeout", []
        secs = time.perf_counter() - t0
        print("\n".join(f"    {ln}" for ln in tail), flush=True)
        print(f"    -> {status} in {secs:.0f} s", flush=True)
        results.append((e, status, secs))
    print(f"\n{'script':40s} {'status':10s} seconds")
    for e, status, secs in results:
        print(f"{e.script:40s} {status:10s} {secs:7.0f}")
    print(f"{'all':40s} {'':10s} {time.perf_counter() - t_all:7.0f}")
    return 0 if all(s == "ok" for _, s, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
