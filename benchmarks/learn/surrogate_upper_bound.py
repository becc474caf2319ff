"""Upper-bound surrogate (training source "truth"): BrajardCNN trained on a clean L96 run, its diagnostics,
then the sakov2008 ETKF driven by it vs by the true model.

    .venv/bin/python benchmarks/learn/surrogate_upper_bound.py [--threads 1] [--epochs 40] [--time-limit 420]

L96 n=40, F=8, dt=0.05: 20 000 training + 4 000 validation steps, a 2 000-step
gap, 6 000 test steps; training seed 0; the ETKF check runs seeds 1 and 2 over
400 cycles. Prints JSON and the rmse_a lines (no docs section: training stops
on a wall-clock limit, so the numbers depend on the machine).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from hybrida.experiment.config import load_config
from hybrida.experiment.presets import PRESETS
from hybrida.experiment.runner import run_experiment
from hybrida.learn import (
    L96_LEADING_LYAPUNOV,
    adjoint_test,
    climatological_std,
    fit,
    forecast_skill,
    free_run,
    leading_lyapunov,
    power_spectrum,
    save_surrogate,
    spectrum_log_distance,
    taylor_test,
    tl_comparison,
    valid_time,
)
from hybrida.models import Lorenz96, SurrogateModel
from hybrida.nn import BrajardCNN


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--epochs", type=int, default=40, help="at most this many epochs")
    ap.add_argument("--time-limit", type=float, default=420.0, help="training wall-clock limit (s)")
    ap.add_argument("--train", type=int, default=20000, help="training steps (validation: a fifth of it)")
    ap.add_argument("--etkf-cycles", type=int, default=400)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    OUT = Path("runs/surrogate_upper_bound.pt")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    T_TRAIN, T_VALID, T_TEST = args.train, args.train // 5, 6000
    m = Lorenz96(n=40, F=8.0, dt=0.05)
    x0 = m.initial_state()                       # spun up 1000 steps
    full = free_run(m, x0, T_TRAIN + T_VALID + T_TEST + 2000)
    train, valid, test = full[:T_TRAIN], full[T_TRAIN:T_TRAIN + T_VALID], full[T_TRAIN + T_VALID + 2000:]
    net = BrajardCNN(seed=0)                    # 24 / 37 filters, width 5 (Brajard et al. 2020)
    sur = SurrogateModel.from_trajectory(net, train, m.dt, scheme="rk4")
    print("params", sum(p.numel() for p in net.parameters()), flush=True)
    t0 = time.time()
    res = fit(sur, train, valid, rollout=1, epochs=args.epochs,
              batch_size=256, lr=2e-3, lr_schedule="plateau", patience=6, seed=0,
              time_limit_s=args.time_limit, progress=False)
    print(f"fit wall_s {time.time() - t0:.1f} epochs {res.epochs_run} best {res.best_epoch} stopped {res.stopped} best_valid_mse {res.best_loss:.3g}", flush=True)
    print("train", [f"{v:.3g}" for v in res.history["train"]])
    print("valid", [f"{v:.3g}" for v in res.history["valid"]])
    save_surrogate(OUT, sur, {"source": "truth", "T_train": T_TRAIN})

    starts = torch.arange(0, T_TEST - 201, 20)
    lam = L96_LEADING_LYAPUNOV
    out = {}
    for name, model in (("surrogate", sur), ("truth", m)):
        c = forecast_skill(model, test, starts, 200)
        out[name] = {
            "nrmse_lead1": float(c.nrmse[1]),
            "vt0.3": valid_time(c, 0.3, lam).lyapunov_times,
            "vt0.5": valid_time(c, 0.5, lam).lyapunov_times,
            "vt0.5_mean_per_start_LT": float(valid_time(c, 0.5, lam).time_starts.mean()) * lam,
        }
    # persistence at lead 1
    out["persistence_nrmse_lead1"] = float(((test[starts + 1] - test[starts]) ** 2).mean(-1).sqrt().mean() / climatological_std(test))
    t = time.time()
    S0 = test[::2000][:3].clone()
    out["lyap_truth"] = leading_lyapunov(m, S0, n_steps=2000, transient=200)
    out["lyap_surrogate"] = leading_lyapunov(sur, S0, n_steps=2000, transient=200)
    print("lyap time", time.time() - t, flush=True)
    fr_s = free_run(sur, test[0], 6000, spinup=0)[1000:]
    fr_t = test[:5001]
    ps, pt = power_spectrum(fr_s), power_spectrum(fr_t)
    out["spectrum_log_distance"] = spectrum_log_distance(ps, pt)
    out["spec_surrogate"] = [round(float(v), 3) for v in ps]
    out["spec_truth"] = [round(float(v), 3) for v in pt]
    out["free_run_mean_std"] = [float(fr_s.mean()), climatological_std(fr_s), float(fr_t.mean()), climatological_std(fr_t)]
    for ns in (1, 10):
        tc = [tl_comparison(sur, m, test[i], ns, k=1) for i in (100, 1100, 2100, 3100)]
        out[f"tl_{ns}"] = {"sv_model": [float(r.sv_model[0]) for r in tc], "sv_truth": [float(r.sv_truth[0]) for r in tc],
                           "angle_init_deg": [float(r.angle_initial[0]) * 57.2958 for r in tc], "rel_frob": [r.rel_frobenius for r in tc]}
    out["adjoint_test"] = adjoint_test(sur, test[0], n_steps=5)
    out["taylor_slope"] = taylor_test(sur, test[0], n_steps=5).slope
    print(json.dumps(out, indent=1))

    # surrogate-driven ETKF vs the true model (sakov2008, fully observed)
    base = copy.deepcopy(PRESETS["lorenz96/sakov2008"])
    base.update(cycles=args.etkf_cycles, burn_in=5.0)
    base["initial"]["center"] = "truth"
    base["climatology"]["steps"] = 5000
    for label, model in (("true", None), ("surrogate", {"name": "hybrida.learn.persist:load_surrogate", "params": {"path": str(OUT)}})):
        cfg = copy.deepcopy(base)
        if model:
            cfg["truth_model"] = cfg["model"]
            cfg["model"] = model
        for seed in (1, 2):
            cfg["seed"] = seed
            t = time.time()
            s = run_experiment(load_config(cfg), progress=False).summary
            print(label, seed, "rmse_a {:.4f}".format(s["rmse_a"]), "diverged", s["diverged"], "%.1fs" % (time.time() - t), flush=True)


if __name__ == "__main__":
    main()
