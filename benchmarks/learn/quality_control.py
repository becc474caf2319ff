"""Observation quality control: background check, learned gross-error detector, VarQC (issue 14, part 4).

Scenario: Lorenz-96 (n=40, dt=0.05, F=8), every variable observed every step
with sigma_o = 1; each observation carries a gross error of ±10 sigma_o with
probability 0.1 (``GrossErrorObs``). The clean run uses the same observations
with the gross errors removed. Methods (median over seeds of the time-mean
analysis rmse after a burn-in):

* ETKF (N=30, infl 1.03): clean; no QC; background check (k=5, HBH^T from the
  ensemble spread); learned detector (MLP on innovation features, trained on
  a separate training twin against the priors of an ETKF run with the
  background check, threshold for a 0.5% validation false-alarm rate);
* 3D-Var (B = 0.02 x climatology): clean; no QC; background check with the
  static B; VarQC Huber (c=1.5); VarQC Gaussian-plus-flat (A=0.1, d=15).

Bars (issue 14): rmse within 10% of the clean-observation run; without QC
>= 2x worse or diverged; hit and false-alarm rates per detector (for VarQC:
final weight < 0.5 counts as a rejection).

    .venv/bin/python benchmarks/learn/quality_control.py           # 5 seeds, 700 cycles
    .venv/bin/python benchmarks/learn/quality_control.py --quick   # 3 seeds, 400 cycles
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from hybrida.assimilation.ensemble.etkf import ETKF
from hybrida.assimilation.variational.robust import GaussianFlat, Huber
from hybrida.assimilation.variational.threedvar import ThreeDVar
from hybrida.cycle import FilterDiverged, run_cycle
from hybrida.experiment.twin import Twin, climatology, make_twin
from hybrida.learn.qc import fit_gross_error_detector, gross_error_examples
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.networks import IdentityObs
from hybrida.observations.qc import (
    BackgroundCheck,
    GrossErrorObs,
    LearnedGrossErrorDetector,
    detection_rates,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.common import add_output_args, md_table, output_path, provenance, write_section

N_STATE, N_ENS, INFL, XB = 40, 30, 1.03, 0.02
PROB, K_SIGMA, K_CHECK, TARGET_FAR = 0.1, 10.0, 5.0, 0.005
BURN = 100


def clean_twin(twin: Twin) -> Twin:
    """The same observations with the injected gross errors removed."""
    obs = [replace(o, y=o.y - o.meta["gross_error"], meta={**o.meta, "gross": torch.zeros_like(o.meta["gross"])})
           for o in twin.observations]
    return replace(twin, observations=obs)


def run(model, method, state, twin: Twin, seed: int, qc=None, varqc: bool = False) -> dict[str, float]:
    """Mean analysis rmse after the burn-in (inf if diverged) and the detector's hit/false-alarm rates."""
    rs, flags, gross = [], [], []
    try:
        for rec, _ in run_cycle(
            model, method, state, twin.truth, twin.observations, twin.steps_per_cycle,
            generator=torch.Generator().manual_seed(seed), innovations=False, probabilistic_scores=False, qc=qc,
        ):
            rs.append(rec.rmse_a)
            f = method.analysis_flags() if varqc else rec.qc_flags
            if f is not None and rec.cycle > BURN:
                flags.append(f)
                gross.append(twin.observations[rec.cycle - 1].meta["gross"])
    except FilterDiverged:
        return {"rmse": math.inf, "hit": math.nan, "far": math.nan}
    rmse = float(torch.tensor(rs[BURN:]).mean())
    if not math.isfinite(rmse) or rmse > 10.0:  # beyond climatology (~3.6): diverged
        rmse = math.inf
    hit, far = detection_rates(flags, gross) if flags else (math.nan, math.nan)
    return {"rmse": rmse, "hit": hit, "far": far}


def train_detector(model, seed: int, k_train: int, epochs: int) -> tuple[LearnedGrossErrorDetector, dict]:
    """Learned detector trained on a twin independent of the test twin (priors of an ETKF + background check)."""
    g = torch.Generator().manual_seed(1000 + seed)
    x0 = model.forecast(model.initial_state() + torch.randn(N_STATE, generator=g, dtype=torch.float64), 500)
    twin = make_twin(model, GrossErrorObs(IdentityObs(N_STATE, std=1.0), PROB, K_SIGMA), x0, k_train, g)
    etkf = ETKF(N=N_ENS, infl=INFL)
    priors = []
    state = etkf.initial_state(x0, 1.0, g)
    check = BackgroundCheck(K_CHECK)
    for k, o in enumerate(twin.observations, start=1):
        prior = etkf.forecast(model, state, twin.steps_per_cycle, (k - 1) * model.dt)
        priors.append(prior)
        state = etkf.analyse(prior, check.screen(o, prior)[0], k * model.dt, g)
    X, y = gross_error_examples(twin.observations[BURN:], priors[BURN:])
    det = LearnedGrossErrorDetector(width=16, depth=2, seed=seed)
    hist = fit_gross_error_detector(det, X, y, epochs=epochs, lr=1e-2, batch_size=4096,
                                    target_far=TARGET_FAR, seed=seed)
    return det, {"valid hit": hist.valid_hit_rate, "valid far": hist.valid_false_alarm_rate}


def run_seed(seed: int, k: int, k_train: int, epochs: int) -> dict[str, dict[str, float]]:
    model = Lorenz96(N_STATE)
    g = torch.Generator().manual_seed(seed)
    x0 = model.forecast(model.initial_state() + torch.randn(N_STATE, generator=g, dtype=torch.float64), 500)
    clim = climatology(model, x0, 5000, thin=5)
    gross = make_twin(model, GrossErrorObs(IdentityObs(N_STATE, std=1.0), PROB, K_SIGMA), x0, k,
                      torch.Generator().manual_seed(seed + 1))
    clean = clean_twin(gross)
    det, fit = train_detector(model, seed, k_train, epochs)

    def ens():
        e = ETKF(N=N_ENS, infl=INFL)
        return e, e.initial_state(x0, 1.0, torch.Generator().manual_seed(seed + 2))

    out: dict[str, dict[str, float]] = {}
    out["etkf clean"] = run(model, *ens(), clean, seed)
    out["etkf no QC"] = run(model, *ens(), gross, seed)
    out["etkf background check"] = run(model, *ens(), gross, seed, qc=BackgroundCheck(K_CHECK))
    out["etkf learned detector"] = {**run(model, *ens(), gross, seed, qc=det), **fit}
    out["3dvar clean"] = run(model, ThreeDVar(clim, xB=XB), x0.clone(), clean, seed)
    out["3dvar no QC"] = run(model, ThreeDVar(clim, xB=XB), x0.clone(), gross, seed)
    m = ThreeDVar(clim, xB=XB)
    out["3dvar background check"] = run(model, m, x0.clone(), gross, seed, qc=BackgroundCheck(K_CHECK, B=m.B))
    out["3dvar VarQC Huber"] = run(model, ThreeDVar(clim, xB=XB, robust=Huber(1.5)), x0.clone(), gross, seed,
                                   varqc=True)
    out["3dvar VarQC mixture"] = run(model, ThreeDVar(clim, xB=XB, robust=GaussianFlat(PROB, 15.0)), x0.clone(),
                                     gross, seed, varqc=True)
    return out


def fmt(x: float, d: int = 3) -> str:
    return "diverged" if x == math.inf else ("-" if math.isnan(x) else f"{x:.{d}f}")


def report(runs: list[dict[str, dict[str, float]]]) -> tuple[list[str], list[str]]:
    rows, bars = [], []
    for key in runs[0]:
        fam = key.split()[0]
        ratios = [r[key]["rmse"] / r[f"{fam} clean"]["rmse"] for r in runs]
        med = statistics.median(r[key]["rmse"] for r in runs)
        hit = statistics.median(r[key]["hit"] for r in runs)
        far = statistics.median(r[key]["far"] for r in runs)
        rows.append((key, fmt(med), fmt(statistics.median(ratios), 2), " ".join(fmt(x, 2) for x in ratios),
                     fmt(hit, 4), fmt(far, 4)))
        if key.endswith("clean"):
            continue
        if key.endswith("no QC"):
            ok = sum(x >= 2.0 for x in ratios)
            bars.append(f"- {key} >= 2x worse than clean or diverged: "
                        f"{'PASS' if statistics.median(ratios) >= 2.0 else 'FAIL'} "
                        f"(median ratio {fmt(statistics.median(ratios), 2)}; {ok}/{len(runs)} seeds)")
        else:
            ok = sum(x <= 1.10 for x in ratios)
            bars.append(f"- {key} within 10% of clean: {'PASS' if statistics.median(ratios) <= 1.10 else 'FAIL'} "
                        f"(median ratio {fmt(statistics.median(ratios), 2)}; {ok}/{len(runs)} seeds; "
                        f"hit {fmt(hit, 4)}, false alarms {fmt(far, 4)})")
    lines = md_table(("run", "rmse_a (median)", "ratio to clean (median)", "ratios per seed", "hit rate",
                      "false-alarm rate"), rows, ("l", "r", "r", "l", "r", "r"))
    vh = statistics.median(r["etkf learned detector"]["valid hit"] for r in runs)
    vf = statistics.median(r["etkf learned detector"]["valid far"] for r in runs)
    lines += ["", (f"Learned detector on its validation split (training twin): hit {vh:.4f}, "
                   f"false alarms {vf:.4f} (target {TARGET_FAR}).")]
    return lines, bars


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 seeds, 400 test / 400 training cycles")
    ap.add_argument("--seeds", type=int, default=None)
    add_output_args(ap, "quality-control")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = args.seeds or (3 if args.quick else 5)
    k, k_train, epochs = (400, 400, 60) if args.quick else (700, 600, 100)
    t0 = time.time()
    runs = []
    for s in range(seeds):
        runs.append(run_seed(s, k, k_train, epochs))
        print(s, {a: {c: round(d, 4) for c, d in b.items()} for a, b in runs[-1].items()},
              f"{time.time() - t0:.0f}s", flush=True)
    table, bars = report(runs)
    minutes = (time.time() - t0) / 60
    text = ["## Observation quality control (issue 14, part 4)", "",
            (f"L96 n=40, all variables observed every step (sigma_o 1), gross errors ±{K_SIGMA:g} sigma_o with "
             f"probability {PROB:g}; {seeds} seeds, {k} cycles (rmse after {BURN}); background check k={K_CHECK:g}; "
             f"learned detector trained on {k_train} cycles of an independent twin. 'clean' assimilates the same "
             f"observations without the gross errors. Hit/false-alarm rates: medians over seeds, after the burn-in "
             f"(VarQC: final weight < 0.5). Run time {minutes:.1f} min."), "",
            *table, "", "Bars:", "", *bars, "", *provenance(__file__, "1 (torch.set_num_threads(1))")]
    print("\n".join(text))
    out = output_path(args)
    if out is not None:
        write_section("quality-control", "\n".join(text), out)
    print(f"done {datetime.datetime.now():%H:%M}")


if __name__ == "__main__":
    main()
