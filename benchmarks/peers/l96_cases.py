"""Lorenz-96 cases of ``dapper_compare.py``: the case table, the truth and the shared data.

The truth and the observations of each state size are made once (with
hybrida's :class:`~hybrida.models.Lorenz96`; plain NumPy RK4 when hybrida's
model cannot be imported) and saved to an ``.npz`` together with the initial
ensemble, so that both frameworks assimilate the same data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

F, DT, OBS_VAR = 8.0, 0.05, 1.0


@dataclass
class Case:
    name: str
    method: str  # "ETKF" | "LETKF"
    n: int
    N: int
    cycles: int
    burn_in: int
    infl: float = 1.02
    loc_rad: float | None = None
    dapper: bool = True  # also run in DAPPER
    target: str = ""  # the goal, for the table
    target_speedup: float | None = None
    target_s_per_cycle: float | None = None
    repeat: int = 1  # timed runs; the fastest counts
    full_loop: bool = True  # also time run_cycle (not only forecast + analysis)
    auto_threads: bool = False  # hybrida picks its thread count per case (--threads -1)
    npz: str = ""
    result: dict = field(default_factory=dict)


def make_cases(args) -> list[Case]:
    quick = args.quick
    c40 = args.cycles or (200 if quick else 2000)
    c4k = args.cycles_4000 or (5 if quick else 30)
    c1m = args.cycles_huge or (2 if quick else 5)
    cases = [
        Case(
            "L96 n=40, ETKF N=28",
            "ETKF",
            40,
            28,
            c40,
            max(c40 // 10, 1),
            target="≥ 3× faster",
            target_speedup=3.0,
        ),
        Case(
            "L96 n=40, LETKF N=10",
            "LETKF",
            40,
            10,
            c40,
            max(c40 // 10, 1),
            loc_rad=4.0,
            target="≥ 3× faster",
            target_speedup=3.0,
        ),
        Case(
            "L96 n=4000, LETKF N=10",
            "LETKF",
            4000,
            10,
            c4k,
            max(c4k // 3, 1),
            loc_rad=4.0,
            target="≥ 50× faster",
            target_speedup=50.0,
        ),
        Case(  # issue 16 part 3 states the n=4000 bar at N=20
            "L96 n=4000, LETKF N=20",
            "LETKF",
            4000,
            20,
            c4k,
            max(c4k // 3, 1),
            loc_rad=4.0,
            target="≥ 50× faster",
            target_speedup=50.0,
        ),
    ]
    if not args.skip_huge:
        nh = args.huge_n or (10**5 if quick else 10**6)
        label = f"10^{round(np.log10(nh))}" if 10 ** round(np.log10(nh)) == nh else str(nh)
        cases.append(
            Case(
                f"L96 n={label}, LETKF N=20",
                "LETKF",
                nh,
                20,
                c1m,
                0,
                loc_rad=4.0,
                dapper=False,
                full_loop=False,
                target="< 2 s/cycle (filter)" if nh >= 10**6 else "(smoke run: n < 10^6)",
                target_s_per_cycle=2.0 if nh >= 10**6 else None,
            )
        )
    for c in cases:
        c.repeat = max(1, args.repeat) if c.n <= 40 else 1
    return cases


# ----------------------------------------------------------------------------- data


def _l96_rk4_numpy(x: np.ndarray) -> np.ndarray:
    def f(x):
        return (np.roll(x, -1, -1) - np.roll(x, 2, -1)) * np.roll(x, 1, -1) - x + F

    k1 = f(x)
    k2 = f(x + 0.5 * DT * k1)
    k3 = f(x + 0.5 * DT * k2)
    k4 = f(x + DT * k3)
    return x + (DT / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)


def make_truth(n: int, cycles: int, seed: int, spinup: int) -> tuple[np.ndarray, str]:
    """Truth ``(cycles + 1, n)``, one model step per cycle, from F + N(0, 1) spun up."""
    rng = np.random.default_rng(seed)
    x0 = F + rng.standard_normal(n)
    try:
        import torch

        from hybrida.models import Lorenz96

        model = Lorenz96(n=n, F=F, dt=DT)
        with torch.no_grad():
            x = model.forecast(torch.from_numpy(x0), spinup)
            traj = model.forecast(x, cycles, trajectory=True)
        return traj.numpy(), "hybrida.models.Lorenz96"
    except ImportError:
        x = x0
        for _ in range(spinup):
            x = _l96_rk4_numpy(x)
        traj = [x]
        for _ in range(cycles):
            traj.append(_l96_rk4_numpy(traj[-1]))
        return np.stack(traj), "NumPy RK4 (hybrida's Lorenz96 not importable)"


def prepare_data(cases: list[Case], tmp: Path, seed: int, quick: bool) -> dict:
    """One truth and observation set per state size; one initial ensemble per case."""
    info = {}
    for n in sorted({c.n for c in cases}):
        same_n = [c for c in cases if c.n == n]
        K = max(c.cycles for c in same_n)
        spinup = 100 if (quick or n > 10**5) else 1000
        t0 = time.perf_counter()
        xx, source = make_truth(n, K, seed + n, spinup)
        rng = np.random.default_rng(seed + 7 * n + 1)
        yy = xx[1:] + np.sqrt(OBS_VAR) * rng.standard_normal((K, n))
        for c in same_n:
            E0 = xx[0] + np.sqrt(OBS_VAR) * np.random.default_rng(seed + c.N).standard_normal(
                (c.N, n)
            )
            path = tmp / f"l96_n{n}_{c.method}_N{c.N}.npz"
            np.savez(path, xx=xx[: c.cycles + 1], yy=yy[: c.cycles], E0=E0)
            c.npz = str(path)
        info[n] = {"source": source, "seconds": time.perf_counter() - t0, "spinup": spinup}
        print(
            f"data: n={n}, {K} cycles, truth from {source} ({info[n]['seconds']:.1f} s)", flush=True
        )
    return info
