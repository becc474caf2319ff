"""ENSO from observed Niño-3 SST: forecast skill vs lead against persistence, with and without the learned correction.

Runs the ``enso/recharge-learned`` pipeline (:mod:`hybrida.experiment.enso`)
on the PyWavelets copy of NOAA CPC's Niño table (ERSST v4, 1950-01..2016-08)
for several seeds (the ensemble, its stochastic forcing and the network's
initial weights are seeded) and writes the "enso" section of
docs/benchmarks.md: skill vs lead on 1991-2010 (verify) and 2011-2016
(test), the issue-18 targets per seed, the innovation statistics and the
independent check against Niño-3.4 / Niño-4.

    .venv/bin/python benchmarks/reproduce/enso.py                 # 3 seeds, about 3-5 minutes on 2 busy cores
    .venv/bin/python benchmarks/reproduce/enso.py --quick         # 1 seed, quick settings
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from hybrida.datasets.enso import write_enso_observations
from hybrida.experiment.enso import EnsoConfig, run_enso
from hybrida.experiment.presets import ENSO_PRESETS

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.common import add_output_args, md_table, output_path, provenance, write_section

LEADS = (1, 2, 3, 4, 6, 9, 12)
RUNS = ("recharge", "learned")


def med(values: list[float]) -> float:
    return statistics.median(values)


def skill_rows(summaries: list[dict], period: str) -> list[list[str]]:
    """Persistence, then each run's ACC / RMSE / CRPS / spread-skill per lead (medians over seeds)."""
    first = summaries[0]["skill"]["recharge"][period]
    rows = [["persistence", "ACC", *(f"{first['persistence_acc'][k - 1]:.2f}" for k in LEADS)],
            ["persistence", "RMSE", *(f"{first['persistence_rmse'][k - 1]:.2f}" for k in LEADS)]]
    names = {"recharge": "oscillator", "learned": "oscillator + learned correction"}
    for run in RUNS:
        for key, label in (("acc", "ACC"), ("rmse", "RMSE"), ("crps", "CRPS"), ("spread_skill", "spread/skill")):
            vals = [med([s["skill"][run][period][key][k - 1] for s in summaries]) for k in LEADS]
            rows.append([names[run], label, *(f"{v:.2f}" for v in vals)])
    return rows


def target_rows(summaries: list[dict]) -> list[list[str]]:
    """How many seeds meet each target, with the per-seed ACC(6)."""
    rows = []
    n = len(summaries)
    for period in ("verify", "test"):
        pers = summaries[0]["targets"]["recharge"][f"{period}_persistence_acc6"]
        for run in RUNS:
            t = [s["targets"][run] for s in summaries]
            accs = ", ".join(f"{x[f'{period}_acc6']:.2f}" for x in t)
            rows.append([period, run, f"{pers:.2f}", accs,
                         f"{sum(x[f'{period}_acc6_target_met'] for x in t)}/{n}",
                         f"{sum(x[f'{period}_rmse_target_met'] for x in t)}/{n}",
                         f"{sum(x[f'{period}_improves_acc6'] for x in t)}/{n} (median ΔACC(6) "
                         f"{med([s['skill']['learned'][period]['acc'][5] - s['skill']['recharge'][period]['acc'][5] for s in summaries]):+.3f})"
                         if run == "learned" else ""])
    return rows


def innovation_rows(summaries: list[dict]) -> list[list[str]]:
    rows = []
    for run in RUNS:
        for period in ("fit", "verify", "test"):
            def m(key: str, run: str = run, period: str = period) -> float:
                return med([s["innovations"][run][period][key] for s in summaries])

            rows.append([run, period, f"{m('omb_mean'):+.3f}", f"{m('normalised_variance'):.2f}",
                         f"{m('lag1_autocorr'):.2f}", f"{m('omb_rms'):.3f}", f"{m('oma_rms'):.3f}",
                         f"{m('desroziers_sigma_o'):.3f}", f"{m('desroziers_sigma_b'):.3f}", f"{m('hbh_rms'):.3f}"])
    return rows


def independent_rows(summaries: list[dict]) -> list[list[str]]:
    rows = []
    for period in ("fit", "verify", "test"):
        def m(key: str, period: str = period) -> float:
            return med([s["independent"]["recharge"][period][key] for s in summaries])

        rows.append([period, f"{m('corr_T_nino34'):.3f} ({m('corr_obs_nino3_nino34'):.3f})",
                     f"{m('corr_T_nino4'):.3f} ({m('corr_obs_nino3_nino4'):.3f})",
                     f"{m('h_leads_T_months'):.0f}", f"{m('h_leads_T_corr'):.2f}", f"{m('corr_h_T_lag0'):.2f}"])
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="1 seed, quick settings (10 members, 1 Desroziers iteration)")
    ap.add_argument("--threads", type=int, default=1)
    add_output_args(ap, "enso")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds = args.seeds[:1]
    torch.set_num_threads(args.threads)
    summaries, walls = [], []
    with tempfile.TemporaryDirectory() as tmp:
        obs = write_enso_observations(Path(tmp) / "enso.nc", "pywavelets")
        for seed in args.seeds:
            cfg = EnsoConfig(**{**ENSO_PRESETS["enso/recharge-learned"], "seed": seed, "quick": args.quick})
            t0 = time.perf_counter()
            summaries.append(run_enso(cfg, obs))
            walls.append(time.perf_counter() - t0)
            t = summaries[-1]["targets"]
            print(f"seed {seed}: {walls[-1]:.0f} s, sigma_o {summaries[-1]['sigma_o_tuned']:.3f}, {t}", flush=True)
    cfg = summaries[0]["config"]
    s0 = summaries[0]
    sig = ", ".join(f"{s['sigma_o_tuned']:.3f}" for s in summaries)
    noise = ", ".join("/".join(f"{q:.3f}" for q in s["noise_std_tuned"]) for s in summaries)
    params = s0["parameters"]["recharge"]
    ptxt = ", ".join(f"{k} {v['end_of_fit']:+.3f}" for k, v in params.items())
    lead_head = [f"{k} mo" for k in LEADS]
    body = [
        "## ENSO from observed Niño-3 SST: recharge oscillator, augmented ETKF, learned correction (issue 18)",
        "",
        ("Monthly Niño-3 anomaly (NOAA CPC, ERSST v4 as packaged in PyWavelets, 1950-01..2016-08) assimilated "
        f"into Jin's (1997) recharge oscillator [T, h, ξ] (ξ: red-noise wind forcing, memory "
        f"{cfg['fixed'].get('forcing_memory', 0):g} months; h and ξ never observed) by an augmented ETKF with "
        f"N = {cfg['members']} estimating {', '.join(cfg['estimate'])} with the state, stochastic forcing on every "
        "member. σ_o tuned on 1950-1990 by iterating σ_o ← Desroziers σ_o "
        f"({cfg['desroziers_iterations']} iterations; the forcing std scaled by σ_b(Desroziers)/rms HBHᵀ): "
        f"σ_o = {sig} °C (seeds {', '.join(map(str, args.seeds))}; the file's initial guess 0.3), forcing std "
        f"T/h/ξ per month {noise}. Parameters at the end of 1990 (seed {args.seeds[0]}): {ptxt} (1/month). "
        "Forecasts from every analysis (the ensemble with its own parameters and fresh forcing), scored by the "
        "ensemble mean against the later observed Niño-3 anomaly; persistence = the observed anomaly at the start. "
        "Spread/skill = sqrt(spread² + σ_o²)/RMSE. The learned correction (tanh MLP 4→16→16→2 of T, h and the "
        "season, added to the tendency) is trained on the 1950-1990 analyses and then cycled over the whole record. "
        f"Medians over {len(summaries)} seeds. "
        "Caveats: the initial forcing split T/h/ξ = 0.02/0.02/0.3 was chosen among four settings by the "
        "1950-1990 innovations alone (lag-1 0.38 vs 0.58 for 0.05/0.05/0.15, same normalised variance 1.0), but "
        "the verify/test scores of those settings were seen too, so the test period is not blind. Desroziers' "
        "iteration reaches σ_o = 0.25 from the other split: with autocorrelated model error its fixed point "
        "depends on the start, i.e. σ_o is not identified by it alone."),
        "",
        "### Skill vs lead, 1991-2010 (verify; forecasts started in these years)",
        "",
        *md_table(["forecast", "score", *lead_head], skill_rows(summaries, "verify"), ["l", "l"] + ["r"] * len(LEADS)),
        "",
        "### Skill vs lead, 2011-2016 (test; 56-68 starts per lead)",
        "",
        *md_table(["forecast", "score", *lead_head], skill_rows(summaries, "test"), ["l", "l"] + ["r"] * len(LEADS)),
        "",
        "### Issue-18 targets (seeds meeting each)",
        "",
        ("ACC(6) target: ≥ persistence + 0.1; RMSE target: below persistence at every lead from 3 to 12 months; "
        "'improves': the learned correction's ACC(6) above the oscillator's."),
        "",
        *md_table(["period", "run", "persistence ACC(6)", "ACC(6) per seed", "ACC target", "RMSE target",
                   "improves"], target_rows(summaries)),
        "",
        "### Innovation statistics (O−B of the monthly analyses; first 24 months left out)",
        "",
        ("normalised variance = mean (O−B)²/(HBHᵀ + R) (target 0.8-1.2); lag-1 = autocorrelation of the normalised "
        "innovations; Desroziers σ_o = sqrt(mean d_oa·d_ob), σ_b = sqrt(mean d_ab·d_ob); HBHᵀ from the ensemble."),
        "",
        *md_table(["run", "period", "O−B mean", "norm. variance", "lag-1", "O−B rms", "O−A rms", "Desroziers σ_o",
                   "Desroziers σ_b", "rms HBHᵀ^½"], innovation_rows(summaries)),
        "",
        "### Independent check (not assimilated): analysed T vs Niño-3.4 and Niño-4; the unobserved h",
        "",
        ("Correlation of the analysed T with each index (in brackets: the observed Niño-3 with the same index); "
        "h leads T by the lag maximising corr(h(t), T(t + lag)), 0-24 months."),
        "",
        *md_table(["period", "corr T, Niño-3.4", "corr T, Niño-4", "h leads T (months)", "corr at that lag",
                   "corr(h, T) lag 0"], independent_rows(summaries)),
        "",
        ("The lead is the oscillator's own: h is never observed, so it leads T as the linear free mode with the "
         "estimated parameters makes it, (π − atan2(ω, (R + r)/2))/ω (`hybrida.models.recharge.h_lead_months`). "
         "With the end-of-fit parameters: period "
         f"{med([s['oscillator']['recharge']['period_months'] for s in summaries]):.0f} months, h leads T by "
         f"{med([s['oscillator']['recharge']['h_leads_T_months'] for s in summaries]):.1f} months (medians over seeds; "
         "per seed " + ", ".join(f"{s['oscillator']['recharge']['h_leads_T_months']:.1f}" for s in summaries) + "). "
         "That is a quarter of a 4-5-year period, lengthened where the filter raises the damping of h, r, far "
         f"above its prior 0.03/month (seed {args.seeds[0]}: r = {params.get('r', {}).get('end_of_fit', math.nan):.3f}), "
         "which also weakens the lagged correlation (tests/models/test_recharge.py checks both on noise-driven runs). The observed warm-water volume leads "
         "Niño-3.4 by about 7 months (Meinen & McPhaden 2000); with these parameters the oscillator does not."),
        "",
        ("Variants tried against the test-period target (2026-12-03, 3 seeds each, not the preset): parameter "
         "noise 0.0005 or 0 instead of 0.002; a tight prior on r (std 0.005); r not estimated (0.03 or 0); test "
         "ACC(6) 0.40-0.47 in every run, against the 0.54 target (persistence 0.44 + 0.1)."),
        "",
        *provenance(__file__, f"{args.threads} (torch)", argv,
                    wall_time=f"{sum(walls):.0f} s for {len(walls)} seed(s) (each: Desroziers iterations, "
                    "oscillator run, training, hybrid run)"),
    ]
    text = "\n".join(body)
    path = output_path(args)
    if path is not None:
        write_section("enso", text, path)
    print(text)


if __name__ == "__main__":
    main()
