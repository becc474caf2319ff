"""Does the fast LETKF (float32, weights interpolated between every k-th point) match the exact one?

Run with the project's Python: ``.venv/bin/python benchmarks/scaling/letkf_interp_accuracy.py``.

The n = 10^6, N = 20 speed target of ``letkf_scaling.py`` is met only with
float32 and weight interpolation (Yang, Kalnay, Hunt & Bowler 2009: the
local transform is computed at every k-th grid point and linearly
interpolated in between). This script checks that the shortcut keeps the
rmse of the exact float64 LETKF, on identical truth, observations and
initial ensemble (same Lorenz-96 setup as ``letkf_scaling.py``: F=8,
dt=0.05, all points observed every step with R = I, loc_rad 4, infl 1.02):

* n = 4000, N = 20, cold start, ``--cycles`` cycles (default 600), rmse_a
  averaged after ``--burn-in`` (default 100) — the time-mean comparison;
* n = 10^6, N = 20, warm start, ``--huge-cycles`` cycles (default 4) — the
  per-cycle rmse of every variant on the same states (2 threads).

Writes the section ``letkf-interp`` of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import add_output_args, output_path, provenance, write_section
from benchmarks.scaling.letkf_scaling import INFL, LOC_RAD, _obs, initial_truth
from hybrida.assimilation.ensemble import LETKF
from hybrida.models.lorenz96 import Lorenz96

VARIANTS = [  # (label, dtype, interp_every)
    ("exact float64", torch.float64, 1),
    ("float32, k=1", torch.float32, 1),
    ("float32, k=4", torch.float32, 4),
    ("float32, k=8", torch.float32, 8),
    ("float32, k=16", torch.float32, 16),
]


def run(n: int, N: int, cycles: int, warm: bool, seed: int = 0) -> dict[str, dict]:
    """Cycle every variant on one truth / observation sequence; per-cycle rmse_a and s/cycle."""
    g = torch.Generator().manual_seed(seed)
    model = Lorenz96(n)
    x = initial_truth(n, g)
    E0 = x + (0.3 if warm else 1.0) * torch.randn(N, n, generator=g, dtype=torch.float64)
    truth, obs = [], []
    with torch.no_grad():
        for _ in range(cycles):
            x = model.step(x)
            truth.append(x)
            obs.append(x + torch.randn(n, generator=g, dtype=torch.float64))
    out = {}
    for label, dtype, k in VARIANTS:
        method = LETKF(N, loc_rad=LOC_RAD, infl=INFL, interp_every=k)
        E = E0.to(dtype)
        errs, secs = [], []
        with torch.no_grad():
            for xt, y in zip(truth, obs):
                t0 = time.perf_counter()
                E = method.analyse(model.step(E), _obs(y.to(dtype)))
                secs.append(time.perf_counter() - t0)
                errs.append(float((E.mean(0).double() - xt).pow(2).mean().sqrt()))
        out[label] = {"rmse": errs, "s_cycle": statistics.median(secs)}
        print(f"n={n} {label}: rmse_a last {errs[-1]:.4f}, {statistics.median(secs):.3g} s/cycle", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=600)
    ap.add_argument("--burn-in", type=int, default=100)
    ap.add_argument("--huge-cycles", type=int, default=4)
    ap.add_argument("--skip-huge", action="store_true")
    add_output_args(ap, "letkf-interp")
    args = ap.parse_args()

    torch.set_num_threads(1)
    small = run(4000, 20, args.cycles, warm=False)
    ref = small["exact float64"]["rmse"][args.burn_in :]
    lines = [
        "| variant | rmse_a (mean after burn-in) | max abs difference of per-cycle rmse_a vs exact | s/cycle (1 thread) |",
        "|---|---|---|---|",
    ]
    for label, r in small.items():
        e = r["rmse"][args.burn_in :]
        diff = max(abs(a - b) for a, b in zip(e, ref))
        lines.append(f"| {label} | {statistics.fmean(e):.4f} | {diff:.1e} | {r['s_cycle']:.3g} |")
    body = (
        "## Fast LETKF variants vs the exact LETKF (Lorenz-96)\n\n"
        "Same truth, observations and initial ensemble for every variant; F=8, dt=0.05, all points "
        "observed every step, R = I, loc_rad 4, infl 1.02, N = 20. k = weights solved at every k-th "
        "point and interpolated in between (Yang et al. 2009).\n\n"
        f"n = 4000, cold start, {args.cycles} cycles, rmse_a averaged after cycle {args.burn_in}:\n\n"
        + "\n".join(lines)
        + "\n"
    )
    if not args.skip_huge:
        torch.set_num_threads(2)
        huge = run(10**6, 20, args.huge_cycles, warm=True)
        head = "| variant | " + " | ".join(f"rmse_a cycle {i + 1}" for i in range(args.huge_cycles))
        rows = [head + " | s/cycle (2 threads) |", "|---" * (args.huge_cycles + 2) + "|"]
        for label, r in huge.items():
            rows.append(
                f"| {label} | " + " | ".join(f"{v:.4f}" for v in r["rmse"]) + f" | {r['s_cycle']:.3g} |"
            )
        body += (
            f"\nn = 10^6, warm start (truth + N(0, 0.3²)), {args.huge_cycles} cycles on the same states:\n\n"
            + "\n".join(rows)
            + "\n"
        )
    body += "\n" + "\n".join(provenance(__file__, "torch 1 (n = 4000), 2 (n = 10^6)"))
    print(body)
    out = output_path(args)
    if out:
        write_section("letkf-interp", body, out)


if __name__ == "__main__":
    main()
