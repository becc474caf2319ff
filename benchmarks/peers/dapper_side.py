"""DAPPER half of ``benchmarks/peers/dapper_compare.py``; runs inside the DAPPER venv.

Not imported by hybrida and not run by its tests: ``dapper_compare.py`` starts
it with the Python of ``benchmarks/.dapper-venv`` (where ``pip install dapper``
put DAPPER) as::

    python dapper_side.py CASES.json RESULT.json

``CASES.json`` lists the experiments; each names an ``.npz`` holding the truth
``xx`` (K+1, n) at every model step, the observations ``yy`` (K, n) of steps
1..K, and the initial ensemble ``E0`` (N, n). The HMM follows DAPPER's
``mods.Lorenz96.sakov2008`` (F=8, dt=0.05, every variable observed every step,
R = var * I, localizer ``nd_Id_localization((n,), (2,))``) except that the
state size, the number of steps and the initial ensemble come from the case.
Only ``xp.assimilate`` is timed (the fastest of ``repeat`` runs, wall and process CPU seconds).
The result file holds, per case, the analysis
RMSE of every cycle, its mean after burn-in, the wall time and s/cycle.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from dapper_side_common import import_dapper, side_main


def _import_dapper():
    dapper, da, modelling = import_dapper()
    from dapper.mods.Lorenz96 import step
    from dapper.tools.localization import nd_Id_localization

    return dapper, da, modelling, step, nd_Id_localization


def build_hmm(modelling, step, nd_Id_localization, n, K, dt, obs_var, E0, batch):
    import dapper.mods.Lorenz96 as L96

    L96.Force = 8.0  # module global read by dxdt (the default already)
    tseq = modelling.Chronology(dt, dko=1, K=K, BurnIn=0)
    # The initial ensemble is given: sample() hands out a copy of it.
    E0 = np.array(E0, dtype=float)
    X0 = modelling.RV(M=n, func=lambda N: E0[:N].copy())
    Dyn = {"M": n, "model": step, "noise": 0}
    Obs = dict(modelling.partial_Id_Obs(n, np.arange(n)))
    Obs["noise"] = float(obs_var)
    Obs["localizer"] = nd_Id_localization((n,), (batch,))
    if _version_tuple(modelling) >= (1, 8):  # DAPPER >= 1.8 wants Operator objects
        Dyn, Obs = modelling.Operator(**Dyn), modelling.Operator(**Obs)
    return modelling.HiddenMarkovModel(Dyn, Obs, tseq, X0)


def _version_tuple(_modelling) -> tuple[int, ...]:
    import dapper

    parts = []
    for p in str(dapper.__version__).split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def run_case(mods, case):
    _dapper, da, modelling, step, nd_Id_localization = mods
    data = np.load(case["npz"])
    xx, yy, E0 = data["xx"], data["yy"], data["E0"]
    K = yy.shape[0]
    cycles = int(case.get("cycles") or K)
    xx, yy = xx[: cycles + 1], yy[:cycles]
    n = xx.shape[1]
    N = int(case["N"])
    hmm = build_hmm(
        modelling,
        step,
        nd_Id_localization,
        n,
        cycles,
        float(case["dt"]),
        float(case["obs_var"]),
        E0[:N],
        int(case.get("batch", 2)),
    )
    if case["method"] == "ETKF":
        xp = da.EnKF("Sqrt", N=N, infl=float(case["infl"]))
    elif case["method"] == "LETKF":
        xp = da.LETKF(N=N, infl=float(case["infl"]), loc_rad=float(case["loc_rad"]))
    else:
        raise ValueError(f"unknown method {case['method']!r}")
    walls, cpus = [], []
    for _ in range(max(1, int(case.get("repeat", 1)))):  # deterministic: same result each time
        t0, c0 = time.perf_counter(), time.process_time()
        xp.assimilate(hmm, xx, yy, liveplots=False)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    wall = min(walls)
    rmse_a = np.asarray(xp.stats.err.rms.a, dtype=float)  # (Ko+1,) = one per cycle
    burn = int(case.get("burn_in", 0))
    tail = rmse_a[burn:]
    return {
        "name": case["name"],
        "method": case["method"],
        "n": n,
        "N": N,
        "cycles": cycles,
        "burn_in": burn,
        "rmse_a": float(np.mean(tail)) if tail.size else float("nan"),
        "rmse_a_series": [float(v) for v in rmse_a],
        "wall_s": wall,
        "wall_s_all": walls,
        "s_per_cycle": wall / cycles,
        "cpu_s": min(cpus),
        "cpu_s_per_cycle": min(cpus) / cycles,
        "crashed": bool(getattr(xp, "crashed", False)),
        "dapper_description": repr(xp),
    }


def main(argv):
    return side_main(argv, run_case, _import_dapper(), "dapper_side", extra={"numpy": np.__version__})


if __name__ == "__main__":
    sys.exit(main(sys.argv))
