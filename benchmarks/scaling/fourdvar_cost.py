"""4D-Var cost per cycle vs window length on Lorenz-96 (n=40, dto=0.2), strong and weak constraint.

Run with the project's Python: ``.venv/bin/python benchmarks/scaling/fourdvar_cost.py``.

Setup: DAPPER's ``sakov2008`` with observations every 4 steps (dto = 0.2, as
Bocquet & Sakov 2013, Fig. 4): F=8, dt=0.05, all 40 variables observed,
R = I, B = xB x climatological covariance, windows of ``lag`` cycles sliding
by one cycle (each observation assimilated once). Weak constraint adds a
model-error forcing per cycle with Q = q I (``--q``). For each row the time
per cycle (forecast + analysis + bookkeeping, single thread) is the wall time
of the cycling divided by the cycles; rmse_a is the time mean after the
burn-in (after an untimed warm-up run); outer/inner are the mean Gauss–Newton and CG iterations per cycle.

The table is printed and written to ``docs/benchmarks.md`` between
``<!-- fourdvar:start -->`` and ``<!-- fourdvar:end -->``. Flags:
``--cycles``, ``--burn-in``, ``--seed``, ``--lags 1,2,4,8``, ``--modes
auto,matrix_free`` (linearization of :class:`FourDVar`), ``--q``, ``--tol``,
``--quick`` (smoke run), ``--output`` (``-``: none).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import add_output_args, output_path, provenance, write_section
from hybrida.experiment.config import load_config
from hybrida.experiment.runner import run_experiment

PLUGIN = "hybrida.assimilation.variational.fourdvar:FourDVar"
#: tuned B scalings per lag (DAPPER sakov2008 comments, Bocquet & Sakov 2013 Fig. 4); 8: ours
XB = {1: 0.2, 2: 0.1, 4: 0.02, 6: 0.015, 8: 0.01}


def run_row(lag: int, weak: bool, mode: str, args: argparse.Namespace) -> dict[str, float]:
    """One cycling experiment; returns ms/cycle, rmse_a and mean iteration counts."""
    params = {"lag": lag, "xB": XB.get(lag, 0.01), "tol": args.tol, "linearization": mode, "B": args.B}
    if weak:
        params["Q"] = args.q
    flow = "{" + ", ".join(f"{k}: {v}" for k, v in params.items()) + "}"
    config = load_config(
        "lorenz96/sakov2008",
        overrides=[
            "observations.every=4",
            f"cycles={args.cycles}",
            f"burn_in={args.burn_in}",
            f"climatology.steps={args.clim_steps}",
            f"seed={args.seed}",
            "threads=1",
            f"method.name={PLUGIN}",
            f"method.params={flow}",
        ],
    )
    result = run_experiment(config, progress=False)
    s = result.summary
    diags = [r.diagnostics for r in result.records if "n_outer" in r.diagnostics]
    return {
        "ms": 1e3 * s["wall_s"] / args.cycles,
        "rmse_a": s["rmse_a"],
        "outer": statistics.fmean(d["n_outer"] for d in diags) if diags else math.nan,
        "inner": statistics.fmean(d["n_inner"] for d in diags) if diags else math.nan,
        "dfs": statistics.fmean(d["dfs"] for d in diags) if diags else math.nan,
        "xB": params["xB"],
        "diverged": bool(s["diverged"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--burn-in", type=float, default=5.0)
    ap.add_argument("--clim-steps", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lags", default="1,2,4,8")
    ap.add_argument("--modes", default="auto")
    ap.add_argument("--q", type=float, default=0.01, help="weak constraint: Q = q I per cycle")
    ap.add_argument("--tol", type=float, default=1e-4, help="relative gradient tolerance")
    ap.add_argument("--quick", action="store_true", help="smoke run: 40 cycles, lags 1,2")
    add_output_args(ap, "fourdvar")
    ap.add_argument("--B", default="identity", choices=["identity", "climatology"], help="B = xB * shape")
    args = ap.parse_args()
    if args.quick:
        args.cycles, args.burn_in, args.lags, args.clim_steps = 40, 2.0, "1,2", 2000
    torch.set_num_threads(1)
    header = (
        "| lag | xB | constraint | linearization | ms / cycle | outer / cycle | CG / cycle | DFS | rmse_a |\n"
        "|---:|---:|---|---|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for mode in args.modes.split(","):  # untimed warm-up: first torch.func/vmap calls are slow
        run_row(1, False, mode, argparse.Namespace(**{**vars(args), "cycles": 10, "burn_in": 0.5}))
    for lag in [int(v) for v in args.lags.split(",")]:
        for weak in (False, True):
            for mode in args.modes.split(","):
                r = run_row(lag, weak, mode, args)
                flag = " (diverged)" if r["diverged"] else ""
                line = (
                    f"| {lag} | {r['xB']:g} | {'weak, Q = ' + format(args.q, 'g') + ' I' if weak else 'strong'} "
                    f"| {mode} | {r['ms']:.1f} | {r['outer']:.2f} | {r['inner']:.1f} | {r['dfs']:.1f} "
                    f"| {r['rmse_a']:.3f}{flag} |"
                )
                lines.append(line)
                print(line, flush=True)
    body = (
        "## 4D-Var cost per cycle (Lorenz-96, n = 40, dto = 0.2)\n\n"
        "DAPPER `sakov2008` with observations every 4 steps, windows of `lag` cycles sliding by one "
        f"(shift 1), seed {args.seed}, {args.cycles} cycles, rmse_a after t = {args.burn_in:g} "
        "(a short run: noisier than 1000-cycle means). B = xB x I reproduces the scores quoted in "
        "DAPPER's sakov2008.py comments (0.46 / 0.39 / 0.37; full length, median of seeds 1-3: "
        "0.456 / 0.393 / 0.386, section reproduction); with B = xB x climatological covariance "
        "(DAPPER 1.8's `Var4D` default) FourDVar gives 0.667 / 0.593 / 0.495, the same as DAPPER's "
        "own `Var4D` run on the same setup (0.659, 0.666 for lag 1; 0.495 for lag 4). "
        "ms / cycle is the whole cycle (forecast, analysis, scoring). `auto` forms "
        "the whitened Jacobian by batched autodiff once per outer loop (n = 40 is small); "
        "`matrix_free` uses TL = reverse-over-reverse and adjoint = reverse passes in every CG "
        "iteration.\n\n" + header + "\n".join(lines) + "\n\n"
        + "\n".join(provenance(__file__, "1 (torch)"))
    )
    print(body)
    out = output_path(args)
    if out:
        write_section("fourdvar", body, out)


if __name__ == "__main__":
    main()
