"""DAPPER half of ``benchmarks/peers/same_truth_compare.py``; runs inside the DAPPER venv.

Not imported by hybrida and not run by its tests: ``same_truth_compare.py``
starts it with the Python of ``benchmarks/.dapper-venv`` as::

    python same_truth_dapper_side.py CASES.json RESULT.json

Each case names an ``.npz`` with the truth ``xx`` (K·dko + 1, n) at every
model step, the observations ``yy`` (K, n) of every variable at steps dko,
2·dko, ..., K·dko, and the initial condition ``E0``: the initial ensemble
(N, n) for ``EnKF``, the first background (1, n) for ``Var4D``. The HMM is
DAPPER's Lorenz-63 or Lorenz-96 (F = 8) ``step`` with its tangent linear
``dstep_dx``, every variable observed with R = obs_var·I.

DAPPER 1.8.1's ``Var4D`` asks for ``HMM.Obs(ko)(ko)`` and
``HMM.Obs(ko)(ko).linear`` (one ``(ko)`` too many: it predates
``TimeDependentOperator``); :class:`_ObsAtAnyKo` is an ``Operator`` that
returns itself when called with an observation index, so the loop runs
unchanged. ``tlm="rk4"`` replaces DAPPER's L96 ``dstep_dx`` (the propagator
expm(dt·∂f/∂x) of the tendency's Jacobian frozen at the step start, an
approximation of the step's Jacobian) by the exact Jacobian of the RK4
step, to see whether the approximation moves DAPPER's Gauss–Newton fixed point.

Scores: DAPPER's ``stats.err.rms.a`` (one per observation time) averaged over
the observation indices ``scored`` given by the driver, so that both codes
skip the same burn-in. ``xp.assimilate`` is timed.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from dapper_side_common import import_dapper, side_main


def _import_dapper():
    dapper, da, modelling = import_dapper()
    from dapper.tools.seeding import set_seed

    return dapper, da, modelling, set_seed


def _l96_tendency(x: np.ndarray, force: float) -> np.ndarray:
    return (np.roll(x, -1) - np.roll(x, 2)) * np.roll(x, 1) - x + force


def _l96_tendency_jacobian(x: np.ndarray) -> np.ndarray:
    """∂f/∂x of f_i = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F."""
    n = x.shape[0]
    i = np.arange(n)
    J = -np.eye(n)
    J[i, (i + 1) % n] += x[(i - 1) % n]
    J[i, (i - 2) % n] -= x[(i - 1) % n]
    J[i, (i - 1) % n] += x[(i + 1) % n] - x[(i - 2) % n]
    return J


def l96_rk4_jacobian(force: float):
    """Exact Jacobian of one classical RK4 step of Lorenz-96 (chain rule through the 4 stages)."""

    def jac(x, t, dt):
        x = np.asarray(x, dtype=float)
        eye = np.eye(x.shape[0])
        k1 = _l96_tendency(x, force)
        K1 = _l96_tendency_jacobian(x)
        x2 = x + 0.5 * dt * k1
        k2 = _l96_tendency(x2, force)
        K2 = _l96_tendency_jacobian(x2) @ (eye + 0.5 * dt * K1)
        x3 = x + 0.5 * dt * k2
        k3 = _l96_tendency(x3, force)
        K3 = _l96_tendency_jacobian(x3) @ (eye + 0.5 * dt * K2)
        x4 = x + dt * k3
        K4 = _l96_tendency_jacobian(x4) @ (eye + dt * K3)
        return eye + dt / 6.0 * (K1 + 2.0 * K2 + 2.0 * K3 + K4)

    return jac


def build_hmm(modelling, case: dict, n: int, K: int, E0: np.ndarray):
    dt, dko, obs_var = float(case["dt"]), int(case["dko"]), float(case["obs_var"])
    if case["model"] == "lorenz63":
        from dapper.mods.Lorenz63 import dstep_dx, step
    else:
        import dapper.mods.Lorenz96 as L96
        from dapper.mods.Lorenz96 import dstep_dx, step

        L96.Force = 8.0
        if case.get("tlm") == "rk4":
            dstep_dx = l96_rk4_jacobian(8.0)

    class _ObsAtAnyKo(modelling.Operator):
        """An ``Operator`` whose call with an observation index returns itself."""

        def __call__(self, *args, **kwargs):
            if len(args) == 1 and not kwargs and isinstance(args[0], (int, np.integer)):
                return self
            return super().__call__(*args, **kwargs)

    tseq = modelling.Chronology(dt, dko=dko, K=K * dko, BurnIn=0)
    if case["method"] == "Var4D":
        X0 = modelling.GaussRV(mu=E0[0].copy(), C=float(case.get("init_var", 1.0)))
    else:
        X0 = modelling.RV(M=n, func=lambda N: E0[:N].copy())
    Dyn = modelling.Operator(M=n, model=step, linear=dstep_dx, noise=0)
    Obs = _ObsAtAnyKo(**modelling.partial_Id_Obs(n, np.arange(n)), noise=obs_var)
    return modelling.HiddenMarkovModel(Dyn, Obs, tseq, X0)


def make_method(da, case: dict):
    p = case["params"]
    if case["method"] == "Var4D":
        kw = {"Lag": int(p["lag"]), "xB": float(p["xB"]), "B": p.get("B", "eye")}
        if "n_iter" in p:
            kw["nIter"] = int(p["n_iter"])
        return da.Var4D(**kw)
    if case["method"] == "EnKF":
        return da.EnKF(p["upd_a"], N=int(p["N"]), infl=float(p["infl"]))
    raise ValueError(f"unknown method {case['method']!r}")


def run_case(mods, case: dict) -> dict:
    _dapper, da, modelling, set_seed = mods
    data = np.load(case["npz"])
    xx, yy, E0 = data["xx"], data["yy"], data["E0"]
    K, n = yy.shape[0], xx.shape[1]
    hmm = build_hmm(modelling, case, n, K, E0)
    xp = make_method(da, case)
    set_seed(int(case["seed"]))
    t0 = time.perf_counter()
    xp.assimilate(hmm, xx, yy, liveplots=False)
    wall = time.perf_counter() - t0
    rmse_a = np.asarray(xp.stats.err.rms.a, dtype=float)  # one per observation index ko
    scored = np.asarray(case["scored"], dtype=int)
    return {
        "name": case["name"],
        "rmse_a": float(np.mean(rmse_a[scored])),
        "rmse_a_series": [float(v) for v in rmse_a],
        "wall_s": wall,
        "s_per_cycle": wall / K,
        "iters_mean": float(np.nanmean(xp.stats.iters.a)) if hasattr(xp.stats, "iters") else None,
        "description": repr(xp),
    }


def main(argv):
    return side_main(argv, run_case, _import_dapper(), "same_truth_dapper_side")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
