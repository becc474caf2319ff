"""QG emulator learned from a reanalysis (issue 16 part 5): the DA–ML loop on the 2-D testbed.

Runs the surrogate preset ``qg_emulator`` (or reads finished runs with ``--collect``):
the two-layer QG twin of ``qg/letkf64`` (64×64×2, daily cycles, 1024 random PV
observations a day), an LETKF reanalysis with the true model over the training days,
a periodic 2-D CNN (:class:`hybrida.nn.GridCNN`) fitted to the reanalysis' one-day
increments, then the same LETKF cycled over new test days with the emulator (additive
model noise estimated on the held-out reanalysis pairs) and with the true model.
Section ``qg-emulator`` of docs/benchmarks.md: per seed, forecast skill one day and
ten days ahead against the true model and persistence, and the DA rmse_a of both.
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

SECTION = "qg-emulator"


def _e(x: float | None, spec: str = ".3g") -> str:
    return "—" if x is None else format(x, spec)


def section(runs: dict[int, dict], notes: list[str], wall: float) -> str:
    rows = []
    for seed, s in sorted(runs.items()):
        w = s.get("wall_s", {})
        rows.append([
            seed,
            _e(s["skill_cycle1_from_truth"]), _e(s["skill_cycle1_persistence_from_truth"]),
            _e(s["skill_cycle1_surrogate"]), _e(s["skill_cycle1_model"]), _e(s["skill_cycle1_persistence"]),
            _e(s["skill_lead_surrogate"]), _e(s["skill_lead_model"]), _e(s["skill_lead_persistence"]),
            _e(s["rmse_a_surrogate"]), _e(s["rmse_a_model"]), _e(s["rmse_ratio"]), _e(s["clim_std"]),
            _e(s.get("reanalysis_rmse_a")), s.get("fit_epochs"), _e(w.get("train", 0) / 60, ".1f"),
            _e(w.get("total", 0) / 60, ".1f"),
        ])
    ratio = statistics.median(s["rmse_ratio"] for s in runs.values())
    one_day = statistics.median(
        s["skill_cycle1_from_truth"] / s["skill_cycle1_persistence_from_truth"] for s in runs.values()
    )
    lead = next(iter(runs.values()))["lead"] / 86400
    lines = [
        "## QG emulator learned from a reanalysis (issue 16, part 5)",
        "",
        ("Twin of `qg/letkf64` (two-layer QG, 64×64×2, pyqg defaults, dt 2 h; truth from an independent "
        "spin-up; 1024 random PV observations a day over both layers). Training: an LETKF reanalysis "
        "(N=20, loc_rad 1, infl 1.1) with the true model over the training days (first 60 dropped as "
        "burn-in, last 20% held out); `GridCNN` (periodic 2-D convolutions, 32 channels, kernels "
        "5,5,5,3,3, GELU) learns the one-day increment x_{k+1} - x_k of the reanalysis, loss scaled by "
        "the state variance. Test: new days after the training period; forecasts from the true-model "
        "LETKF's analyses after its burn-in (and, as an upper bound, from the true states); the same "
        "LETKF cycled with the emulator, with additive model noise estimated from the held-out "
        "reanalysis pairs (`evaluation.model_noise: validation`), and with the true model, on the same "
        "observations. Errors are RMSE / climatological std (the clim. std column, PV units s⁻¹)."),
        "",
        (f"**Median over {len(runs)} seed(s): the emulator's one-day forecast error from the truth is "
         f"{one_day:.2f} × persistence's; DA rmse_a with the emulator / with the true model = {ratio:.2f}.**"),
        "",
        *md_table(
            ["seed", "1 day from truth: emulator", "persistence", "1 day from analyses: emulator",
             "true model", "persistence", f"{lead:.0f} days: emulator", "true model", "persistence",
             "rmse_a emulator DA", "rmse_a true-model DA", "ratio", "clim. std", "reanalysis rmse_a",
             "epochs", "train min", "total min"],
            rows, ["l"] + ["r"] * 16,
        ),
        "",
        *[f"- {n}" for n in notes],
        *provenance(__file__, "1 (torch)", wall_time=f"{wall / 60:.1f} min for this call"),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1], help="training seeds")
    ap.add_argument("--out", default="runs/qg_emulator", help="one folder per seed: OUT/seedS")
    ap.add_argument("--collect", action="store_true", help="only read OUT/seedS/summary.json")
    ap.add_argument("--quick", action="store_true", help="the preset's 32x32 quick variant (smoke run)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--note", action="append", default=[])
    add_output_args(ap, SECTION)
    args = ap.parse_args()
    t0 = time.perf_counter()
    runs = {}
    for seed in args.seeds:
        out = Path(args.out) / f"seed{seed}"
        if not args.collect:
            import torch

            from hybrida.experiment.surrogate_pipeline import (
                load_surrogate_config,
                run_surrogate_experiment,
            )

            torch.set_num_threads(1)
            from hybrida.experiment.surrogate_config import quick_overrides

            quick = quick_overrides("qg_emulator") if args.quick else []
            cfg = load_surrogate_config("qg_emulator", [*quick, *args.overrides, f"training.seed={seed}"])
            run_surrogate_experiment(cfg, out, progress=lambda m, s=seed: print(f"[seed {s}] {m}", flush=True))
        runs[seed] = json.loads((out / "summary.json").read_text())
    body = section(runs, args.note, time.perf_counter() - t0)
    print(body)
    path = output_path(args)
    if path:
        write_section(SECTION, body, path)


if __name__ == "__main__":
    main()
