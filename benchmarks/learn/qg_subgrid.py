"""Learned QG subgrid parametrisation (issue 16, part 5): offline skill, free-run energy, and LETKF rmse_a.

Per seed, ``hybrida learn subgrid qg_subgrid`` (:func:`hybrida.experiment.qg_subgrid.run`):
128² runs coarse-grained to 32², a periodic FCNN fitted to the subgrid PV forcing, then the
32² model with and without it run freely and cycled by an LETKF on the coarse-grained truth.

    .venv/bin/python benchmarks/learn/qg_subgrid.py --seeds 1 2 3 --out runs/qg_subgrid
    .venv/bin/python benchmarks/learn/qg_subgrid.py --collect --out runs/qg_subgrid   # re-read finished runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.common import add_output_args, md_table, output_path, provenance, write_section

SECTION = "qg-subgrid"


def _e(x: float) -> str:
    return f"{x:.3g}"


def section(runs: dict[int, dict], notes: list[str], wall: float) -> str:
    s0 = next(iter(runs.values()))
    cfg = s0["config"]
    rows, off_rows = [], []
    for seed, s in runs.items():
        off, da, fr = s["offline"], s["da"], s["free_run"]
        off_rows.append([
            seed, " / ".join(f"{v:.2f}" for v in off["trained"]["r2"]),
            " / ".join(f"{v:.2f}" for v in off["untrained"]["r2"]),
            " / ".join(f"{v:.2f}" for v in off["trained"]["corr"]), f"{s['train_s'] / 60:.1f}",
            f"{s['train'].get('best_epoch', '—')}", f"{s['cpu_s'] / 60:.1f}",
        ])
        for name in ["low_res", *s["gains"]]:
            scale = "—" if name == "low_res" else (name.split("_x")[1] if "_x" in name else "1")
            gain = "" if name == "low_res" else f"{100 * s['gains'][name]:+.1f}%"
            rows.append([seed, "32²" if name == "low_res" else "32² + net", scale,
                         f"{100 * fr['ke_rel_error'][name]:+.1f}%", _e(da[name]["rmse_a"]), gain,
                         _e(s["no_da_rmse"]), _e(s["field_std"])])
    gains = [s["gain"] for s in runs.values()]
    met = sum(s["met"] for s in runs.values())
    lines = [
        "## Learned subgrid parametrisation of the two-layer QG model (Ross et al. 2023; issue 16, part 5)",
        "",
        (f"High resolution {cfg['hi_nx']}² (dt {cfg['hi_dt']:g} s; spun up {cfg['spinup_days']} days at half "
         f"resolution, then {cfg['adjust_days']} days), coarse-grained by spectral truncation to the "
         f"{cfg['lo_nx']}² model (dt {cfg['lo_dt']:g} s); pyqg's default parameters. Subgrid forcing "
         "S_q = coarse(dq/dt at high resolution) − (dq/dt at low resolution)(coarse q). Network: periodic FCNN, "
         f"channels {cfg['channels']}, kernels {cfg['kernels']}, trained by MSE on per-layer normalised forcing "
         f"({cfg['train_trajectories']} trajectories × {cfg['train_days']} daily samples, early stopping on one "
         f"held-out trajectory of {cfg['valid_days']} days, ≤{cfg['epochs']} epochs). Offline: R² and correlation "
         "of the forcing on the held-out trajectory (layers 1 / 2), and the same network untrained. Free runs: "
         f"mean eddy KE over the second half of {cfg['test_days']} days of a new trajectory, relative to the "
         f"coarse-grained truth. DA: LETKF N={cfg['members']}, loc_rad {cfg['loc_rad']:g} (torus), infl "
         f"{cfg['infl']:g}, {cfg['obs_p']} random PV observations a day (σ {cfg['obs_std']}), {cfg['da_cycles']} "
         f"daily cycles (first {cfg['da_burn_in']} not scored), the same observations and initial ensemble for "
         "both models. Bar: rmse_a with the network ≥ 5% below without."),
        "",
        "Offline skill on the held-out trajectory (layers 1 / 2) and training cost:",
        "",
        *md_table(["seed", "R² (trained)", "R² (untrained)", "correlation", "train wall min", "best epoch",
                   "pipeline CPU min"], off_rows),
        "",
        ("Online: free-run eddy KE error against the coarse-grained truth, and the cycled LETKF (forcing scale: the "
        "network's output multiplied by it; 1 = as trained):"),
        "",
        *md_table(["seed", "model", "forcing scale", "free-run KE error", "LETKF rmse_a", "gain vs 32²",
                   "no-DA rmse", "PV std"], rows),
        "",
        (f"Headline (scale 1) median gain {100 * statistics.median(gains):+.1f}% over {len(gains)} seed(s); "
         f"bar (≥ 5% lower rmse_a) met on {met}; met at any scale on "
         f"{sum(s.get('met_any_scale', False) for s in runs.values())}."),
        "",
        *[f"- {n}" for n in notes],
        *provenance(__file__, "1 (torch)", wall_time=f"{wall / 60:.1f} min for this call"),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--out", default="runs/qg_subgrid", help="one folder per seed: OUT/seedS")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--resume", action="store_true", help="reuse finished data and networks in OUT")
    ap.add_argument("--collect", action="store_true", help="only read OUT/seedS/summary.json")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--note", action="append", default=[])
    add_output_args(ap, SECTION)
    args = ap.parse_args()
    t0 = time.perf_counter()
    runs = {}
    for seed in args.seeds:
        out = Path(args.out) / f"seed{seed}"
        if args.collect:
            runs[seed] = json.loads((out / "summary.json").read_text())
            continue
        import torch

        from hybrida.experiment.qg_subgrid import run

        torch.set_num_threads(1)
        runs[seed] = run(out, seed=seed, quick=args.quick, overrides=args.overrides, resume=args.resume,
                         progress=lambda m, s=seed: print(f"[seed {s}] {m}", flush=True))
    body = section(runs, args.note, time.perf_counter() - t0)
    print(body)
    path = output_path(args)
    if path:
        write_section(SECTION, body, path)


if __name__ == "__main__":
    main()
