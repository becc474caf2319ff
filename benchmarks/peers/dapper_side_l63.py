"""DAPPER half of the Lorenz-63 rows of ``benchmarks/peers/dapper_compare.py``; runs inside the DAPPER venv.

Not imported by hybrida and not run by its tests: ``dapper_compare.py`` starts it with
the Python of ``benchmarks/.dapper-venv`` as::

    python dapper_side_l63.py CASES.json RESULT.json

Each case names an ``.npz`` with the truth ``xx`` (K+1, 3) at every model step, the
observations ``yy`` (Ko, 3) every ``dko`` steps and the initial ensemble ``E0`` (N, 3).
The HMM is DAPPER's ``mods.Lorenz63.sakov2012`` (its ``step``, dt 0.01, dko 25, all three
variables observed with R = ``obs_var`` I) with the case's chronology and initial ensemble.
Methods: ``EnKF('Sqrt', N, infl)`` (the ETKF) and ``PartFilt(N, reg, NER)`` (the bootstrap
particle filter). Only ``xp.assimilate`` is timed (fastest of ``repeat`` runs, wall and
process CPU seconds).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from dapper_side_common import import_dapper, side_main


def build_hmm(modelling, case: dict, cycles: int, E0: np.ndarray):
    from dapper.mods.Lorenz63 import step

    dko = int(case["dko"])
    tseq = modelling.Chronology(float(case["dt"]), dko=dko, Ko=cycles - 1, BurnIn=0)
    E0 = np.array(E0, dtype=float)
    X0 = modelling.RV(M=3, func=lambda N: E0[:N].copy())  # the given initial ensemble
    Dyn = modelling.Operator(M=3, model=step, noise=0)
    Obs = modelling.Operator(**modelling.partial_Id_Obs(3, np.arange(3)), noise=float(case["obs_var"]))
    return modelling.HiddenMarkovModel(Dyn, Obs, tseq, X0)


def make_xp(da, case: dict):
    if case["method"] == "ETKF":
        return da.EnKF("Sqrt", N=int(case["N"]), infl=float(case["infl"]))
    if case["method"] == "PF":
        return da.PartFilt(N=int(case["N"]), reg=float(case["reg"]), NER=float(case["NER"]))
    raise ValueError(f"unknown method {case['method']!r}")


def run_case(mods, case):
    dapper, da, modelling = mods
    data = np.load(case["npz"])
    xx, yy, E0 = data["xx"], data["yy"], data["E0"]
    cycles = int(case.get("cycles") or yy.shape[0])
    dko = int(case["dko"])
    xx, yy = xx[: cycles * dko + 1], yy[:cycles]
    hmm = build_hmm(modelling, case, cycles, E0[: int(case["N"])])
    walls, cpus, means, rmse_a = [], [], [], np.zeros(0)
    for r in range(max(1, int(case.get("repeat", 1)))):
        dapper.set_seed(int(case.get("seed", 0)) + r + 1)  # the PF's resampling draws (0 is refused)
        xp = make_xp(da, case)
        t0, c0 = time.perf_counter(), time.process_time()
        xp.assimilate(hmm, xx, yy, liveplots=False)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        rmse_a = np.asarray(xp.stats.err.rms.a, dtype=float)  # one per analysis
        means.append(float(np.mean(rmse_a[int(case.get("burn_in", 0)) :])))
    return {
        "name": case["name"],
        "method": case["method"],
        "N": int(case["N"]),
        "cycles": cycles,
        "rmse_a": float(np.mean(means)),  # mean over the repeats (PF: over seeds)
        "rmse_a_runs": means,
        "rmse_a_series": [float(v) for v in rmse_a],
        "wall_s": min(walls),
        "wall_s_all": walls,
        "cpu_s": min(cpus),
        "s_per_cycle": min(walls) / cycles,
        "cpu_s_per_cycle": min(cpus) / cycles,
        "crashed": bool(getattr(xp, "crashed", False)),
        "dapper_description": repr(xp),
    }


def main(argv):
    return side_main(argv, run_case, import_dapper(), "dapper_side_l63", extra={"numpy": np.__version__})


if __name__ == "__main__":
    sys.exit(main(sys.argv))
