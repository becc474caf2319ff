"""DAPPER half of ``benchmarks/peers/ienks_compare.py``; runs inside the DAPPER venv.

Not imported by hybrida and not run by its tests: ``ienks_compare.py`` starts
it with the Python of ``benchmarks/.dapper-venv`` as::

    python ienks_dapper_side.py CASES.json RESULT.json

Each case names an ``.npz`` with the truth ``xx`` (K·dko + 1, n) at every
model step, the observations ``yy`` (K, n) of every variable at steps
dko, 2·dko, ..., K·dko, and the initial ensemble ``E0`` (N, n). The HMM is
DAPPER's ``mods.Lorenz63.sakov2012`` or ``mods.Lorenz96.sakov2008`` (model,
dt, R = obs_var·I) with the number of cycles and the initial ensemble of the
case; the method is ``iEnKS('Sqrt', N, Lag, nIter, wtol, infl, rot)``. Only
``xp.assimilate`` is timed (the fastest of ``repeat`` runs).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from dapper_side_common import import_dapper, side_main


def _import_dapper():
    dapper, da, modelling = import_dapper()
    return dapper, da, modelling


def build_hmm(modelling, model: str, n: int, dt: float, dko: int, K: int, obs_var: float, E0):
    if model == "lorenz63":
        from dapper.mods.Lorenz63 import step
    else:
        import dapper.mods.Lorenz96 as L96
        from dapper.mods.Lorenz96 import step

        L96.Force = 8.0
    tseq = modelling.Chronology(dt, dko=dko, K=K * dko, BurnIn=0)
    E0 = np.array(E0, dtype=float)
    X0 = modelling.RV(M=n, func=lambda N: E0[:N].copy())
    Dyn = modelling.Operator(M=n, model=step, noise=0)
    Obs = modelling.Operator(**modelling.partial_Id_Obs(n, np.arange(n)), noise=float(obs_var))
    return modelling.HiddenMarkovModel(Dyn, Obs, tseq, X0)


def run_case(mods, case):
    _dapper, da, modelling = mods
    data = np.load(case["npz"])
    xx, yy, E0 = data["xx"], data["yy"], data["E0"]
    K, n, N, dko = yy.shape[0], xx.shape[1], int(case["N"]), int(case["dko"])
    hmm = build_hmm(modelling, case["model"], n, float(case["dt"]), dko, K, float(case["obs_var"]), E0[:N])
    xp = da.iEnKS(
        "Sqrt",
        N=N,
        Lag=int(case["lag"]),
        nIter=int(case["n_iter"]),
        wtol=float(case["wtol"]),
        infl=float(case["infl"]),
        rot=bool(case["rot"]),
    )
    walls = []
    for _ in range(max(1, int(case.get("repeat", 1)))):
        t0 = time.perf_counter()
        xp.assimilate(hmm, xx, yy, liveplots=False)
        walls.append(time.perf_counter() - t0)
    rmse_a = np.asarray(xp.stats.err.rms.a, dtype=float)  # one per observation time
    burn = int(case["burn_in"])
    tail = rmse_a[burn:]
    wall = min(walls)
    return {
        "name": case["name"],
        "rmse_a": float(np.mean(tail)),
        "rmse_a_series": [float(v) for v in rmse_a],
        "wall_s": wall,
        "wall_s_all": walls,
        "s_per_cycle": wall / K,
        "iters_mean": float(np.mean(xp.stats.iters.a)) if hasattr(xp.stats, "iters") else None,
        "description": repr(xp),
    }


def main(argv):
    return side_main(argv, run_case, _import_dapper(), "ienks_dapper_side")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
