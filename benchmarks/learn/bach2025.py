"""Learned LETKF localisation/inflation against the grid-searched LETKF on the Bach et al. (2025) L96 twin (issue 13).

Runs the ``bach2025_l96`` pipeline (:mod:`hybrida.experiment.filter_bach_l96`) for one seed
and writes the table (per N: the paper's tuned LETKF, ours grid-searched, the learned filter
trained with the truth and truth-free, their gains) to ``docs/benchmarks.md`` between
``<!-- learned-filter-bach2025:start -->`` and ``<!-- learned-filter-bach2025:end -->``.

    .venv/bin/python benchmarks/learn/bach2025.py                       # defaults of the preset
    .venv/bin/python benchmarks/learn/bach2025.py --set sigma=0.7       # any pipeline override
    .venv/bin/python benchmarks/learn/bach2025.py --quick --no-write    # the quick preset
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import add_output_args, md_table, output_path, provenance, write_section

SECTION = "learned-filter-bach2025"


def _f(x: float | None) -> str:
    return "—" if x is None else ("diverged" if x == float("inf") else f"{x:.3f}")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.1f}%"


def _without_note(argv: list[str]) -> list[str]:
    """``argv`` less ``--note TEXT`` (the note is in the section already)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--note":
            skip = True
        elif not a.startswith("--note="):
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_bach2025"), help="pipeline output folder")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--note", default="", help="a sentence added to the section (e.g. the producing command)")
    parser.add_argument("--from-summary", action="store_true",
                        help="write the section from OUT/summary.json of a finished run instead of running")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="pipeline override KEY=VALUE")
    add_output_args(parser, SECTION)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from hybrida.experiment.filter_bach_l96 import run

    if args.from_summary:
        s = json.loads((Path(args.out) / "summary.json").read_text())
        wall, cpu = s["wall_s"], s["cpu_s"]
    else:
        t0, c0 = time.perf_counter(), time.process_time()
        s = run(Path(args.out), seed=args.seed, quick=args.quick, overrides=args.overrides, resume=args.resume,
                progress=lambda m: print(m, flush=True))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    cfg = s["config"]
    paper = {int(k): v for k, v in s["paper_letkf"].items()}
    rows = []
    div = s.get("diverged", {})
    com = s.get("r_rmse_common", {})

    def cell(N: int, name: str, base: float) -> str:
        c = com.get(str(N), {})
        if name not in c:
            return "—"
        text = f"{c[name]:.3f}" + ("" if name == "letkf" else f" ({_pct(1 - c[name] / base)})")
        lost = div.get(str(N), {}).get(name, 0)
        return text + (f", lost {lost}" if lost else "")

    for N in sorted(int(k.removeprefix("letkf_N")) for k in s["baselines"]):
        key = f"letkf_N{N}"
        p = s["baseline_params"][key]
        base = com[str(N)]["letkf"]
        rows.append((N, _f(paper.get(N)), f"{cell(N, 'letkf', base)} ({p['infl']:g}, {p['loc_rad']:g})",
                     cell(N, "truth", base), cell(N, "finetuned", base), cell(N, "observations", base),
                     f"{com[str(N)]['trajectories']}/{cfg['test_trajectories']}"))
    table = md_table(["N", "Bach et al. LETKF", "our grid-searched LETKF (infl, radius)",
                      f"learned, truth loss, trained at N={cfg['train_N']} (gain)",
                      "fine-tuned at N (gain)", "learned, next-obs loss (gain)", "trajectories scored"], rows)
    tr = s["training"]
    cost = ", ".join(f"{k}: {v['cpu_s']:.0f} CPU s ({v['wall_s']:.0f} s wall, best validation R-RMSE "
                     f"{v['best_valid']:.3f})" for k, v in tr.items())
    checks = s["bar"]["checks"]
    body = "\n".join([
        "## Learned LETKF localisation and inflation, Bach et al. (2025) L96 (issue 13, parts 2–3)",
        "",
        (f"Lorenz-96 d=40, F=8, x1, x5, …, x37 observed every 0.15 (3 RK4 steps of 0.05), σ_y={cfg['sigma']}. "
         f"R-RMSE = mean ‖x̄ᵃ−x‖/‖x‖ over {cfg['test_trajectories']} test trajectories × {cfg['test_cycles']} "
         f"cycles after {cfg['burn_in']} burn-in (the paper: 64 × 1500), the same truth, observations and start "
         "ensembles for every filter; a trajectory that any filter loses (forecast beyond 1e3 or non-finite: "
         "'lost k' in the table) is left out for all, and gains are on the trajectories every filter kept. The LETKF is grid-searched per N over inflation "
         f"{cfg['infls']} × radius {cfg['radii']} on {cfg['grid_trajectories']} separate trajectories × "
         f"{cfg['grid_cycles']} cycles. The learned filter (taper per integer distance and per distance to the "
         f"nearest observation ({cfg['sites']} classes), base inflation per class"
         + (", a deep-sets ensemble network rescaling the taper distance and the inflation per grid point" if cfg["field"] else "")
         + (", a convolutional correction of the analysis mean" if cfg["correction"] else "")
         + f") starts at the tuned LETKF of N={cfg['train_N']} and is trained there by truncated BPTT (windows of "
         f"{cfg['window']} cycles, Adam lr {cfg['lr']}, ≤{cfg['epochs']} epochs over {cfg['train_trajectories']} × "
         f"{cfg['train_cycles']} training cycles, early stopping on {cfg['valid_trajectories']} × "
         f"{cfg['valid_cycles']} validation cycles), then run unchanged at the other N"
         + (f" and fine-tuned there ({cfg['finetune_epochs']} epochs)" if cfg["finetune_epochs"] else "") + "."),
        "",
        *table,
        "",
        f"Training cost (1 torch thread, shared 2-core machine): {cost}.",
        (f"Bars: truth-trained gain ≥ {100 * cfg['bar_truth']:.0f}% at N={cfg['bar_sizes']}"
         + (f", truth-free ≥ {100 * cfg['bar_truth_free']:.0f}% at N={cfg['train_N']}" if cfg["truth_free"] else "")
         + f": {', '.join(f'{k} ' + ('met' if v else 'NOT met') for k, v in checks.items())}."),
        (f"Pipeline wall {wall:.0f} s, CPU {cpu:.0f} s"
         + (" (its last invocation)" if args.from_summary or args.resume else "")
         + f"; outputs in `{Path(args.out).name}/` (summary.json, plots)."),
        *([args.note] if args.note else []),
        "",
        *provenance(__file__, "1 (torch)", _without_note(sys.argv[1:] if argv is None else argv)),
    ])
    print(body)
    if (path := output_path(args)) is not None:
        write_section(SECTION, body, path)


if __name__ == "__main__":
    main()
