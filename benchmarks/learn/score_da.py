"""Score-based DA and generated ensembles on Lorenz-96 (issue 15, part 2): bars against the EnKS / ETKF.

Runs the ``score_l96`` pipeline per seed (train a diffusion prior of 8-state windows on a
free run; sample whole test windows conditioned on 50% random observations σ=1 every 0.05;
EnKS with the true model and the same N on the same windows; generated-ensemble ETKF cycled
against the model-propagated ETKF) and writes the ``score-da`` section of docs/benchmarks.md.

    .venv/bin/python benchmarks/learn/score_da.py                      # seed 1, full preset
    .venv/bin/python benchmarks/learn/score_da.py --quick              # the quick preset
    .venv/bin/python benchmarks/learn/score_da.py --resume             # reuse a finished training
    .venv/bin/python benchmarks/learn/score_da.py --collect            # only rewrite the section
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import add_output_args, md_table, output_path, provenance, write_section

SECTION = "score-da"


def run_seed(out: str, seed: int, quick: bool, overrides: list[str], resume: bool) -> dict:
    """One seed of the pipeline (1 thread); with ``resume`` a finished summary is reused."""
    import torch

    torch.set_num_threads(1)
    from hybrida.experiment.score_l96 import run

    path = Path(out)
    if resume and (path / "summary.json").is_file():
        return json.loads((path / "summary.json").read_text())
    return run(path, seed=seed, quick=quick, overrides=overrides, resume=resume, progress=print)


def _f(x: float) -> str:
    return "diverged" if x == float("inf") else f"{x:.3f}"


def section(summaries: list[dict], args: argparse.Namespace, wall: float) -> str:
    """The docs/benchmarks.md section body."""
    s0 = summaries[0]
    cfg, bar = s0["config"], s0["bar"]
    rows = []
    for s in summaries:
        t, g = s["training"], s["generated"]
        rows.append([
            s["seed"], _f(s["rmse"]), _f(s["baselines"]["enks"]), f"{s['rmse_ratio']:.2f}",
            f"{s['spread_ratio']:.2f}", f"{s['enks']['spread_ratio']:.2f}", _f(s["crps"]["score"]),
            _f(s["crps"]["enks"]), _f(g["generated_etkf"]), _f(g["etkf"]), f"{g['ratio']:.2f}",
            t.get("steps"), t.get("best_step"), f"{t.get('best_valid', float('nan')):.4f}",
            f"{s['train_s'] / 60:.1f}", f"{s['train_cpu_s'] / 60:.1f}",
        ])
    header = ["seed", "score rmse", "EnKS rmse", "ratio", "score spread/rmse", "EnKS spread/rmse", "score CRPS",
              "EnKS CRPS", "gen. ETKF rmse_a", "ETKF rmse_a", "ratio", "train steps", "best step",
              "valid denoising loss", "train wall (min)",
              "train CPU (min)"]
    med = {k: statistics.median(v(s) for s in summaries) for k, v in {
        "ratio": lambda s: s["rmse_ratio"], "spread": lambda s: s["spread_ratio"],
        "gen": lambda s: s["generated"]["ratio"]}.items()}

    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"

    hist = "; ".join(f"seed {s['seed']} score {s['score']['rank_histogram']}, EnKS {s['enks']['rank_histogram']}"
                     for s in summaries)
    lines = [
        f"## Score-based DA and generated ensembles (Lorenz-96){' — quick' if args.quick else ''}",
        "",
        (f"L96 n=40, F=8, dt 0.05; {cfg['obs_fraction']:.0%} of the variables observed at random (new draw each "
         f"time), σ={cfg['obs_std']}, every 0.05. Prior: ScoreNet (2-D conv over time × periodic space, "
         f"{cfg['channels']} channels, depth {cfg['depth']}) on windows of {cfg['window']} states from a "
         f"{cfg['free_run']}-step free run, denoising score matching with the VP cosine schedule (Rozet & Louppe "
         f"2023), batch {cfg['batch']}, Adam lr {cfg['lr']:g} → {cfg['lr_final']:g} (cosine over max_steps"
         f"{', after a ' + str(cfg['warmup']) + '-step linear warm-up' if cfg.get('warmup') else ''})"
         f"{', EMA of the weights (decay ' + format(cfg['ema'], 'g') + ') validated and kept' if cfg.get('ema') else ''}, "
         f"≤{cfg['max_steps']} steps / {cfg['max_minutes']:g} min, early stopping on a separate run "
         f"(patience {cfg['patience']} × {cfg['valid_every']} steps). "
         f"Posterior: {cfg['test_windows']} test windows of {cfg['test_length']} states (composed from "
         f"{cfg['window']}-state windows), N={cfg['members']} samples, DDIM {cfg['sample_steps']} steps, "
         f"{cfg['corrections']} corrector steps, SDA guidance γ={cfg['gamma']}"
         f"{', conditioned on the EnKS analysis before the window' if cfg['past'] else ''}. EnKS: square-root, "
         f"true model, N={cfg['members']}, infl {cfg['enks_infl']}, filtered up to each window and smoothed over "
         f"it. Generated ensembles (GenCast-like): ETKF whose N={cfg['members']} forecast members are the last "
         f"states of windows sampled ({cfg['gen_steps']} DDIM steps), each given its own member's previous "
         f"{cfg['window'] - 1} analysed states (error std {cfg.get('history_std', 0.5)}; the ETKF transform also "
         "updates those histories), recentred on one deterministic model forecast of the analysis mean; vs the ETKF "
         f"(infl {cfg['etkf_infl']}) with model-propagated members, {cfg['cycles']} cycles (first "
         f"{cfg['cycle_burn_in']} not scored), same truth and observations."),
        "",
        (f"**Median over {len(summaries)} seed(s): score/EnKS rmse {med['ratio']:.2f} (bar ≤ {bar['rmse_ratio']}: "
         f"{verdict(med['ratio'] <= bar['rmse_ratio'])}); spread/rmse {med['spread']:.2f} (bar "
         f"{bar['spread_ratio'][0]}–{bar['spread_ratio'][1]}: "
         f"{verdict(bar['spread_ratio'][0] <= med['spread'] <= bar['spread_ratio'][1])}); generated/propagated "
         f"ETKF rmse_a {med['gen']:.2f} (bar ≤ {bar['generated_ratio']}: "
         f"{verdict(med['gen'] <= bar['generated_ratio'])}).**"),
        "",
        *md_table(header, rows),
        "",
        f"- rank histograms (counts of ranks 0..N over states and variables): {hist}",
        (f"- total wall time {wall / 60:.1f} min; wall times are on the shared 2-core machine (other engineers' "
         "jobs running), the CPU columns are process CPU time on 1 thread"),
        *(f"- {note}" for note in args.note),
        *provenance(__file__, "1", sys.argv[1:], seeds=", ".join(str(s["seed"]) for s in summaries)),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--quick", action="store_true", help="the quick preset (<= 5 min per seed)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--out", default=str(ROOT / "runs" / "score_da"), help="folder of the per-seed runs")
    parser.add_argument("--resume", action="store_true", help="reuse finished seeds and trainings")
    parser.add_argument("--collect", action="store_true", help="only read the finished seeds' summary.json")
    parser.add_argument("--note", action="append", default=[], help="an extra bullet line for the section")
    add_output_args(parser, SECTION)
    args = parser.parse_args(argv)
    import numpy  # noqa: F401  (their versions go into the section, also with --collect)
    import torch  # noqa: F401

    t0 = time.perf_counter()
    outs = [str(Path(args.out) / f"{'quick_' if args.quick else ''}seed{s}") for s in args.seeds]
    if args.collect:
        files = [Path(o) / "summary.json" for o in outs]
        summaries = [json.loads(f.read_text()) for f in files if f.is_file()]
        if not summaries:
            parser.error(f"--collect: no summary.json under {args.out}")
    else:
        summaries = [run_seed(o, s, args.quick, list(args.overrides), args.resume) for o, s in zip(outs, args.seeds)]
    wall = sum(s["wall_s"] for s in summaries) if args.collect else time.perf_counter() - t0
    body = section(summaries, args, wall)
    print(body)
    path = output_path(args)
    if path is not None:
        write_section(SECTION, body, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
