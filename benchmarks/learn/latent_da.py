"""Latent-space DA (issue 15, part 1): latent ETKF / 3D-Var / PF with POD and an autoencoder vs full-space DA.

Per seed and problem, ``hybrida learn latent latent_ks`` and ``latent_l96``
(:func:`hybrida.experiment.latent_ks.run`, :func:`hybrida.experiment.latent_l96.run`): a free run,
POD and a periodic conv autoencoder at the same latent size, every method tuned on a separate
twin from the same small grid and cycled on the same test truth and observations.
Bars: KS latent ETKF (AE) within 20% of the LETKF rmse at the same N and >= 5x cheaper per
analysis; L96 latent PF (AE) >= 30% below the bootstrap PF at N=100; latent 3D-Var below full
3D-Var on both; POD vs AE reported.

    .venv/bin/python benchmarks/learn/latent_da.py                  # both problems, seeds 1 2 3
    .venv/bin/python benchmarks/learn/latent_da.py --quick --seeds 1
    .venv/bin/python benchmarks/learn/latent_da.py --collect        # re-read finished runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.common import (
    ROOT,
    add_output_args,
    md_table,
    output_path,
    provenance,
    write_section,
)

SECTION = "latent-da"
PROBLEMS = {"latent_ks": "hybrida.experiment.latent_ks", "latent_l96": "hybrida.experiment.latent_l96"}


def run_one(problem: str, out: str, seed: int, quick: bool, overrides: list[str], resume: bool) -> dict:
    """One pipeline run (1 thread); returns its summary."""
    import importlib

    import torch

    torch.set_num_threads(1)
    mod = importlib.import_module(PROBLEMS[problem])
    return mod.run(Path(out), seed=seed, quick=quick, overrides=overrides, resume=resume)


def _f(x: float, d: int = 3) -> str:
    return "inf" if x == float("inf") else f"{x:.{d}f}"


def problem_block(name: str, runs: list[dict]) -> list[str]:
    """Markdown lines of one problem: method table (median over seeds), bars, training."""
    s0 = runs[0]
    cfg = s0["config"]
    methods = list(s0["table"])
    rows = []
    for m in methods:
        r = [s["table"][m]["rmse"] for s in runs]
        ms = [s["table"][m]["ms_per_analysis"] for s in runs]
        cpu = [s["table"][m]["cpu_ms_per_analysis"] for s in runs]
        params = ", ".join(str(s["table"][m].get("param")) for s in runs)
        rows.append([m, _f(statistics.median(r)), " / ".join(_f(x) for x in r), _f(statistics.median(ms), 2),
                     _f(statistics.median(cpu), 2), params])
    bars = []
    for i, b in enumerate(s0["bars"]):
        vals = [s["bars"][i] for s in runs]
        met = sum(v["met"] for v in vals)
        extra = ""
        if "speedup" in b:
            extra = f"; speed-up {' / '.join(_f(v['speedup'], 1) for v in vals)}x"
        if "ratio" in b:
            extra += f"; ratio {' / '.join(_f(v['ratio'], 2) for v in vals)}"
        if "reported" in b["bar"]:
            bars.append(f"- {b['bar']}: AE {' / '.join(_f(v['rmse']) for v in vals)} vs POD "
                        f"{' / '.join(_f(v['threshold']) for v in vals)}")
            continue
        bars.append(f"- {b['bar']}: rmse {' / '.join(_f(v['rmse']) for v in vals)} vs threshold "
                    f"{' / '.join(_f(v['threshold']) for v in vals)}{extra} — **{'met' if met == len(vals) else 'missed'}**"
                    f" ({met}/{len(vals)} seeds)")
    ae = [s["autoencoder"] for s in runs]
    return [
        f"### {name} ({s0['problem']}, latent size k={s0['latent']}, N={s0['members']}, PF particles {s0['particles']})",
        "",
        (f"Free run {cfg['free_run']} cycles (last {cfg['valid_fraction']:.0%} validation); test {s0['test_cycles']} "
         f"cycles (first {s0['burn_in']} not scored); tuning twin {cfg['tune_cycles']} cycles; latent ETKF update "
         f"'{cfg['update']}', latent 3D-Var update '{cfg['var_update']}'; extra POD sizes for the latent ETKF "
         f"{cfg.get('extra_latent') or 'none'}; autoencoder channels {cfg['channels']}, levels {cfg['levels']}, "
         f"{'POD-initialised' if cfg['pod_init'] else 'random init'}. rmse per seed in seed order; ms per analysis "
         "is wall time on the shared machine, CPU ms the process CPU time (1 thread)."),
        "",
        *md_table(["method", "rmse (median)", "rmse per seed", "ms/analysis", "CPU ms/analysis", "tuned param"], rows),
        "",
        *bars,
        (f"- reconstruction rmse on the validation snapshots: POD "
         f"{' / '.join(_f(a['reconstruction_rmse']['pod']) for a in ae)}, AE "
         f"{' / '.join(_f(a['reconstruction_rmse']['ae']) for a in ae)} (POD explains "
         f"{' / '.join(format(a['pod_explained_variance'], '.1%') for a in ae)} of the variance)"),
        (f"- autoencoder training: wall {' / '.join(_f(a.get('train_s', 0) / 60, 1) for a in ae)} min, CPU "
         f"{' / '.join(_f(a.get('cpu_s', 0) / 60, 1) for a in ae)} min, epochs "
         f"{' / '.join(str(a.get('epochs')) for a in ae)} (stopped: {', '.join(str(a.get('stopped')) for a in ae)})"),
        f"- pipeline wall {' / '.join(_f(s['wall_s'] / 60, 1) for s in runs)} min per seed",
        "",
    ]


def section(results: dict[str, list[dict]], args: argparse.Namespace, wall: float) -> str:
    """The docs section."""
    lines = [
        f"## Latent-space DA (issue 15, part 1){' — quick' if args.quick else ''}",
        "",
        ("POD and a periodic convolutional autoencoder (same latent size) fitted on a free run; latent ETKF, "
         "latent 3D-Var (B from the encoded climatology, Jacobian of H∘decode by autodiff for the AE) and latent "
         "bootstrap PF with each, beside the full-space LETKF, ETKF, 3D-Var and bootstrap PF on the same test truth "
         "and observations. The forecast runs in full space with the true model. 'increment' update: posterior = "
         "prior + decoded latent increment, with H applied to the full prior (only the correction is latent); "
         "'replace': posterior = decoded latent posterior (always for the PF). The AE 3D-Var uses one Gauss-Newton "
         "outer loop with the Jacobian of H∘decode at the background (torch.func.jacfwd). Inflation / xB / PF "
         "jitter tuned per method on a separate twin from the same grid. Names: latent_<method>_<pod|ae>; "
         "latent_etkf_pod48 is a POD of size 48 (above the bar's k <= 32), to show where POD starts to work."),
        "",
    ]
    for name, runs in results.items():
        if runs:
            lines += problem_block(name, runs)
    lines += [
        (f"- seeds: {', '.join(str(s) for s in args.seeds)}; "
         + ("runs re-read with --collect" if args.collect else f"total wall time {wall / 60:.1f} min ({args.jobs} in parallel)")),
        *(f"- {note}" for note in args.note),
        *provenance(__file__, "1 per run", sys.argv[1:]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--quick", action="store_true", help="the quick presets (<= 5 min per run)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--out", default=str(ROOT / "runs" / "latent"), help="folder of the runs")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (1 thread each)")
    parser.add_argument("--resume", action="store_true", help="reuse trained autoencoders")
    parser.add_argument("--collect", action="store_true", help="only read finished summary.json files")
    parser.add_argument("--note", action="append", default=[], help="an extra bullet line for the section")
    add_output_args(parser, SECTION)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    jobs = [(p, str(Path(args.out) / f"{p}{'_quick' if args.quick else ''}_seed{s}"), s, args.quick,
             list(args.overrides), args.resume) for p in args.problems for s in args.seeds]
    if args.collect:
        summaries = [json.loads((Path(j[1]) / "summary.json").read_text()) for j in jobs
                     if (Path(j[1]) / "summary.json").is_file()]
        if not summaries:
            parser.error(f"--collect: no summary.json under {args.out}")
    elif args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            summaries = list(pool.map(run_one, *zip(*jobs)))
    else:
        summaries = [run_one(*j) for j in jobs]
    wall = max(s["wall_s"] for s in summaries) if args.collect else time.perf_counter() - t0
    results = {p: [s for s in summaries if s["problem"].startswith("ks" if p == "latent_ks" else "lorenz96")]
               for p in args.problems}
    body = section(results, args, wall)
    print(body)
    path = output_path(args)
    if path is not None:
        write_section(SECTION, body, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
