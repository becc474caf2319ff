"""DA with a learned observation operator vs the true one: LETKF and 4D-Var on Lorenz-96 radiances.

L96 n=40, dto=0.05 (every step), RadianceObs (tanh, one channel per grid
point by default). Per seed: a twin of ``train + test`` cycles; H_theta is
fitted (:func:`hybrida.learn.obs_operator.fit_obs_operator`, LocalChannelNet)
on the first ``train`` cycles' pairs (a) (truth, y) and (b) (analysis mean, y),
the analyses coming from an LETKF run *with the true H* over those cycles,
assimilating the same y (so the inputs carry analysis error correlated with
the targets' noise: the realistic, harder case). Then LETKF and strong-
constraint 4D-Var (lag 1, B = xB I) assimilate the ``test`` cycles' observations
with the true H, H_theta(truth) and H_theta(analyses): same y, same seeds.
Writes section "learned-obs-operator" of docs/benchmarks.md.

    .venv/bin/python benchmarks/learn/learned_obs_operator.py            # full
    .venv/bin/python benchmarks/learn/learned_obs_operator.py --quick    # <= 5 min
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from hybrida.assimilation.ensemble.letkf import LETKF
from hybrida.assimilation.variational.fourdvar import FourDVar
from hybrida.experiment.reanalysis import assimilate
from hybrida.experiment.twin import climatology, make_twin
from hybrida.learn.obs_operator import collocated_pairs, fit_obs_operator
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.learned import with_learned_operator
from hybrida.observations.networks import EveryKthObs, RadianceObs

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.common import add_output_args, md_table, output_path, provenance, write_section

KEY = "learned-obs-operator"


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, float]:
    """One twin: fit H_theta on truth and on analysis pairs, then score LETKF and 4D-Var with each H."""
    model = Lorenz96(40)
    g = torch.Generator().manual_seed(seed)
    x0 = model.forecast(model.initial_state() + torch.randn(40, generator=g, dtype=torch.float64), 500)
    clim = climatology(model, x0, 2000)
    system = RadianceObs(40, args.channels, args.width, "tanh", scale=args.scale, std=args.std, every=args.every)
    K = args.train + args.test
    tw = make_twin(model, system, x0, K, g)
    out: dict[str, float] = {}

    def letkf() -> LETKF:
        return LETKF(N=20, loc_rad=4.0, infl=args.infl)

    def fourdvar() -> FourDVar:
        return FourDVar(clim, xB=args.xb, lag=1, B="identity")

    # training analyses: LETKF over the training cycles, with the true H on the radiances themselves, or
    # ("conventional") on independent point observations of every 2nd variable (sigma 1): the radiances are
    # then passive, as for a new instrument monitored before it is assimilated
    train_obs = tw.observations[: args.train]
    if args.analyses == "conventional":
        conv = EveryKthObs(40, 2, std=1.0, every=args.every)
        gc = torch.Generator().manual_seed(seed + 300)
        train_obs = [conv.observe(tw.truth[k], k, gc) for k in range(1, args.train + 1)]
    ana = assimilate(model, letkf(), tw.truth[0], train_obs, steps_per_cycle=args.every,
                     truth=tw.truth[: args.train + 1], burn_in=20, generator=torch.Generator().manual_seed(seed + 100))
    out["train_analysis_rmse"] = ana.rmse_a
    ops = {}
    fit_kw = {"half_window": args.half_window, "hidden": args.hidden, "epochs": args.epochs, "seed": seed}
    x_true, y, loc = collocated_pairs(tw.truth[: args.train + 1], tw.observations[: args.train])
    x_ana = ana.mean[21:]  # drop the spin-up analyses
    t0 = time.perf_counter()
    ops["truth"], _ = fit_obs_operator(x_true, y, loc, meta={"trained_on": "truth"}, **fit_kw)
    ops["analyses"], _ = fit_obs_operator(x_ana, y[20:], loc, meta={"trained_on": "analyses"}, **fit_kw)
    out["fit_s"] = time.perf_counter() - t0
    test_truth, test_obs = tw.truth[args.train :], tw.observations[args.train :]
    with torch.no_grad():
        for name, op in ops.items():
            out[f"h_err_{name}"] = float(((op(test_truth) - system.operator(test_truth)) ** 2).mean().sqrt())
    obs_sets = {"true": test_obs}
    obs_sets.update({name: [with_learned_operator(o, op, 40) for o in test_obs] for name, op in ops.items()})
    for mname, make in (("letkf", letkf), ("4dvar", fourdvar)):
        for hname, obs in obs_sets.items():
            r = assimilate(model, make(), test_truth[0], obs, steps_per_cycle=args.every, truth=test_truth,
                           burn_in=args.burn_in, generator=torch.Generator().manual_seed(seed + 200))
            out[f"{mname}_{hname}"] = r.rmse_a if r.diverged_at is None else float("inf")
            print(f"seed {seed} {mname} H={hname}: rmse_a {r.rmse_a:.4f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--train", type=int, default=3000, help="training cycles (pairs)")
    ap.add_argument("--test", type=int, default=1000, help="assimilation cycles scored")
    ap.add_argument("--burn-in", type=int, default=50)
    ap.add_argument("--channels", type=int, default=40)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--scale", type=float, default=10.0)
    ap.add_argument("--std", type=float, default=1.0)
    ap.add_argument("--every", type=int, default=1, help="model steps between observations")
    ap.add_argument("--infl", type=float, default=1.05)
    ap.add_argument("--xb", type=float, default=0.2)
    ap.add_argument("--half-window", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--analyses", default="radiance", choices=["radiance", "conventional"],
                    help="what the training LETKF assimilates: the radiances (true H) or point obs of every 2nd "
                    "variable (radiances passive); 'conventional' writes section learned-obs-operator-passive")
    ap.add_argument("--quick", action="store_true", help="1500 training, 300 test cycles (<= 5 min)")
    add_output_args(ap, KEY)
    args = ap.parse_args()
    key = KEY if args.analyses == "radiance" else KEY + "-passive"
    if args.quick:
        args.train, args.test, args.burn_in = 1500, 300, 30
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    res = {s: run_seed(s, args) for s in seeds}
    wall = time.perf_counter() - t0
    rows, ok = [], {k: 0 for k in ("letkf_truth", "letkf_analyses", "4dvar_truth", "4dvar_analyses")}
    for s, r in res.items():
        for m in ("letkf", "4dvar"):
            rt, ra = r[f"{m}_truth"] / r[f"{m}_true"], r[f"{m}_analyses"] / r[f"{m}_true"]
            ok[f"{m}_truth"] += rt <= 1.05
            ok[f"{m}_analyses"] += ra <= 1.10
            rows.append([s, "LETKF" if m == "letkf" else "4D-Var", f"{r[f'{m}_true']:.4f}", f"{r[f'{m}_truth']:.4f}",
                         f"{r[f'{m}_analyses']:.4f}", f"{rt:.3f}", f"{ra:.3f}"])
    for m in ("letkf", "4dvar"):
        med = {h: statistics.median(r[f"{m}_{h}"] for r in res.values()) for h in ("true", "truth", "analyses")}
        mrt = statistics.median(r[f"{m}_truth"] / r[f"{m}_true"] for r in res.values())
        mra = statistics.median(r[f"{m}_analyses"] / r[f"{m}_true"] for r in res.values())
        rows.append(["median", "LETKF" if m == "letkf" else "4D-Var", f"{med['true']:.4f}", f"{med['truth']:.4f}",
                     f"{med['analyses']:.4f}", f"{mrt:.3f}", f"{mra:.3f}"])
    herr = [[s, f"{r['h_err_truth']:.4f}", f"{r['h_err_analyses']:.4f}", f"{r['train_analysis_rmse']:.3f}",
             f"{r['fit_s']:.0f}"] for s, r in res.items()]
    n = len(seeds)
    body = "\n".join([
        "## DA with a learned observation operator (Lorenz-96 radiances"
        + (")" if args.analyses == "radiance" else ", H_θ fitted to analyses of other observations)"),
        "",
        (f"L96 n=40, dto={0.05 * args.every:g}, RadianceObs({args.channels} channels, width {args.width}, tanh, "
        f"scale {args.scale}, σo={args.std}). H_θ: LocalChannelNet (shared MLP on a ±{args.half_window} window per "
        f"channel + per-channel affine, hidden {args.hidden}) fitted on {args.train} cycles of (truth, y) pairs "
        f"or (analysis mean, y) pairs; the analyses are from an LETKF (N=20, loc_rad 4, infl {args.infl}) "
        + ("run with the true H assimilating the same y" if args.analyses == "radiance" else
           "assimilating independent observations of every 2nd variable (σo=1), the radiances passive")
        + " (first 20 cycles dropped). Then LETKF (same settings) "
        f"and 4D-Var (lag 1, B = {args.xb} I) over {args.test} new cycles (burn-in {args.burn_in}), same y "
        "and seeds for every H. Ratio = rmse_a(H_θ) / rmse_a(true H); bars: ≤ 1.05 (truth-trained), "
        "≤ 1.10 (analysis-trained)."),
        "",
        *md_table(["seed", "method", "true H", "H_θ (truth)", "H_θ (analyses)", "ratio truth", "ratio analyses"],
                  rows, ["r", "l", "r", "r", "r", "r", "r"]),
        "",
        (f"Bars met (seeds of {n}): LETKF truth-trained {ok['letkf_truth']}, analysis-trained "
        f"{ok['letkf_analyses']}; 4D-Var truth-trained {ok['4dvar_truth']}, analysis-trained {ok['4dvar_analyses']}."),
        "",
        "Operator error rms(H_θ(x) − H(x)) on the test truth (σo = " + f"{args.std}), training-analysis rmse, fit time:",
        "",
        *md_table(["seed", "H_θ (truth)", "H_θ (analyses)", "training analyses rmse_a", "fit s (both)"], herr,
                  ["r", "r", "r", "r", "r"]),
        "",
        *provenance(__file__, "1 (torch)", total_wall_s=f"{wall:.0f}"),
    ])
    print(body)
    if output_path(args):
        write_section(key, body, output_path(args))


if __name__ == "__main__":
    main()
