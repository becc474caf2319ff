"""Single-state CNN analysis (Bocquet et al. 2024) on Lorenz-96 sakov2008: median test rmse_a over seeds vs baselines.

Runs the ``hybrida learn analysis cnn_analysis`` pipeline
(:func:`hybrida.experiment.learned_cnn.run`) once per seed, each in its own output folder,
and writes section "learned-cnn-analysis" of docs/benchmarks.md: per seed and median, the
test rmse_a of the CNN analysis trained on the truth and on the ETKF reanalysis, of 3D-Var
and of the ETKF N=28 on the same test truth and observations, and the training time.

    .venv/bin/python benchmarks/learn/cnn_analysis.py                 # headline, seeds 1,2,3
    .venv/bin/python benchmarks/learn/cnn_analysis.py --quick         # the --quick preset per seed
    .venv/bin/python benchmarks/learn/cnn_analysis.py --set rounds=6  # any pipeline field
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from hybrida.experiment.learned_cnn import BARS, QUICK_BARS, run

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.common import add_output_args, md_table, output_path, provenance, write_section

KEY = "learned-cnn-analysis"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--quick", action="store_true", help="the --quick preset (<= 5 min per seed)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="pipeline config override")
    ap.add_argument("--out", default="runs/bench_cnn_analysis", help="folder of the per-seed runs")
    ap.add_argument("--resume", action="store_true", help="reuse finished variants in the per-seed checkpoints")
    add_output_args(ap, KEY)
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    res = {}
    for s in seeds:
        out = Path(args.out) / ("quick" if args.quick else "full") / f"seed{s}"
        res[s] = run(out, seed=s, quick=args.quick, overrides=list(args.set), resume=args.resume,
                     progress=lambda m, s=s: print(f"seed {s}: {m}", flush=True))
        print(json.dumps({k: v for k, v in res[s].items() if k != "config"}), flush=True)
    wall = time.perf_counter() - t0
    bars = QUICK_BARS if args.quick else BARS
    cols = ("rmse_truth", "rmse_reanalysis", "3dvar", "etkf")

    def value(r: dict, c: str) -> float:
        return r["baselines"][c] if c in ("3dvar", "etkf") else r.get(c, float("nan"))

    rows = [[s, *(f"{value(r, c):.3f}" for c in cols), f"{r.get('train_s_truth', 0):.0f}",
             f"{r.get('train_s_reanalysis', 0):.0f}"] for s, r in res.items()]
    med = {c: statistics.median(value(r, c) for r in res.values()) for c in cols}
    rows.append(["median", *(f"{med[c]:.3f}" for c in cols),
                 f"{statistics.median(r.get('train_s_truth', 0) for r in res.values()):.0f}",
                 f"{statistics.median(r.get('train_s_reanalysis', 0) for r in res.values()):.0f}"])
    cfg = next(iter(res.values()))["config"]
    met_t, met_r = med["rmse_truth"] <= bars["truth"], med["rmse_reanalysis"] <= bars["reanalysis"]
    body = "\n".join([
        "## Single-state CNN analysis (Bocquet et al. 2024), Lorenz-96 sakov2008" + (" (--quick)" if args.quick else ""),
        "",
        ("L96 n=40, F=8, dt=0.05, all 40 variables observed every step, σo=1. One nature run per seed cut into "
        f"training ({cfg['train_cycles']} cycles), validation ({cfg['valid_cycles']}) and test ({cfg['test_cycles']}) "
        "stretches; an ETKF (N=28, infl 1.02) over the training and validation stretches gives the first training "
        "forecasts and the reanalysis. The residual periodic CNN "
        f"({cfg['channels']} channels, {cfg['blocks']} residual blocks, kernel {cfg['kernel']}, local-gain head of "
        f"half-width {cfg['radius']}) is fitted on the ETKF forecasts ({cfg['epochs']} epochs), then for "
        f"{cfg['rounds']} online rounds cycled over {cfg['segment']}-cycle training segments and refitted on the "
        f"forecasts it met ({cfg['epochs_online']} epochs each, newest {cfg['max_pairs']} pairs kept); the round "
        "with the lowest cycled validation rmse is kept. Variant *truth*: targets are the true states; variant "
        "*reanalysis*: targets and validation are the ETKF analyses (no truth in training). Test: each method "
        f"cycled by `run_cycle` from the same initial state (error std {cfg['test_initial_std']}), time-mean rmse_a "
        f"after {cfg['burn_in']} cycles; 3D-Var: climatological B, xB={cfg['xB']}."),
        "",
        *md_table(["seed", "CNN (truth)", "CNN (reanalysis)", "3D-Var", "ETKF N=28", "train s (truth)",
                   "train s (reanalysis)"], rows, ["l", "r", "r", "r", "r", "r", "r"]),
        "",
        (f"Bars (issue 12{', --quick' if args.quick else ''}): truth-trained ≤ {bars['truth']} "
        f"({'met' if met_t else 'missed'}: {med['rmse_truth']:.3f}), reanalysis-trained ≤ {bars['reanalysis']} "
        f"({'met' if met_r else 'missed'}: {med['rmse_reanalysis']:.3f}). Paper: approaches the tuned EnKF "
        "(our ETKF 0.18) with far larger training sets and GPU training. Training times are wall seconds on one "
        "thread of a shared 2-core machine (load average 15-20 from other jobs), so they overstate the CPU cost "
        "several times over: the --quick run (seed 1: 0.295 truth-trained, 0.281 reanalysis-trained) took 36 s "
        "of CPU for 10 min of wall."),
        "",
        ("Tried for the truth-trained bar (seed 1, test or cycled-validation rmse_a): 2000 vs 8000 training "
         "cycles 0.295 vs 0.29 (the online rounds plateau at 0.28-0.30 whatever the size); online learning rate "
         "2e-3 instead of 5e-4: rounds oscillate 0.29-0.34; 64 channels x 4 blocks: no better after the first "
         "fit (0.376 vs 0.372); fine-tuning through the cycle (`unroll_epochs`, 5-cycle windows, lr 3e-4) after "
         "the quick run: cycled validation 0.314 -> 0.290, test 0.295 -> 0.280 in 4 epochs, then no further gain "
         "at lr 5e-4; after the headline fits (seeds 1-3, lr 3e-4, early stopping on the cycled validation) it "
         "kept the online weights of seeds 1 and 2 (validation 0.299 -> 0.302, 0.301 -> 0.314 after one epoch) "
         "and moved seed 3 from 0.279 to 0.268 on the test (validation 0.283 -> 0.280): median unchanged, not in "
         "the table. Training on the reanalysis gives the better test rmse: its targets are a smoother function "
         "of (forecast, observations) than the truth, a lower-variance regression target."),
        "",
        *provenance(__file__, "1 (torch.set_num_threads(1))", total_wall=(f"{wall:.0f} s for {len(seeds)} seeds" + (" (read back from the per-seed checkpoints, "
                    "--resume; each seed trained in its own process)" if args.resume else ""))),
    ])
    path = output_path(args)
    if path is not None:
        write_section(KEY, body, path)
    print(body)


if __name__ == "__main__":
    main()
