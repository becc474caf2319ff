"""hybrida's iEnKS against DAPPER's, on the same truth, observations and initial ensemble.

Run with the project's Python (``.venv/bin/python benchmarks/peers/ienks_compare.py``).

* Cases: Lorenz-63 in the Sakov, Oliver & Bertino (2012) setup (DAPPER
  ``mods.Lorenz63.sakov2012``: dt=0.01, all 3 variables observed every 25
  steps, R=2I; iEnKS N=10, infl=1.02, rot, Lag=1 → published rmse_a 0.31) and
  Lorenz-96 in the Sakov & Oke (2008) setup (``mods.Lorenz96.sakov2008``: n=40,
  dt=0.05, all observed every step, R=I; iEnKS N=40, infl=1.01, rot, Lag=1 →
  0.17). Both use DAPPER's defaults nIter=10, wtol=0 (always 10 Gauss–Newton
  iterations).
* The truth (at every model step), the observations and the initial ensemble
  are made here with hybrida's models and saved to an ``.npz``;
  ``benchmarks/peers/ienks_dapper_side.py`` runs DAPPER's ``iEnKS('Sqrt', ...)`` on
  it in the DAPPER venv ``benchmarks/.dapper-venv`` (found or made by
  ``dapper_venv.py``, as for ``dapper_compare.py``) and times ``xp.assimilate``.
* hybrida's :class:`~hybrida.assimilation.ensemble.ienks.IEnKS` runs on the same
  arrays twice: through :func:`hybrida.cycle.run_cycle` (the public loop, with
  its per-cycle scores) and as a bare forecast + analyse loop (+ the analysis
  RMSE). Random rotations draw from different generators in the two
  frameworks, so the rmse_a agree statistically, not digit for digit.
* The table (rmse_a after burn-in, ms/cycle of both, ratio hybrida ÷ DAPPER) is
  printed and written as section ``ienks`` of ``docs/benchmarks.md``.

Flags: ``--cycles-l63`` (default 500), ``--cycles-l96`` (default 1000),
``--quick`` (smoke run), ``--skip-dapper``, ``--output`` (``-`` for none),
``--repeat`` (timed runs, fastest counts), ``--threads`` (default 1 for both).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))

from dapper_venv import find_dapper_python, run_side, section_footer

from benchmarks.common import DOC, command, machine, write_section

HERE = Path(__file__).resolve().parent
SIDE = HERE / "ienks_dapper_side.py"


@dataclass
class Case:
    name: str
    model: str  # "lorenz63" | "lorenz96"
    n: int
    dt: float
    dko: int
    obs_var: float
    init_var: float
    N: int
    infl: float
    rot: bool
    cycles: int
    burn_in_time: float
    lag: int = 1
    n_iter: int = 10
    wtol: float = 0.0
    published: float | None = None
    target: str = ""
    npz: str = ""
    result: dict = field(default_factory=dict)

    @property
    def burn_in(self) -> int:
        """Burn-in in cycles (analyses at times <= burn_in_time are not scored)."""
        return min(round(self.burn_in_time / (self.dt * self.dko)), self.cycles - 1)


def make_cases(args) -> list[Case]:
    c63 = args.cycles_l63 or (60 if args.quick else 500)
    c96 = args.cycles_l96 or (100 if args.quick else 1000)
    return [
        Case(
            "L63 sakov2012, iEnKS N=10, infl 1.02, rot",
            "lorenz63", 3, 0.01, 25, 2.0, 2.0, 10, 1.02, True, c63, 16.0 if c63 > 200 else 4.0,
            published=0.31, target="DAPPER ~25 ms/cycle",
        ),
        Case(
            "L96 sakov2008, iEnKS N=40, infl 1.01, rot",
            "lorenz96", 40, 0.05, 1, 1.0, 0.001, 40, 1.01, True, c96, 20.0 if c96 > 500 else 2.0,
            published=0.17, target="DAPPER ~6 ms/cycle",
        ),
    ]


def _model(c: Case):
    from hybrida.models import Lorenz63, Lorenz96

    return Lorenz63(dt=c.dt) if c.model == "lorenz63" else Lorenz96(n=c.n, F=8.0, dt=c.dt)


def prepare_data(c: Case, tmp: Path, seed: int) -> None:
    """Truth at every model step, observations at every dko-th step, initial ensemble → .npz."""
    import torch

    model = _model(c)
    g = torch.Generator().manual_seed(seed)
    x_ref = model.initial_state(torch.float64)
    x0 = x_ref + math.sqrt(c.init_var) * torch.randn(c.n, generator=g, dtype=torch.float64)
    with torch.no_grad():
        xx = model.forecast(x0, c.cycles * c.dko, trajectory=True)
    yy = xx[c.dko :: c.dko] + math.sqrt(c.obs_var) * torch.randn(c.cycles, c.n, generator=g, dtype=torch.float64)
    E0 = x_ref + math.sqrt(c.init_var) * torch.randn(c.N, c.n, generator=g, dtype=torch.float64)
    c.npz = str(tmp / f"{c.model}.npz")
    np.savez(c.npz, xx=xx.numpy(), yy=yy.numpy(), E0=E0.numpy())


# ----------------------------------------------------------------------------- hybrida


def run_hybrida(c: Case, repeat: int, seed: int) -> dict:
    import torch

    from hybrida.assimilation.base import state_mean
    from hybrida.assimilation.ensemble.ienks import IEnKS
    from hybrida.cycle import run_cycle
    from hybrida.observations.base import Observation
    from hybrida.observations.errors import DiagonalError

    data = np.load(c.npz)
    xx, yy, E0 = (torch.from_numpy(data[k]) for k in ("xx", "yy", "E0"))
    truth = xx[:: c.dko]
    model = _model(c)
    error = DiagonalError(torch.full((c.n,), c.obs_var, dtype=torch.float64))
    observations = [Observation(y=yy[k], operator=lambda x: x, error=error) for k in range(c.cycles)]

    def fresh():
        method = IEnKS(N=c.N, lag=c.lag, n_iter=c.n_iter, wtol=c.wtol, infl=c.infl, rot=c.rot)
        state = method.initial_state(E0.mean(0), 1.0)
        state.current, state.start = E0.clone(), E0.clone()
        return method, state, torch.Generator().manual_seed(seed)

    walls, walls_bare, rmse, rmse_bare = [], [], [], []
    for _ in range(repeat):
        method, state, gen = fresh()
        t0 = time.perf_counter()
        rmse = [r.rmse_a for r, _ in run_cycle(model, method, state, truth, observations, c.dko, generator=gen)]
        walls.append(time.perf_counter() - t0)
        method, state, gen = fresh()
        rmse_bare = []
        t0 = time.perf_counter()
        for k in range(1, c.cycles + 1):
            state = method.forecast(model, state, c.dko, (k - 1) * c.dko * c.dt)
            state = method.analyse(state, observations[k - 1], k * c.dko * c.dt, gen)
            rmse_bare.append(float((state_mean(state) - truth[k]).pow(2).mean().sqrt()))
        walls_bare.append(time.perf_counter() - t0)
    b = c.burn_in
    return {
        "rmse_a": float(np.mean(rmse[b:])),
        "rmse_a_bare": float(np.mean(rmse_bare[b:])),
        "rmse_a_series": rmse,
        "s_per_cycle": min(walls) / c.cycles,
        "filter_s_per_cycle": min(walls_bare) / c.cycles,
        "wall_s_all": walls,
        "filter_wall_s_all": walls_bare,
        "description": repr(method),
    }


# ----------------------------------------------------------------------------- DAPPER


def run_dapper(cases: list[Case], tmp: Path, args) -> tuple[dict | None, str]:
    py, why = find_dapper_python(args)
    if py is None:
        return None, why
    spec = [
        {
            "name": c.name, "npz": c.npz, "model": c.model, "N": c.N, "lag": c.lag,
            "n_iter": c.n_iter,
            # DAPPER stops when |Δw_D|² < wtol·N with w_D = w/√(N-1) (see hybrida's ienks.py)
            "wtol": c.wtol**2 / (c.N * (c.N - 1)),
            "infl": c.infl, "rot": c.rot, "dt": c.dt, "dko": c.dko, "obs_var": c.obs_var,
            "burn_in": c.burn_in, "repeat": args.repeat,
        }
        for c in cases
    ]
    print(f"dapper: running {len(cases)} case(s) in {py}", flush=True)
    res, why = run_side(py, SIDE, spec, tmp, "ienks", args.threads, args.dapper_timeout)
    if res is None:
        return None, why
    by_name = {d["name"]: d for d in res["cases"]}
    for c in cases:
        c.result["dapper"] = by_name.get(c.name, {"error": "not run"})
    return res, ""


# ----------------------------------------------------------------------------- report


def _ms(v) -> str:
    return "—" if v is None else f"{v * 1e3:.1f}"


def _f(v, spec=".3f") -> str:
    return "—" if v is None or not math.isfinite(v) else format(v, spec)


def build_table(cases: list[Case], meta: dict, notes: list[str]) -> str:
    lines = [
        "## iEnKS versus DAPPER",
        "",
        "Written by `benchmarks/peers/ienks_compare.py`; do not edit between the markers.",
        (
            "Both frameworks get the same truth, observations and initial ensemble and run the "
        "transform (`'Sqrt'`) iEnKS with Lag=1, 10 Gauss–Newton iterations every cycle (DAPPER's "
        "defaults nIter=10, wtol=0), inflation and random rotation at the window start. rmse_a: "
        "mean analysis RMSE after burn-in (DAPPER: its `stats.err.rms.a`, a linearised analysis "
        "at the window end; hybrida: the analysed window start propagated to the window end). "
        "ms/cycle: DAPPER's `xp.assimilate` (with its per-step statistics), hybrida's `run_cycle` "
        "(with its per-cycle scores) and hybrida's bare forecast + analyse loop. "
            "ratio = hybrida run_cycle ms/cycle ÷ DAPPER ms/cycle (< 1: hybrida faster)."
        ),
        "",
        (
            "| experiment | cycles (burn-in) | published | DAPPER rmse_a | hybrida rmse_a "
            "| DAPPER ms/cycle | hybrida ms/cycle | hybrida filter ms/cycle | ratio | issue target |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        d, h = c.result.get("dapper", {}), c.result.get("hybrida", {})
        ds, hs = d.get("s_per_cycle"), h.get("s_per_cycle")
        ratio = f"{hs / ds:.2f}" if ds and hs else "—"
        d_rmse = "error" if "error" in d else _f(d.get("rmse_a"))
        h_rmse = "error" if "error" in h else _f(h.get("rmse_a"))
        lines.append(
            f"| {c.name} | {c.cycles} ({c.burn_in}) | {_f(c.published, '.2f')} | {d_rmse} | {h_rmse} "
            f"| {_ms(ds)} | {_ms(hs)} | {_ms(h.get('filter_s_per_cycle'))} | {ratio} | {c.target} |"
        )
    lines.append("")
    lines += section_footer(cases, meta, notes)
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles-l63", type=int, default=None, help="L63 cycles (default 500)")
    p.add_argument("--cycles-l96", type=int, default=None, help="L96 cycles (default 1000)")
    p.add_argument("--quick", action="store_true", help="small cycle counts: a smoke run")
    p.add_argument("--skip-dapper", action="store_true", help="hybrida only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=str(DOC), help="Markdown file whose 'ienks' section is written; '-' for none")
    p.add_argument("--dapper-version", default=None, help="DAPPER release (default: as dapper_venv.py)")
    p.add_argument("--dapper-python", default=None, help="interpreter for the DAPPER venv")
    p.add_argument("--dapper-timeout", type=float, default=1800.0)
    p.add_argument("--repeat", type=int, default=1, help="timed runs per framework (fastest counts)")
    p.add_argument("--threads", type=int, default=1, help="threads for both; 0 = the libraries' defaults")
    p.add_argument("--json", default=None, help="also write all results (per-cycle RMSE too) here")
    args = p.parse_args(argv)

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cases = make_cases(args)
    notes: list[str] = []
    dapper_version = None
    with tempfile.TemporaryDirectory(prefix="hybrida-ienks-") as tmpdir:
        tmp = Path(tmpdir)
        for c in cases:
            prepare_data(c, tmp, args.seed)
        if args.skip_dapper:
            notes.append("DAPPER skipped (--skip-dapper).")
        else:
            try:
                res, why = run_dapper(cases, tmp, args)
                dapper_version = res and f"{res['dapper_version']} (Python {res['python']})"
            except Exception as err:  # noqa: BLE001 - degrade to a hybrida-only table
                why = f"{type(err).__name__}: {err}"
            if why:
                notes.append(f"DAPPER columns empty: {why}")
                print(f"dapper: {why}", file=sys.stderr, flush=True)
        for c in cases:
            print(f"hybrida: {c.name}, {c.cycles} cycles", flush=True)
            try:
                c.result["hybrida"] = run_hybrida(c, args.repeat, args.seed)
            except Exception as err:  # noqa: BLE001 - report in the table
                c.result["hybrida"] = {"error": f"{type(err).__name__}: {err}"}
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    meta = {
        "date": datetime.date.today().isoformat(),
        "command": f"`{command(__file__, argv)}`",
        "machine": f"{machine()}, threads {args.threads} (both codes) "
        f"(load average {load0:.1f} before, {load1:.1f} after: timings on a busy machine are slower)",
        "hybrida": f"Python {platform.python_version()}, torch {torch.__version__}, float64",
        "DAPPER": dapper_version or "not run",
    }
    table = build_table(cases, meta, notes)
    print(table)
    if args.output != "-":
        write_section("ienks", table, Path(args.output))
        print(f"wrote section 'ienks' of {args.output}")
    if args.json:
        Path(args.json).write_text(json.dumps([{"name": c.name, **c.result} for c in cases]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
