"""Surrogates learned from DA of sparse noisy observations vs observation density (Brajard et al. 2020).

L96 n=40, F=8, dt=0.05; each cycle (one model step) a new random subset of
a fraction ``p`` of the grid is observed with sigma_o = 1. For each density:

* ``reanalysis``: the filter with the true model assimilates the observations of
  the training period; a BrajardCNN (RK4 of a learned tendency) is trained on
  the analysis means;
* ``--method``: the filter of every DA here (N=30): ``etkf`` (adaptive inflation, default),
  ``letkf`` (loc_rad 4, adaptive inflation: the loop's best, 2.2 LT at p = 0.5) or ``enkf_n``;
* ``loop`` (``--sources loop``): Brajard's iterative scheme without any physical
  model (:func:`hybrida.experiment.loop.da_ml_loop`, from observations
  interpolated in time by default). Options follow Brajard et al.'s code: additive
  model noise in the DA step (``--model-noise``: a std per step, or ``innovation``
  to estimate it each iteration from one-step innovations, times ``--noise-scale``),
  targets weighted by the inverse analysis variance (``--weight-by-spread``), and
  a longer first fit (``--first-epochs``) followed by warm-started short fits;
* ``truth`` (``--sources truth``): trained on the true trajectory, the upper bound.

Skill: forecasts from true states of an independent test period, normalised
RMSE (by the climatological std) averaged over starts; the valid time is the
first lead above ``--threshold`` (0.5 by default, also 0.3), in Lyapunov times
(lambda_1 = 1.68). Also the surrogate's leading Lyapunov exponent and the
rmse_a of the same filter driven by the surrogate on the test observations vs
the true model. Writes section "brajard2020" of docs/benchmarks.md.

    .venv/bin/python benchmarks/learn/brajard2020.py                     # p = 0.25 0.5 0.75 1.0, ~20 min
    .venv/bin/python benchmarks/learn/brajard2020.py --densities 0.5 --train 4000 --time-limit 60
    .venv/bin/python benchmarks/learn/brajard2020.py --densities 0.5 --sources loop --train 4000 --valid 1000 \
        --epochs 8 --first-epochs 20 --time-limit 0 --iterations 15 --patience 3 \
        --method letkf --model-noise 0.22 --weight-by-spread --no-write   # 2.18 LT, ~25 min
    .venv/bin/python benchmarks/learn/brajard2020.py --densities 0.5 --sources loop --train 4000 --valid 1000 \
        --epochs 8 --first-epochs 20 --time-limit 0 --iterations 5 --patience 5 \
        --model-noise innovation --previous benchmarks/learn/brajard2020_rows.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from hybrida.assimilation.ensemble.enkf_n import EnKFN
from hybrida.assimilation.ensemble.etkf import ETKF
from hybrida.assimilation.ensemble.letkf import LETKF
from hybrida.experiment.loop import LoopSettings, assimilate, da_ml_loop
from hybrida.experiment.twin import make_twin
from hybrida.learn.diagnostics import (
    L96_LEADING_LYAPUNOV,
    forecast_skill,
    leading_lyapunov,
    valid_time,
)
from hybrida.learn.train import fit
from hybrida.models.lorenz96 import Lorenz96
from hybrida.models.surrogate import SurrogateModel
from hybrida.nn import BrajardCNN
from hybrida.observations.networks import RandomSubsetObs

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.common import add_output_args, machine, output_path, write_section


def make_method(name: str = "etkf") -> ETKF | EnKFN | LETKF:
    """N=30: ETKF with adaptive inflation (tolerant of the surrogate's model error), EnKF-N (the paper's) or LETKF."""
    if name == "enkf_n":
        return EnKFN(N=30)
    if name == "letkf":
        return LETKF(N=30, loc_rad=4.0, adaptive=True)
    return ETKF(N=30, infl=1.0, adaptive=True)


def skill(surrogate, test_truth: Tensor, lead: int, n_starts: int, thresholds=(0.5, 0.3)) -> dict:
    """Valid times (model time and Lyapunov times) of forecasts from true test states."""
    stride = max(1, (test_truth.shape[0] - lead - 1) // n_starts)
    starts = torch.arange(0, test_truth.shape[0] - lead - 1, stride)[:n_starts]
    with torch.no_grad():
        curve = forecast_skill(surrogate, test_truth, starts, lead)
    out = {"nrmse_lead1": float(curve.nrmse[1])}
    for thr in thresholds:
        vt = valid_time(curve, thr, L96_LEADING_LYAPUNOV)
        out[f"valid_lt_{thr}"] = vt.lyapunov_times
    return out


def run_density(p: float, args, sources: list[str]) -> list[dict]:
    torch.manual_seed(0)
    model = Lorenz96(40)
    count = 40 if p >= 1.0 else None
    net = RandomSubsetObs(n=40, p=count if count else float(p), std=1.0)
    total = args.train + args.valid + args.test
    g = torch.Generator().manual_seed(args.seed)
    tw = make_twin(model, net, model.initial_state(), total, g)
    K = args.train + args.valid
    obs_train, truth_train = tw.observations[:K], tw.truth[: K + 1]
    obs_test, truth_test = tw.observations[K:], tw.truth[K:]
    rows = []
    base = assimilate(
        model, make_method(args.method), truth_test[0], obs_test, truth=truth_test, burn_in=50,
        initial_std=1.0, generator=torch.Generator().manual_seed(7),
    )
    for source in sources:
        t0 = time.perf_counter()
        info: dict = {"p": p, "source": source, "train_cycles": args.train, "method": args.method}
        fit_kw = {
            "epochs": args.epochs, "rollout": args.rollout, "batch_size": 128, "lr": 2e-3,
            "lr_schedule": "plateau", "patience": 6, "progress": False,
            "time_limit_s": args.time_limit if args.time_limit and args.time_limit > 0 else None,
        }
        if source == "loop":
            settings = LoopSettings(
                max_iterations=args.iterations, patience=args.patience, burn_in=50,
                fit_kwargs=fit_kw, seed=args.seed, interpolate=args.interpolate,
                first_fit_kwargs={"epochs": args.first_epochs} if args.first_epochs else {},
                model_noise=_noise_arg(args.model_noise), noise_scale=args.noise_scale,
                weight_by_spread=args.weight_by_spread, targets=args.targets,
                smoother={"N": 30, "lag": args.smoother_lag, "infl": args.smoother_infl} if args.smoother_lag else None,
            )
            res = da_ml_loop(
                lambda a: SurrogateModel.from_trajectory(BrajardCNN(seed=args.seed), a, dt=model.dt),
                lambda: make_method(args.method), obs_train, 40, settings, truth=truth_train,
            )
            sur = res.surrogate
            info["train_rmse"] = res.steps[res.best_iteration].rmse_a
            info["iterations"] = len(res.steps)
            info["best_iteration"] = res.best_iteration
            info["model_noise"] = args.model_noise
            info["smoother_lag"] = args.smoother_lag
            info["targets"] = args.targets
            info["weight_by_spread"] = args.weight_by_spread
            info["history"] = [
                {"rmse_a": s.rmse_a, "sigma_m": s.model_noise, "obs_score": s.obs_score,
                 "epochs": s.fit.epochs_run}
                for s in res.steps
            ]
        else:
            if source == "truth":
                archive = truth_train
                info["train_rmse"] = 0.0
            else:
                ana = assimilate(
                    model, make_method(args.method), truth_train[0], obs_train, truth=truth_train, burn_in=50,
                    initial_std=1.0, generator=torch.Generator().manual_seed(3),
                )
                archive = ana.mean
                info["train_rmse"] = ana.rmse_a
            cut = args.train + 1
            sur = SurrogateModel.from_trajectory(BrajardCNN(seed=args.seed), archive[:cut], dt=model.dt)
            fit(sur, archive[:cut], archive[cut:], seed=args.seed, **fit_kw)
        info["train_s"] = time.perf_counter() - t0
        info.update(skill(sur, truth_test, args.lead, args.starts))
        with torch.no_grad():
            info["lyapunov"] = leading_lyapunov(sur, truth_test[0], n_steps=1500)
        da = assimilate(
            sur, make_method(args.method), truth_test[0], obs_test, truth=truth_test, burn_in=50,
            initial_std=1.0, generator=torch.Generator().manual_seed(7),
        )
        info["da_rmse_surrogate"] = da.rmse_a
        info["da_rmse_true_model"] = base.rmse_a
        info["da_ratio"] = da.rmse_a / base.rmse_a
        rows.append(info)
        print(json.dumps(info), flush=True)
    return rows


def _noise_arg(value: str | None) -> float | str | None:
    if value is None or value == "none":
        return None
    return value if value == "innovation" else float(value)


def _label(r: dict) -> str:
    da = {"enkf_n": ", EnKF-N", "letkf": ", LETKF"}.get(r.get("method"), "")
    if r["source"] != "loop":
        return r["source"] + da
    noise = r.get("model_noise")
    noise = "none" if noise in (None, "none") else noise
    if r.get("smoother_lag"):
        da = f", EnKS lag {r['smoother_lag']}"
    if r.get("targets") == "observations":
        da += ", obs targets"
    if r.get("weight_by_spread"):
        da += ", spread-weighted"
    return f"loop{da}, σm {noise}, {r['iterations']} it (best {r.get('best_iteration', '-')})"


def table(rows: list[dict], args) -> str:
    head = (
        "| obs density p | trained on | training cycles | rmse of training states | valid time (LT, thr 0.5) | "
        "valid time (LT, thr 0.3) | nRMSE lead 1 | λ1 surrogate | DA rmse_a surrogate / true model | train s |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        lines.append(
            f"| {r['p']:.2f} | {_label(r)} | {r.get('train_cycles', '-')} | {r['train_rmse']:.3f} | {r['valid_lt_0.5']:.2f} | "
            f"{r['valid_lt_0.3']:.2f} | {r['nrmse_lead1']:.4f} | {r['lyapunov']:.2f} | "
            f"{r['da_rmse_surrogate']:.3f} / {r['da_rmse_true_model']:.3f} ({r['da_ratio']:.2f}x) | "
            f"{r['train_s']:.0f} |"
        )
    def flag(k: str, v: object) -> str:
        name = "--" + k.replace("_", "-")
        if v is True:
            return name
        return f"{name} {' '.join(map(str, v)) if isinstance(v, list) else v}"

    skip = {"output", "no_write"}
    cmd = ".venv/bin/python benchmarks/learn/brajard2020.py " + " ".join(
        flag(k, v) for k, v in vars(args).items() if v is not None and v is not False and k not in skip
    )
    notes = (
        f"\n\nL96 n=40, F=8, dt=0.05, a new random subset of p·40 variables observed each step, "
        f"σo=1; training cycles as listed, + {args.valid} validation cycles, BrajardCNN (RK4 of a learned "
        f"tendency), rollout {args.rollout}, at most {args.epochs} epochs / {args.time_limit} s per fit "
        f"(loop: iteration 0 {args.first_epochs or args.epochs} epochs, later fits warm-started); "
        f"DA = {args.method} N=30 (etkf/letkf: adaptive inflation, letkf loc_rad 4; loop: plus additive model noise σm per step as listed, "
        f"'innovation' = {args.noise_scale} x the one-step forecast-error std estimated from innovations "
        f"each iteration). Rows of earlier runs (--previous) keep their own settings. Skill from {args.starts} true test states; "
        f"1 LT = 1/{L96_LEADING_LYAPUNOV} time units (true λ1 ≈ 1.68–1.74). "
        f"Command: `{cmd}`; {datetime.date.today().isoformat()}; {machine()}, torch {torch.__version__}, "
        "1 torch thread.\n"
    )
    return head + "\n".join(lines) + notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--densities", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--train", type=int, default=8000)
    ap.add_argument("--valid", type=int, default=2000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--rollout", type=int, default=2)
    ap.add_argument("--time-limit", type=float, default=240.0)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--patience", type=int, default=2, help="loop: iterations without improvement")
    ap.add_argument("--interpolate", default="time", choices=["time", "space"], help="loop: first guess")
    ap.add_argument("--first-epochs", type=int, default=None, help="loop: epochs of iteration 0")
    ap.add_argument(
        "--model-noise", default=None,
        help="loop: std of additive model noise in the DA step, a number, 'innovation' or 'none'",
    )
    ap.add_argument("--noise-scale", type=float, default=1.0, help="loop: factor on the innovation estimate")
    ap.add_argument("--weight-by-spread", action="store_true", help="loop: weight targets by 1/(sa^2+0.01)")
    ap.add_argument(
        "--targets", default="analyses", choices=["analyses", "observations"],
        help="loop: fits after iteration 0 regress on the next analyses or on the observations",
    )
    ap.add_argument("--lead", type=int, default=200)
    ap.add_argument("--starts", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--method", default="etkf", choices=["etkf", "enkf_n", "letkf"],
                    help="DA filter (N=30; letkf: loc_rad 4, adaptive inflation)")
    ap.add_argument("--smoother-lag", type=int, default=0, help="loop: train on EnKS (N=30) smoothed analyses")
    ap.add_argument("--smoother-infl", type=float, default=1.05, help="loop: the EnKS inflation")
    ap.add_argument(
        "--sources", nargs="+", default=["reanalysis"], choices=["reanalysis", "loop", "truth"],
        help="training sources to run for every density",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    ap.add_argument("--previous", type=Path, default=None, help="rows (JSON) of an earlier run to show first")
    ap.add_argument("--render-only", action="store_true", help="only write the table of --previous rows")
    add_output_args(ap, "brajard2020")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = json.loads(args.previous.read_text()) if args.previous else []
    for p in [] if args.render_only else args.densities:
        rows.extend(run_density(p, args, args.sources))
    body = table(rows, args)
    print(body)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    out = output_path(args)
    if out:
        write_section("brajard2020", "## Surrogates from DA of sparse observations (Brajard et al. 2020)\n\n" + body, out)


if __name__ == "__main__":
    main()
