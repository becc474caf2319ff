"""Observation bias correction: VarBC, ensemble augmentation and a learned bias model (issue 14, part 3).

Scenario: Lorenz-96 (n=40, dt=0.05), every variable observed every step with
sigma_o=1. Even locations l are unbiased anchors; the odd ones form three
"channels" c = (l // 2) mod 3 with bias

    b = const_c + amp_c f((H(x) - 2.5)/4) + scan_c s_l,     s_l a scan-angle-like covariate,

f(u) = u ("linear": exactly representable by linear VarBC) or u^2 - 1
("quadratic": nonlinear in the state). Methods (median over seeds of the
time-mean analysis rmse after a 100-cycle burn-in):

* 3D-Var (B = 0.02 x climatology): unbiased obs; biased, no correction;
  VarBC (coefficients in the control vector, beta_std 0.1); learned offline
  (NeuralBias trained on departures, then fixed); learned online (the offline
  net refined by 5 Adam steps per cycle on a 50-cycle replay buffer);
* ETKF (N=30, infl 1.03): unbiased; biased, no correction; state augmentation
  with the coefficients; learned offline.

The learned model is trained on O−B departures of the biased channels against
backgrounds of an ETKF run that assimilates the anchors only (the biased
channels are monitored passively), on a training truth independent of the
test truth. Bars (issue 14): best bias-corrected rmse within 10% of the
unbiased run; no correction >= 1.5x worse; learned beats linear VarBC when the
bias is nonlinear.

    .venv/bin/python benchmarks/learn/bias_correction.py           # 5 seeds
    .venv/bin/python benchmarks/learn/bias_correction.py --quick   # 3 seeds, shorter runs
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from hybrida.assimilation.ensemble.bias_aug import BiasAugmentedEnsemble
from hybrida.assimilation.ensemble.etkf import ETKF
from hybrida.assimilation.variational.threedvar import ThreeDVar
from hybrida.assimilation.variational.varbc import VarBC3D
from hybrida.cycle import run_cycle
from hybrida.experiment.twin import climatology, make_twin
from hybrida.learn.bias import BiasCorrected, bias_departures, fit_bias_model
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.bias import (
    BiasedObs,
    BiasPredictors,
    ChannelBias,
    NeuralBias,
    scan_covariate,
)
from hybrida.observations.networks import IdentityObs

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.common import add_output_args, md_table, output_path, provenance, write_section

N_STATE = 40
XB, BETA_STD, N_ENS, INFL = 0.02, 0.1, 30, 1.03
BURN = 100


def scenario(shape: str) -> tuple[BiasPredictors, ChannelBias]:
    """Predictors (even l: anchors, -1; odd l: channel (l // 2) mod 3; scan swath 8) and the true channel bias."""
    loc = torch.arange(N_STATE)
    channel = torch.where(loc % 2 == 0, -1, (loc // 2) % 3)
    pred = BiasPredictors(channel, scan_covariate(N_STATE, 8), offset=2.5, scale=4.0)
    bias = ChannelBias(pred, [1.0, -0.8, 0.6], [0.8, 0.6, -0.7], [0.3, 0.0, -0.3], shape, 2.5, 4.0)
    return pred, bias


def cycle_rmse(model, method, state, twin, seed: int) -> float:
    """Mean analysis rmse after the burn-in."""
    rs = [
        rec.rmse_a
        for rec, _ in run_cycle(
            model, method, state, twin.truth, twin.observations, twin.steps_per_cycle,
            generator=torch.Generator().manual_seed(seed), innovations=False, probabilistic_scores=False,
        )
    ]
    return float(torch.tensor(rs[BURN:]).mean())


def backgrounds(model, method, state, twin, seed: int) -> torch.Tensor:
    """Prior means of every cycle, ``(K, n)``."""
    out = [
        rec.prior_mean
        for rec, _ in run_cycle(
            model, method, state, twin.truth, twin.observations, twin.steps_per_cycle,
            generator=torch.Generator().manual_seed(seed), innovations=False, probabilistic_scores=False,
        )
    ]
    return torch.stack(out)


def train_offline(model, pred, bias, seed: int, k_train: int, epochs: int) -> tuple[NeuralBias, float]:
    """NeuralBias fitted to passive O−B departures against an anchors-only ETKF; returns it and its held-out rmse."""
    g = torch.Generator().manual_seed(1000 + seed)
    x0 = model.forecast(model.initial_state() + torch.randn(N_STATE, generator=g, dtype=torch.float64), 500)
    twin = make_twin(model, BiasedObs(IdentityObs(N_STATE, std=1.0), bias), x0, k_train, g)
    anchor = pred.layout(twin.observations[0])[0] < 0
    only_anchors = replace(
        twin, observations=[replace(o, y=torch.where(anchor, o.y, torch.nan)) for o in twin.observations]
    )
    etkf = ETKF(N=N_ENS, infl=INFL)
    xb = backgrounds(model, etkf, etkf.initial_state(x0, 1.0, g), only_anchors, seed)[BURN:]
    obs = twin.observations[BURN:]
    hx, d = bias_departures(obs, xb)
    net = NeuralBias(pred, width=32, depth=2, output_scale=1.0, seed=seed)
    fit_bias_model(net, obs[0], hx, d, epochs=epochs, lr=3e-3, seed=seed)
    # held-out check against the true bias at the true states (last 20% of the period)
    cut = int(0.8 * len(obs))
    with torch.no_grad():
        truth_hx = torch.stack([o.H(x) for o, x in zip(obs[cut:], twin.truth[BURN + 1 :][cut:])])
        true_b = torch.stack([o.meta["bias"] for o in obs[cut:]])
        err = (net.bias(obs[0], truth_hx) - true_b)[:, ~anchor]
    return net, float(err.pow(2).mean().sqrt())


def run_seed(shape: str, seed: int, k: int, k_train: int, epochs: int) -> dict[str, float]:
    model = Lorenz96(N_STATE)
    g = torch.Generator().manual_seed(seed)
    x0 = model.forecast(model.initial_state() + torch.randn(N_STATE, generator=g, dtype=torch.float64), 500)
    clim = climatology(model, x0, 5000, thin=5)
    pred, bias = scenario(shape)
    net = IdentityObs(N_STATE, std=1.0)
    biased = make_twin(model, BiasedObs(net, bias), x0, k, torch.Generator().manual_seed(seed + 1))
    unbiased = make_twin(model, net, x0, k, torch.Generator().manual_seed(seed + 1))
    learned, fit_rmse = train_offline(model, pred, bias, seed, k_train, epochs)
    online = NeuralBias(pred, width=32, depth=2, seed=seed)
    online.load_state_dict(learned.state_dict())

    def ens(method):
        return method.initial_state(x0, 1.0, torch.Generator().manual_seed(seed + 2))

    out = {"learned fit rmse": fit_rmse}
    out["3dvar unbiased"] = cycle_rmse(model, ThreeDVar(clim, xB=XB), x0.clone(), unbiased, seed)
    out["3dvar no correction"] = cycle_rmse(model, ThreeDVar(clim, xB=XB), x0.clone(), biased, seed)
    vbc = VarBC3D(clim, pred, xB=XB, beta_std=BETA_STD)
    out["3dvar VarBC"] = cycle_rmse(model, vbc, vbc.initial_state(x0, 0.0), biased, seed)
    m = BiasCorrected(ThreeDVar(clim, xB=XB), learned)
    out["3dvar learned offline"] = cycle_rmse(model, m, x0.clone(), biased, seed)
    m = BiasCorrected(ThreeDVar(clim, xB=XB), online, online_steps=5, lr=1e-3, buffer=50)
    out["3dvar learned online"] = cycle_rmse(model, m, x0.clone(), biased, seed)
    out["etkf unbiased"] = cycle_rmse(model, e := ETKF(N=N_ENS, infl=INFL), ens(e), unbiased, seed)
    out["etkf no correction"] = cycle_rmse(model, e := ETKF(N=N_ENS, infl=INFL), ens(e), biased, seed)
    aug = BiasAugmentedEnsemble(pred, beta_std=BETA_STD, inner="etkf", inner_params={"N": N_ENS, "infl": INFL})
    out["etkf augmentation"] = cycle_rmse(model, aug, ens(aug), biased, seed)
    m = BiasCorrected(ETKF(N=N_ENS, infl=INFL), learned)
    out["etkf learned offline"] = cycle_rmse(model, m, ens(m), biased, seed)
    return out


FAMILIES = {
    "3dvar": ("no correction", "VarBC", "learned offline", "learned online"),
    "etkf": ("no correction", "augmentation", "learned offline"),
}


def report(shape: str, runs: list[dict[str, float]]) -> tuple[list[str], list[str]]:
    """Table lines and bar lines of one scenario."""
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    rows, bars = [], []
    for fam, methods in FAMILIES.items():
        base = [r[f"{fam} unbiased"] for r in runs]
        rows.append((f"{fam} unbiased obs", f"{med[f'{fam} unbiased']:.3f}", "1.00", "-"))
        for meth in methods:
            ratios = [r[f"{fam} {meth}"] / b for r, b in zip(runs, base)]
            rows.append((f"{fam} {meth}", f"{med[f'{fam} {meth}']:.3f}", f"{statistics.median(ratios):.2f}",
                         " ".join(f"{x:.2f}" for x in ratios)))
        corrected = [m for m in methods if m != "no correction"]
        best = [min(r[f"{fam} {m}"] for m in corrected) / r[f"{fam} unbiased"] for r in runs]
        nocorr = [r[f"{fam} no correction"] / r[f"{fam} unbiased"] for r in runs]
        ok1 = sum(x <= 1.10 for x in best)
        ok2 = sum(x >= 1.5 for x in nocorr)
        bars.append(f"- {shape}, {fam}: best correction within 10% of unbiased: "
                    f"{'PASS' if statistics.median(best) <= 1.10 else 'FAIL'} (median ratio "
                    f"{statistics.median(best):.2f}; {ok1}/{len(runs)} seeds)")
        bars.append(f"- {shape}, {fam}: no correction >= 1.5x worse: "
                    f"{'PASS' if statistics.median(nocorr) >= 1.5 else 'FAIL'} (median ratio "
                    f"{statistics.median(nocorr):.2f}; {ok2}/{len(runs)} seeds)")
    for fam, lin in (("3dvar", "VarBC"), ("etkf", "augmentation")):
        wins = sum(r[f"{fam} learned offline"] < r[f"{fam} {lin}"] for r in runs)
        verdict = "PASS" if med[f"{fam} learned offline"] < med[f"{fam} {lin}"] else "FAIL"
        bars.append(f"- {shape}, {fam}: learned offline beats linear {lin}: {verdict} "
                    f"({med[f'{fam} learned offline']:.3f} vs {med[f'{fam} {lin}']:.3f}; {wins}/{len(runs)} seeds)"
                    + ("" if shape != "linear" else " (bar applies to the nonlinear scenario only)"))
    fit = statistics.median(r["learned fit rmse"] for r in runs)
    lines = [f"### Bias {shape}: b = const + amp f(u) + scan s, f(u) = {'u' if shape == 'linear' else 'u^2 - 1'}", ""]
    lines += md_table(("run", "rmse_a (median)", "ratio to unbiased (median)", "ratios per seed"), rows,
                      ("l", "r", "r", "l"))
    lines += ["", f"Learned model, held-out rmse against the true bias at true states: {fit:.3f} (median)", ""]
    return lines, bars


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 seeds, 400 test / 1200 training cycles")
    ap.add_argument("--seeds", type=int, default=None)
    add_output_args(ap, "bias-correction")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = args.seeds or (3 if args.quick else 5)
    k, k_train, epochs = (400, 1200, 150) if args.quick else (1000, 2000, 300)
    t0 = time.time()
    body, all_bars = [], []
    for shape in ("linear", "quadratic"):
        runs = []
        for s in range(seeds):
            runs.append(run_seed(shape, s, k, k_train, epochs))
            print(shape, s, {a: round(b, 3) for a, b in runs[-1].items()}, f"{time.time() - t0:.0f}s", flush=True)
        lines, bars = report(shape, runs)
        body += lines
        all_bars += bars
    minutes = (time.time() - t0) / 60
    text = ["## Observation bias correction (issue 14, part 3)", "",
            (f"L96 n=40, all variables observed (sigma_o 1), anchors at even l, three biased channels at odd l; "
            f"{seeds} seeds, {k} test cycles (rmse after {BURN}), learned model trained on {k_train} cycles of "
            "passive departures against an anchors-only ETKF. Run time "
            f"{minutes:.1f} min."), "", *body, "Bars:", "", *all_bars, "",
            *provenance(__file__, "1 (torch.set_num_threads(1))")]
    print("\n".join(text))
    out = output_path(args)
    if out is not None:
        write_section("bias-correction", "\n".join(text), out)
    print(f"done {datetime.datetime.now():%H:%M}")


if __name__ == "__main__":
    main()
