"""4DVarNet on Lorenz-96 windows (issue 12, method 4): learned ODE / CNN prior + ConvLSTM solver.

Setup (Fablet et al. 2021, JAMES, sec. 4.2): L96 n=40, F=8, dt=0.05; windows of 200 steps;
observations every 4 steps of a random 50% of the variables (drawn anew at each time),
noise variance 2. Score: normalised error MSE/std^2 over all test windows (std of the test
truth, stated). Baselines on the same windows: per-variable linear interpolation, fixed-step
gradient-descent 4D-Var with the true L96 as prior (same cost U), and hybrida's
weak-constraint FourDVar on the first test windows; cycled rmse of the trained method and of
a cycled weak-constraint FourDVar on the same test observations.

Bars (issue 12): ODE prior <= 0.06 and <= 1/3 of our gradient-descent 4D-Var; CNN prior <= 0.03.

    .venv/bin/python benchmarks/learn/fourdvarnet.py                 # 3 seeds x {ode, cnn}
    .venv/bin/python benchmarks/learn/fourdvarnet.py --quick         # the --quick preset, 3 seeds
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from hybrida.experiment.learned_4dvarnet import run

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.common import add_output_args, md_table, output_path, provenance, write_section

SECTION = "learned-4dvarnet"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--priors", nargs="+", default=["ode", "cnn"], choices=["ode", "cnn"])
    parser.add_argument("--quick", action="store_true", help="the --quick preset (<= 5 min per run)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE config override")
    parser.add_argument("--out", default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--json", default=None, help="also write all summaries to this JSON file")
    parser.add_argument("--from-json", nargs="+", default=None,
                        help="no runs: merge the --json files (or single summary.json files) of earlier runs")
    parser.add_argument("--note", action="append", default=[], help="an extra bullet line for the section")
    add_output_args(parser, SECTION)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.from_json:
        runs = {}
        for f in args.from_json:
            data = json.loads(Path(f).read_text())
            if "prior" in data:  # one run's summary.json
                data = {data["prior"]: [data]}
            for prior, rs in data.items():
                runs.setdefault(prior, []).extend(rs)
        wall = sum(r.get("wall_s", math.nan) for rs in runs.values() for r in rs)
        body = report(runs, args, wall)
        print(body)
        if (path := output_path(args)) is not None:
            write_section(SECTION, body, path)
        return 0
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fourdvarnet-"))
    t0 = time.perf_counter()
    runs: dict[str, list[dict]] = {}
    cache: dict = {}  # the prior-independent baselines of each seed, computed once
    for prior in args.priors:
        for seed in args.seeds:
            t_run = time.perf_counter()
            s = run(root / f"{prior}-{seed}", seed=seed, quick=args.quick, overrides=[f"prior={prior}", *args.overrides],
                    resume=True, progress=lambda m, p=prior, s=seed: print(f"[{p} seed {s}] {m}", flush=True),
                    cache=cache)
            s["wall_s"] = time.perf_counter() - t_run
            runs.setdefault(prior, []).append(s)
            print(json.dumps({k: s[k] for k in ("prior", "seed", "window_score", "window_baselines", "rmse",
                                                 "baselines", "train_s", "met")}), flush=True)
            if args.json:  # after each run, so an interrupted benchmark keeps the runs it finished
                Path(args.json).write_text(json.dumps(runs, indent=2))
    wall = time.perf_counter() - t0
    body = report(runs, args, wall)
    print(body)
    path = output_path(args)
    if path is not None:
        write_section(SECTION, body, path)
    return 0


def _med(xs) -> float:
    return statistics.median(xs)


def report(runs: dict[str, list[dict]], args: argparse.Namespace, wall: float) -> str:
    """The docs section: per-prior medians, per-seed rows, bars, provenance."""
    any_run = next(iter(runs.values()))[0]
    cfg = any_run["config"]
    lines = [
        "## Learned analysis: 4DVarNet (issue 12, method 4)",
        "",
        (f"Lorenz-96 n=40, dt 0.05; windows of {cfg['window']} steps, observations every {cfg['every']} steps of a "
        f"random {cfg['frac']:.0%} of the variables, noise variance {cfg['sigma2']:g}. Score: normalised error "
        "MSE/std^2 over all test windows (std of the test truth, given per run); "
        f"{cfg['test_windows']} test windows per seed from a stretch of the run never used in training. "
        f"Training: {cfg['train_windows']} windows, random crops of {cfg['crop']} steps, batch {cfg['batch']}, "
        f"<= {cfg['steps']} steps or {cfg['max_minutes']:g} min, K={cfg['n_iter']} solver iterations, ConvLSTM "
        f"hidden {cfg['hidden']}. The paper trains far longer on 200-step windows (GPU)."),
        "",
    ]
    rows = []
    for prior, rs in runs.items():
        for r in rs:
            wb, fw = r["window_baselines"], r["fourdvar_windows"]
            rows.append([
                prior, r["seed"], f"{r['window_score']:.4f}", f"{wb['interpolation']:.3f}",
                f"{wb['gd_4dvar_true_model']:.3f}",
                f"{fw['fourdvar_weak']:.3f} / {fw['4dvarnet']:.4f}" if fw else "-",
                f"{r['rmse']:.3f}", f"{r['baselines']['fourdvar_weak']:.3f}", f"{r['window_score_std']:.2f}",
                f"{r['train_s'] / 60:.1f}", r["train_steps"], "yes" if r["met"] else "no",
            ])
    lines += md_table(
        ["prior", "seed", "4DVarNet", "interp.", "GD 4D-Var (true L96)", "FourDVar weak / 4DVarNet (first windows)",
         "cycled rmse", "cycled FourDVar weak", "test std", "train min", "steps", "bar met"],
        rows,
        ["l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "l"],
    )
    lines.append("")
    for prior, rs in runs.items():
        score = _med([r["window_score"] for r in rs])
        gd = _med([r["window_baselines"]["gd_4dvar_true_model"] for r in rs])
        bar = rs[0]["bar"]
        rule = rs[0]["bar_rule"]
        met = sum(r["met"] for r in rs)
        lines.append(
            f"- **{prior} prior**: median MSE/std^2 {score:.4f} over {len(rs)} seeds (bar: {rule}, bar {bar:g}; "
            f"GD 4D-Var median {gd:.3f}, so 1/3 of it is {gd / 3:.3f}); met on {met}/{len(rs)} seeds; median "
            f"training {_med([r['train_s'] for r in rs]) / 60:.1f} min."
        )
    lines.append(
        f"- gradient-descent 4D-Var: {cfg['gd_iter']} fixed steps of {cfg['gd_step']:g} on U with weights 1 (obs) and "
        f"{cfg['gd_lam_prior']:g} (|x - M(x)|^2, true L96), from the interpolation. FourDVar weak: hybrida's "
        f"incremental Gauss-Newton 4D-Var, Q = {cfg['fourdvar_q']:g} I per 4-step cycle; on the test windows as "
        f"consecutive sub-windows of {cfg['fourdvar_sub']} observation times (one Gauss-Newton 4D-Var over the whole "
        "200 steps from the interpolated background does not converge: MSE/std^2 ~2 measured), the first from the "
        f"interpolation with B = climatology, the next from the previous analysis with B = {cfg['fourdvar_xb']:g} x "
        "climatology; cycled: lag "
        f"{cfg['cycle_lag']}, shift 1. Cycled 4DVarNet: window of {cfg['cycle_window']} cycles ending at the analysis time."
    )
    redo = [r for rs in runs.values() for r in rs if "fourdvar_weak_cycled_first_run" in r]
    if redo:
        lines.append(
            "- the cycled FourDVar column was recomputed (same seeds, data and code path, `FourDVar(clim, xB="
            f"{cfg['fourdvar_xb']:g}, lag={cfg['cycle_lag']}, Q={cfg['fourdvar_q']:g})`) after these runs: they had "
            "cycled it with B = the full climatological covariance (xB 1), rmse "
            + ", ".join(f"{r['fourdvar_weak_cycled_first_run']:.2f}" for r in redo[:3]) + "."
        )
    lines.append(
        f"- wall time {wall / 60:.1f} min summed over runs (training, baselines, cycling; runs of different seeds "
        f"side by side on the shared 2-core machine), {'--quick' if args.quick else 'headline'}"
    )
    lines += [f"- {note}" for note in getattr(args, "note", [])]
    lines += provenance(__file__, "1 (torch.set_num_threads(1))")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
