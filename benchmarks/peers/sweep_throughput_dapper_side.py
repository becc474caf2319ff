"""DAPPER half of ``benchmarks/peers/sweep_throughput.py``; runs inside the DAPPER venv.

Not imported by hybrida and not run by its tests: ``sweep_throughput.py`` starts it with
the Python of ``benchmarks/.dapper-venv`` as::

    python sweep_throughput_dapper_side.py CASES.json RESULT.json

Each case is one sweep of ``len(seeds) x len(infls)`` experiments on DAPPER's own
``mods.Lorenz63.sakov2012`` or ``mods.Lorenz96.sakov2008`` HMM (only the chronology is
shortened to ``cycles`` analyses with ``burn_in`` model time units not scored, and the
mean of ``X0`` replaced by ``x0`` when the case gives one), with
``EnKF('Sqrt', N, infl)`` (no rotation) or ``LETKF(N, infl, loc_rad)``. The sweep is
launched the DAPPER way: ``xpList.launch(HMM, save_as, mp=...)``, which per experiment
seeds, simulates the truth and observations, assimilates, averages in time and (with
``mp``) pickles the result; ``mp=0`` runs them one after the other in this process, ``mp=P``
on a ``P``-process pool. The whole ``launch`` is timed. The result holds the wall time and,
per experiment, seed, inflation and the time-mean analysis RMSE after burn-in
(``avrgs.err.rms.a``).
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from dapper_side_common import import_dapper, side_main


def make_hmm(modelling, case: dict):
    """DAPPER's preset HMM of ``case['model']``: ``cycles`` analyses, ``burn_in`` (time) unscored, X0 mean ``x0``."""
    if case["model"] == "lorenz63":
        from dapper.mods.Lorenz63.sakov2012 import HMM
    else:
        from dapper.mods.Lorenz96.sakov2008 import HMM
    hmm = copy.deepcopy(HMM)
    tseq = hmm.tseq
    hmm.tseq = modelling.Chronology(
        tseq.dt, dko=tseq.dko, Ko=int(case["cycles"]) - 1, BurnIn=float(case["burn_in"])
    )
    if case.get("x0") is not None:  # another mean of the initial truth and ensemble, same covariance
        hmm.X0 = modelling.GaussRV(mu=np.asarray(case["x0"], dtype=float), C=hmm.X0.C)
    hmm.liveplotters = []
    return hmm


def make_xps(dapper, da, case: dict):
    """One experiment per (seed, inflation), seed as ``xp.seed`` (read by DAPPER's ``seed_and_simulate``)."""
    xps = dapper.xpList()
    for seed in case["seeds"]:
        for infl in case["infls"]:
            if case["method"] == "ETKF":
                xp = da.EnKF("Sqrt", N=int(case["N"]), infl=float(infl))
            else:
                xp = da.LETKF(N=int(case["N"]), infl=float(infl), loc_rad=float(case["loc_rad"]))
            xp.seed = int(seed)
            xps.append(xp)
    return xps


def _rmse_a(xp) -> float:
    try:
        return float(xp.avrgs.err.rms.a.val)
    except AttributeError:  # a crashed experiment has no averages
        return float("nan")


def run_case(mods, case):
    dapper, da, modelling = mods
    import dapper.tools.progressbar as pb
    from dapper.tools.datafiles import load_xps

    pb.disable_progbar = True  # launch(mp=...) switches it back on when done
    pb.disable_user_interaction = True

    hmm = make_hmm(modelling, case)
    xps = make_xps(dapper, da, case)
    mp = int(case.get("mp", 0))
    with tempfile.TemporaryDirectory(prefix="dapper-sweep-") as tmp:
        dapper.rc.dirs.data = Path(tmp)
        t0, c0 = time.perf_counter(), time.process_time()
        if mp:
            save_as = xps.launch(hmm, save_as="sweep", mp=mp)
            wall_launch = time.perf_counter() - t0
            done = load_xps(save_as)
        else:
            xps.launch(hmm, save_as=False)
            wall_launch = time.perf_counter() - t0
            done = list(xps)
        cpu = time.process_time() - c0  # this process only: without the pool's workers
    runs = [{"seed": int(xp.seed), "infl": float(xp.infl), "rmse_a": _rmse_a(xp)} for xp in done]
    runs.sort(key=lambda r: (r["seed"], r["infl"]))
    return {
        "name": case["name"],
        "mp": mp,
        "wall_s": wall_launch,
        "cpu_s": cpu,
        "n_runs": len(xps),
        "n_results": len(runs),
        "runs": runs,
        "description": repr(xps[0]),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
    }


def main(argv):
    import contextlib
    import io

    mods = import_dapper()
    # launch() prints where it stores results and load_xps its progress: keep stdout clean
    with contextlib.redirect_stdout(io.StringIO()):
        return side_main(argv, run_case, mods, "sweep_throughput_dapper_side", extra={"numpy": np.__version__})


if __name__ == "__main__":
    sys.exit(main(sys.argv))
