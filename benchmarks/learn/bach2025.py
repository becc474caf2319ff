"""Learned LETKF localisation/inflation against the grid-searched LETKF on the Bach et al. (2025) L96 twin (issue 13).

Runs the ``bach2025_l96`` pipeline (:mod:`hybrida.experiment.filter_bach_l96`) for one seed at
each σ_y of ``--sigmas`` (outputs in OUT/sigma<σ>) and writes one table per σ_y (per N: the
paper's tuned LETKF, ours grid-searched, the adaptive-inflation LETKF, the learned filter
trained with the truth, fine-tuned at N and truth-free, their gains) to ``docs/benchmarks.md``
between ``<!-- learned-filter-bach2025:start -->`` and ``<!-- learned-filter-bach2025:end -->``.

    .venv/bin/python benchmarks/learn/bach2025.py                          # sigma_y 1 and 0.7, preset defaults
    .venv/bin/python benchmarks/learn/bach2025.py --sigmas 0.7 --set sizes=[10,20]   # any pipeline override
    .venv/bin/python benchmarks/learn/bach2025.py --quick --no-write       # the quick preset
    .venv/bin/python benchmarks/learn/bach2025.py --from-summary           # the section from finished runs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (
    DOC,
    add_output_args,
    md_table,
    output_path,
    provenance,
    read_section,
    write_section,
)

SECTION = "learned-filter-bach2025"
COLUMNS = ("letkf", "adaptive", "truth", "finetuned", "at_N", "observations")


def _f(x: float | None) -> str:
    return "—" if x is None else ("diverged" if x == float("inf") else f"{x:.3f}")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.1f}%"


def _without_note(argv: list[str]) -> list[str]:
    """``argv`` less ``--note TEXT`` (the notes are in the section already)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--note":
            skip = True
        elif not a.startswith("--note="):
            out.append(a)
    return out


def sigma_dir(out: Path, sigma: float) -> Path:
    """Output folder of the run at σ_y = ``sigma``."""
    return out / f"sigma{sigma:g}"


def _table(s: dict) -> list[str]:
    """The Markdown table of one summary: a row per N."""
    cfg = s["config"]
    paper = {int(k): v for k, v in s["paper_letkf"].items()}
    div, com = s.get("diverged", {}), s.get("r_rmse_common", {})

    def cell(N: int, name: str) -> str:
        c = com.get(str(N), {})
        if name == "adaptive":  # on the trajectories it kept too, against the LETKF there
            c = s.get("r_rmse_vs_adaptive", {}).get(str(N), c)
        if name not in c:
            return "—"
        text = f"{c[name]:.3f}" + ("" if name == "letkf" else f" ({_pct(1 - c[name] / c['letkf'])})")
        lost = div.get(str(N), {}).get(name, 0)
        fewer = name == "adaptive" and c.get("trajectories", 0) < com[str(N)]["trajectories"]
        return text + (f", lost {lost}" if lost else "") + (f", on {c['trajectories']}" if fewer else "")

    rows = []
    for N in sorted(int(k.removeprefix("letkf_N")) for k in s["baselines"] if k.startswith("letkf_N")):
        p = s["baseline_params"][f"letkf_N{N}"]
        rows.append((N, _f(paper.get(N)), f"{cell(N, 'letkf')} ({p['infl']:g}, {p['loc_rad']:g})",
                     *(cell(N, k) for k in COLUMNS[1:]), f"{com[str(N)]['trajectories']}/{cfg['test_trajectories']}"))
    return md_table(["N", "Bach et al. LETKF", "our grid-searched LETKF (infl, radius)",
                     "LETKF, adaptive inflation (gain)", f"learned, truth loss, trained at N={cfg['train_N']} (gain)",
                     "fine-tuned at N (gain)", "trained at N from the tuned LETKF (gain)",
                     "learned, next-obs loss (gain)", "trajectories scored"], rows)


def _block(s: dict, out: Path, wall: float, cpu: float, last: bool) -> list[str]:
    """The σ_y subsection: table, training cost, bars, wall/CPU."""
    cfg = s["config"]
    cost = ", ".join(f"{k} loss at N={cfg['train_N']}: {v['cpu_s']:.0f} CPU s ({v['wall_s']:.0f} s wall, "
                     f"best validation R-RMSE {v['best_valid']:.3f})" for k, v in s["training"].items())
    tune = "; ".join(f"N={N}: {v['cpu_s']:.0f} CPU s ({v['wall_s']:.0f} s wall, {v['epochs']} epochs)"
                     if "cpu_s" in v else f"N={N}: failed ({v['failed']})"
                     for N, v in sorted(s.get("finetune", {}).items(), key=lambda kv: int(kv[0])))
    own = "; ".join(f"N={N}: {v['cpu_s']:.0f} CPU s ({v['wall_s']:.0f} s wall, best validation R-RMSE "
                    f"{v['best_valid']:.3f}{', stopped early' if v.get('stopped_early') else ''})"
                    if "cpu_s" in v else f"N={N}: failed ({v['failed']})"
                    for N, v in sorted(s.get("trained_at_N", {}).items(), key=lambda kv: int(kv[0])))
    ft_lr = _finetune_lr(cfg)
    checks = s["bar"]["checks"]
    return [
        f"### σ_y = {cfg['sigma']:g}",
        "",
        *_table(s),
        "",
        f"Training cost (1 torch thread, shared 2-core machine): {cost}."
        + (f" Fine-tuning (truth loss, ≤{cfg['finetune_epochs']} epochs, lr {ft_lr:g}): {tune}." if tune else "")
        + (f" Trained at N from the start (truth loss, as above): {own}." if own else ""),
        "Bars: " + ", ".join(f"{k} " + ("met" if v else "NOT met") for k, v in checks.items()) + ".",
        (f"Pipeline wall {wall:.0f} s, CPU {cpu:.0f} s" + (" (its last invocation)" if last else "")
         + f"; outputs in `{out.parent.name}/{out.name}/` (summary.json, test_scores.json, plots)."),
        "",
    ]


def kept_block(sigma: float, path: Path) -> list[str]:
    """The ``### σ_y = sigma`` table block of the section now in ``path`` (heading to its 'Pipeline wall' line)."""
    lines = read_section(SECTION, path).splitlines()
    head = f"### σ_y = {sigma:g}"
    if head not in lines:
        raise SystemExit(f"--keep-sigmas {sigma:g}: the section in {path} has no '{head}' block")
    block = lines[lines.index(head):]
    end = next((i for i, line in enumerate(block) if line.startswith("Pipeline wall")), len(block) - 1)
    return [*block[:end + 1], f"(σ_y = {sigma:g}: not re-run; this block is kept as the section had it.)", ""]


def _finetune_lr(cfg: dict) -> float:
    """The fine-tuning learning rate of a summary's config (runs before the field existed used lr / 2)."""
    if "finetune_lr" not in cfg:
        return cfg["lr"] / 2
    return cfg["finetune_lr"] or cfg["lr"]


def _schedule(cfg: dict) -> str:
    """How the networks of their own at N are trained, where that differs from train_N."""
    lr, final = cfg.get("at_N_lr") or cfg["lr"], cfg.get("at_N_lr_final")
    if final:
        return (f" but with the learning rate decaying from {lr:g} to {final:g} (cosine over {cfg['epochs']} epochs) "
                "and no early stopping (the best validated weights are kept)")
    return f" (lr {lr:g})" if lr != cfg["lr"] else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_bach2025"),
                        help="output root (the run at sigma_y S goes to OUT/sigmaS)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=None,
                        help="observation error stds σ_y (default 1.0 and 0.7; with --quick 1.0)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--note", action="append", default=[], help="a sentence added to the section (repeatable)")
    parser.add_argument("--from-summary", action="store_true",
                        help="write the section from OUT/sigmaS/summary.json of finished runs instead of running")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="pipeline override KEY=VALUE")
    parser.add_argument("--keep-sigmas", type=float, nargs="+", default=[],
                        help="σ_y whose table block is kept from the section as it is (not re-run), after the others")
    add_output_args(parser, SECTION)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from hybrida.experiment.filter_bach_l96 import run

    sigmas = args.sigmas or ([1.0] if args.quick else [1.0, 0.7])
    blocks, first = [], None
    for sigma in sigmas:
        out = sigma_dir(Path(args.out), sigma)
        if args.from_summary:
            s = json.loads((out / "summary.json").read_text())
            wall, cpu = s["wall_s"], s["cpu_s"]
        else:
            t0, c0 = time.perf_counter(), time.process_time()
            s = run(out, seed=args.seed, quick=args.quick, overrides=[*args.overrides, f"sigma={sigma}"],
                    resume=args.resume, progress=lambda m: print(m, flush=True))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        first = first or s
        blocks += _block(s, out, wall, cpu, args.from_summary or args.resume)
    for sigma in args.keep_sigmas:
        blocks += kept_block(sigma, Path(args.output) if args.output not in ("-", "") else DOC)
    sigmas = [*sigmas, *args.keep_sigmas]
    cfg = first["config"]
    body = "\n".join([
        "## Learned LETKF localisation and inflation, Bach et al. (2025) L96 (issue 13, parts 2–3)",
        "",
        (f"Lorenz-96 d=40, F=8, x1, x5, …, x37 observed every 0.15 (3 RK4 steps of 0.05), σ_y ∈ {sigmas}. "
         f"R-RMSE = mean ‖x̄ᵃ−x‖/‖x‖ over {cfg['test_trajectories']} test trajectories × {cfg['test_cycles']} "
         f"cycles after {cfg['burn_in']} burn-in (the paper: 64 × 1500), the same truth, observations and start "
         "ensembles for every filter; a trajectory that any filter loses (forecast beyond 1e3 or non-finite: "
         "'lost k' in the table) is left out for all, and gains (1 − R-RMSE / grid-searched LETKF) are on the "
         "trajectories every filter kept (the adaptive-inflation LETKF, which loses more at small N, is scored "
         "on those of them it kept too, 'on k', against the LETKF on the same). The LETKF is grid-searched per N over inflation "
         f"{cfg['infls']} × radius {cfg['radii']}"
         + (f" (plus {cfg['large_radii']} at N ≥ {cfg['large_from']})" if cfg.get("large_radii") else "")
         + f" on {cfg['grid_trajectories']} separate trajectories × "
         f"{cfg['grid_cycles']} cycles. The adaptive-inflation LETKF is hybrida's LETKF with `adaptive=True` "
         "(prior inflation from innovation statistics, Li et al. 2009 / Miyoshi 2011, one λ per trajectory, "
         "no fixed inflation) at the grid-searched radius. The learned filter (taper per integer distance and "
         f"per distance to the nearest observation ({cfg['sites']} classes), base inflation per class"
         + (", a deep-sets ensemble network rescaling the taper distance and the inflation per grid point" if cfg["field"] else "")
         + (", a convolutional correction of the analysis mean" if cfg["correction"] else "")
         + f") starts at the tuned LETKF of N={cfg['train_N']} and is trained there by truncated BPTT (windows of "
         f"{cfg['window']} cycles, Adam lr {cfg['lr']}, ≤{cfg['epochs']} epochs of {cfg['train_trajectories']} × "
         f"{cfg['train_cycles']} new training cycles, early stopping on {cfg['valid_trajectories']} × "
         f"{cfg['valid_cycles']} validation cycles), then run unchanged at the other N"
         + (f" and fine-tuned at N={cfg['finetune_sizes']} (truth loss, ≤{cfg['finetune_epochs']} epochs from the "
            f"N={cfg['train_N']} weights, lr {_finetune_lr(cfg):g})" if cfg["finetune_epochs"] else "")
         + (f"; at N={cfg['at_N_sizes']} a network of its own is also trained from the start, from the tuned "
            f"LETKF of that N, the same way as at N={cfg['train_N']}" + _schedule(cfg) if cfg.get("at_N_sizes") else "")
         + "."),
        "",
        *blocks,
        *args.note,
        *([""] if args.note else []),
        *provenance(__file__, "1 (torch)", _without_note(sys.argv[1:] if argv is None else argv)),
    ])
    print(body)
    if (path := output_path(args)) is not None:
        write_section(SECTION, body, path)


if __name__ == "__main__":
    main()
