"""hybrida against DAPPER on the same truth, observations and initial condition, seed by seed.

Run with the project's Python (``.venv/bin/python benchmarks/peers/same_truth_compare.py``).

Two published rows sit just above our bar; this tells whether that is our
implementation or seed noise of 1000-cycle runs / the published number itself.

* 4D-Var on ``lorenz96/bocquet2013`` (L96 n=40, F=8, dt 0.05, every variable
  observed every 4 steps, R=I, 1000 cycles, burn-in t=20 = 100 cycles):
  strong constraint, shift 1, lag 1/2/4 with xB 0.2/0.1/0.02 and B = xB·I
  (DAPPER ``Var4D(Lag, xB, B='eye')``, its default nIter=10, wtol=0: always 10
  Gauss–Newton steps; hybrida ``4dvar`` with ``B='identity'`` and its defaults
  max_outer=10, tol=1e-4). DAPPER's sakov2008.py quotes 0.46 / 0.39 / 0.37.
  ``--exact-tlm-seeds`` (default 1) adds DAPPER runs whose L96 tangent linear
  is the exact Jacobian of the RK4 step instead of DAPPER's ``dstep_dx``
  (expm of the tendency Jacobian frozen at the step start).
* Perturbed-observation EnKF N=10, infl 1.04 on ``lorenz63/sakov2012`` (dt
  0.01, obs every 25 steps, R=2I, 1000 cycles, burn-in t=16 = 64 cycles;
  published 0.65). hybrida runs twice: as shipped (centred perturbations
  rescaled by sqrt(N/(N-1)) as DAPPER's ``mean0`` does, the default since
  stop 9) and with ``rescale=False`` (centred only, the default before).

hybrida runs its reference rows exactly as ``benchmarks/reproduce/reproduce.py`` does
(``ReferenceRow.config(seed)`` + ``run_experiment``), so its per-seed numbers
are the reproduction table's. The truth (re-run at every model step from the
twin's initial state and checked equal to the twin at the analysis times), the
observations and the initial ensemble/background of that build are written to
an ``.npz`` that ``benchmarks/peers/same_truth_dapper_side.py`` assimilates in the
DAPPER venv. Both codes are scored on the same cycles (analysis time > burn-in)
with the RMSE of the analysis mean at the current (window-end) time.

The table is printed and written as section ``dapper-same-truth`` of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))

from dapper_venv import find_dapper_python, run_side

from benchmarks.common import DOC, command, machine, write_section

HERE = Path(__file__).resolve().parent
SIDE = HERE / "same_truth_dapper_side.py"
SECTION = "dapper-same-truth"


@dataclass
class Case:
    key: str
    preset: str
    method: str  # hybrida method name of the reference row
    params: dict
    dapper_method: str  # "Var4D" | "EnKF"
    dapper_params: dict
    published: float
    seeds: list[int]
    #: extra DAPPER runs: label -> spec keys (and "seeds": the seeds to run it on)
    dapper_variants: dict[str, dict] = field(default_factory=dict)
    hybrida_variants: tuple[str, ...] = ("shipped",)
    results: dict = field(default_factory=dict)  # (side, variant, seed) -> result dict


def make_cases(args) -> list[Case]:
    var_seeds = list(args.seeds_4dvar)
    tlm = {"exact RK4 TLM": {"tlm": "rk4", "seeds": list(args.exact_tlm_seeds)}}
    cases = [
        Case(
            f"4D-Var lag {lag}, xB {xB}",
            "lorenz96/bocquet2013",
            "4dvar",
            {"lag": lag, "xB": xB, "B": "identity"},
            "Var4D",
            {"lag": lag, "xB": xB, "B": "eye"},
            pub,
            var_seeds,
            dapper_variants=dict(tlm),
        )
        for lag, xB, pub in ((1, 0.2, 0.46), (2, 0.1, 0.39), (4, 0.02, 0.37))
    ]
    cases.append(
        Case(
            "EnKF PertObs N=10, infl 1.04",
            "lorenz63/sakov2012",
            "enkf",
            {"N": 10, "infl": 1.04},
            "EnKF",
            {"upd_a": "PertObs", "N": 10, "infl": 1.04},
            0.65,
            list(args.seeds_enkf),
            hybrida_variants=("shipped", "centred"),
        )
    )
    return [c for c in cases if not args.only or any(o in c.key for o in args.only)]


def _config(c: Case, seed: int, cycles: int | None, variant: str = "shipped"):
    from hybrida.experiment.references import ReferenceRow

    params = dict(c.params, **({"rescale": False} if variant == "centred" else {}))
    return ReferenceRow(c.preset, c.method, params).config(seed=seed, cycles=cycles)


def scored_cycles(config) -> list[int]:
    """Cycles k (1-based) that the runner scores: analysis time k·every·dt > burn_in."""
    dt = float(config.model.params["dt"])
    every = int(config.observations.every)
    return [k for k in range(1, config.cycles + 1) if k * every * dt > config.burn_in]


def prepare_data(c: Case, seed: int, cycles: int | None, tmp: Path) -> dict:
    """Twin of ``c`` at ``seed`` (hybrida's builder) → .npz for DAPPER; returns the run spec."""
    import torch

    from hybrida.assimilation.base import WindowState
    from hybrida.experiment.builder import build

    config = _config(c, seed, cycles)
    exp = build(config)
    twin = exp.twin
    spc = twin.steps_per_cycle
    model = exp.model
    with torch.no_grad():
        chunks, x = [twin.truth[0:1]], twin.truth[0]
        for k in range(config.cycles):
            traj = model.forecast(x, spc, k * spc * model.dt, trajectory=True)
            chunks.append(traj[1:])
            x = traj[-1]
    xx = torch.cat(chunks)
    mismatch = float((xx[::spc] - twin.truth).abs().max())
    yy = torch.stack([o.y for o in twin.observations])
    init = exp.initial.current if isinstance(exp.initial, WindowState) else exp.initial
    E0 = init.reshape(-1, init.shape[-1])
    npz = tmp / f"{c.method}_{c.params.get('lag', 0)}_{seed}.npz"
    np.savez(npz, xx=xx.numpy(), yy=yy.numpy(), E0=E0.numpy())
    return {
        "npz": str(npz),
        "model": config.model.name,
        "dt": float(model.dt),
        "dko": spc,
        "obs_var": float(config.observations.params["std"]) ** 2,
        "init_var": float(config.initial.std) ** 2,
        "scored": [k - 1 for k in scored_cycles(config)],
        "truth_mismatch": mismatch,
    }


# ----------------------------------------------------------------------------- hybrida


def run_hybrida(c: Case, seed: int, cycles: int | None, variant: str) -> dict:
    from hybrida.experiment.runner import run_experiment

    config = _config(c, seed, cycles, variant)
    res = run_experiment(config, progress=False)
    s = res.summary
    scored = [r.cycle for r in res.records if r.time > config.burn_in]
    return {
        "rmse_a": float(s["rmse_a"]),
        "s_per_cycle": float(s["wall_s"]) / len(res.records),
        "scored": scored,
        "rmse_a_series": [float(r.rmse_a) for r in res.records],
        "n_outer": _mean_diag(res.records, "n_outer"),
    }


def _mean_diag(records, key: str) -> float | None:
    vals = [r.diagnostics[key] for r in records if key in (r.diagnostics or {})]
    return float(np.mean(vals)) if vals else None


# ----------------------------------------------------------------------------- DAPPER


def run_dapper(cases: list[Case], specs: dict, args, tmp: Path) -> tuple[str | None, str]:
    py, why = find_dapper_python(args)
    if py is None:
        return None, why
    todo = []
    for c in cases:
        variants = {"default": {}, **c.dapper_variants}
        for seed in c.seeds:
            for label, extra in variants.items():
                if seed not in extra.get("seeds", [seed]):
                    continue
                extra = {k: v for k, v in extra.items() if k != "seeds"}
                spec = specs[(c.key, seed)]
                todo.append(
                    {
                        **{k: v for k, v in spec.items() if k != "truth_mismatch"},
                        **extra,
                        "name": json.dumps([c.key, label, seed]),
                        "method": c.dapper_method,
                        "params": c.dapper_params,
                        "seed": 1000 + seed,
                    }
                )
    print(f"dapper: {len(todo)} run(s) in {py}", flush=True)
    t0 = time.perf_counter()
    res, why = run_side(py, SIDE, todo, tmp, "same_truth", args.threads, args.dapper_timeout)
    if res is None:
        return None, why
    by_case = {c.key: c for c in cases}
    for r in res["cases"]:
        key, label, seed = json.loads(r["name"])
        by_case[key].results[("dapper", label, seed)] = r
    print(f"dapper: done in {time.perf_counter() - t0:.0f} s", flush=True)
    return f"{res['dapper_version']} (Python {res['python']})", ""


# ----------------------------------------------------------------------------- report


def _f(v, spec=".3f") -> str:
    return (
        "—"
        if v is None or not isinstance(v, (int, float)) or not math.isfinite(v)
        else format(v, spec)
    )


def _row(c: Case, side: str, label: str, what: str) -> str | None:
    got = [c.results.get((side, label, s), {}) for s in c.seeds]
    if not any(got):
        return None
    vals = [g.get("rmse_a") for g in got]
    finite = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    med = statistics.median(finite) if finite else None
    per_seed = ", ".join("error" if "error" in g else _f(g.get("rmse_a")) for g in got)
    ms = [g["s_per_cycle"] * 1e3 for g in got if "s_per_cycle" in g]
    return (
        f"| {what} | {per_seed} | {_f(med)} | {_f(statistics.median(ms) if ms else None, '.1f')} |"
    )


def _paired(c: Case, a: tuple[str, str], b: tuple[str, str]) -> str:
    """Mean and spread over seeds of the per-seed difference a - b."""
    d = []
    for s in c.seeds:
        ra, rb = c.results.get((a[0], a[1], s), {}), c.results.get((b[0], b[1], s), {})
        if "rmse_a" in ra and "rmse_a" in rb:
            d.append(ra["rmse_a"] - rb["rmse_a"])
    if not d:
        return "—"
    sd = statistics.stdev(d) if len(d) > 1 else float("nan")
    return f"{statistics.mean(d):+.3f} (sd {_f(sd)}, {len(d)} seeds)"


def build_section(cases: list[Case], meta: dict, notes: list[str], readings: dict[str, str]) -> str:
    lines = [
        "## hybrida and DAPPER on the same truth (4D-Var B = xB·I, L63 perturbed-obs EnKF)",
        "",
        "Written by `benchmarks/peers/same_truth_compare.py`; do not edit between the markers.",
        (
            "For each seed hybrida's builder makes the twin of the reference row (as `reproduce.py` does); "
            "DAPPER 1.8.1 assimilates the same truth, observations and initial background / ensemble "
            "(`benchmarks/peers/same_truth_dapper_side.py`). Both are scored on the same cycles (analysis "
            "time > burn-in) by the RMSE of the analysis mean at the current time (the window end for "
            "4D-Var; DAPPER's `stats.err.rms.a`). 4D-Var: DAPPER `Var4D(Lag, xB, B='eye')` with its "
            "defaults nIter=10, wtol=0 (10 Gauss–Newton steps per cycle, Hessian formed exactly); "
            "hybrida `4dvar` with B='identity', shift 1 and its defaults max_outer=10, tol=1e-4 "
            "(Gauss–Newton + CG). DAPPER's 1.8.1 `Var4D` calls `HMM.Obs(ko)(ko)`; the side script's "
            "observation operator returns itself when called with an index, nothing else changes. "
            "ms/cycle: DAPPER's `xp.assimilate`, hybrida's `run_experiment` cycling, median over seeds, "
            "one thread, a shared machine."
        ),
        "",
    ]
    for c in cases:
        lines += [f"### {c.key} ({c.preset}; published {c.published})", ""]
        lines += [
            "| run | rmse_a per seed (" + ", ".join(map(str, c.seeds)) + ") | median | ms/cycle |"
        ]
        lines += ["|---|---|---|---|"]
        rows = [_row(c, "dapper", "default", f"DAPPER {c.dapper_method}")]
        rows += [
            _row(c, "dapper", label, f"DAPPER {c.dapper_method}, {label}")
            for label in c.dapper_variants
        ]
        for v in c.hybrida_variants:
            what = {
                "shipped": "hybrida",
                "centred": "hybrida, rescale=False (centred perturbations not rescaled)",
            }[v]
            rows.append(_row(c, "hybrida", v, what))
        lines += [r for r in rows if r]
        lines += [
            "",
            f"- hybrida − DAPPER per seed: {_paired(c, ('hybrida', 'shipped'), ('dapper', 'default'))}",
        ]
        for label in c.dapper_variants:
            lines.append(
                f"- hybrida − DAPPER {label}: {_paired(c, ('hybrida', 'shipped'), ('dapper', label))}"
            )
        if "centred" in c.hybrida_variants:
            lines.append(
                f"- hybrida rescale=False − DAPPER: {_paired(c, ('hybrida', 'centred'), ('dapper', 'default'))}; "
                f"rescale=False − shipped: {_paired(c, ('hybrida', 'centred'), ('hybrida', 'shipped'))}"
            )
        outer = [c.results.get(("hybrida", "shipped", s), {}).get("n_outer") for s in c.seeds]
        outer = [o for o in outer if o is not None]
        if outer:
            lines.append(
                f"- hybrida Gauss–Newton steps per cycle (mean): {statistics.mean(outer):.2f}"
            )
        if c.key in readings:
            lines.append(f"- Reading: {readings[c.key]}")
        lines.append("")
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += [f"- **Note:** {n}" for n in notes]
    return "\n".join(lines)


def rebuild(args) -> int:
    """Write the section from the results of an earlier ``--json`` run (and ``--readings``)."""
    data = json.loads(Path(args.from_json).read_text())
    meta = dict(data.pop("_meta", {}))
    meta.update(dict(kv.split("=", 1) for kv in args.meta))
    notes = list(data.pop("_notes", []))
    readings = json.loads(Path(args.readings).read_text()) if args.readings else {}
    args.only = None
    cases = []
    for c in make_cases(args):
        if c.key not in data:
            continue
        for name, r in data[c.key].items():
            side, label, seed = name.split("|")
            c.results[(side, label, int(seed))] = r
        c.seeds = sorted({s for (_, _, s) in c.results})
        tlm_seeds = sorted({s for (side, label, s) in c.results if label == "exact RK4 TLM"})
        for extra in c.dapper_variants.values():
            extra["seeds"] = tlm_seeds
        if not tlm_seeds:
            c.dapper_variants = {}
        cases.append(c)
    text = build_section(cases, meta, notes, readings)
    print(text)
    if args.output != "-":
        write_section(SECTION, text, Path(args.output))
        print(f"wrote section '{SECTION}' of {args.output}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds-4dvar", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--seeds-enkf", type=int, nargs="+", default=list(range(1, 9)))
    p.add_argument(
        "--cycles", type=int, default=None, help="override the presets' 1000 cycles (smoke runs)"
    )
    p.add_argument("--only", nargs="+", default=None, help="cases whose name contains one of these")
    p.add_argument(
        "--exact-tlm-seeds",
        type=int,
        nargs="*",
        default=[1],
        help="4D-Var seeds on which DAPPER Var4D also runs with the exact RK4 TLM (none: omit)",
    )
    p.add_argument("--skip-dapper", action="store_true")
    p.add_argument(
        "--output",
        default=str(DOC),
        help=f"file whose '{SECTION}' section is written; '-' for none",
    )
    p.add_argument(
        "--readings", default=None, help="JSON {case name: reading} added under each table"
    )
    p.add_argument("--json", default=None, help="also write all per-seed results here")
    p.add_argument("--dapper-version", default=None)
    p.add_argument("--dapper-python", default=None)
    p.add_argument("--dapper-timeout", type=float, default=3600.0)
    p.add_argument(
        "--threads", type=int, default=1, help="threads for both (0 = the libraries' defaults)"
    )
    p.add_argument(
        "--from-json",
        default=None,
        help="rebuild the section from a --json file of an earlier run (with --readings), run nothing",
    )
    p.add_argument(
        "--meta",
        nargs="*",
        default=[],
        help="KEY=VALUE lines for the section's footer with --from-json (when the file has none)",
    )
    args = p.parse_args(argv)
    if args.from_json:
        return rebuild(args)

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cases = make_cases(args)
    notes: list[str] = []
    dapper_version = None
    readings = json.loads(Path(args.readings).read_text()) if args.readings else {}
    t_all = time.perf_counter()
    done: list[Case] = []
    # cheapest and most asked-for first, so that a stopped run still leaves a useful section
    order = sorted(
        cases, key=lambda c: {"EnKF": 0}.get(c.dapper_method, 1 + c.params.get("lag", 0) % 4)
    )
    for c in order:
        with tempfile.TemporaryDirectory(prefix="hybrida-same-truth-") as tmpdir:
            tmp = Path(tmpdir)
            specs = {}
            for s in c.seeds:
                specs[(c.key, s)] = spec = prepare_data(c, s, args.cycles, tmp)
                if spec["truth_mismatch"] > 1e-9:
                    notes.append(
                        f"{c.key}, seed {s}: the re-run truth differs from the twin by "
                        f"{spec['truth_mismatch']:.2g}"
                    )
            if not args.skip_dapper:
                version, why = run_dapper([c], specs, args, tmp)
                dapper_version = version or dapper_version
                if why:
                    notes.append(f"{c.key}: DAPPER columns empty: {why}")
            for s in c.seeds:
                for v in c.hybrida_variants:
                    print(f"hybrida: {c.key}, seed {s}, {v}", flush=True)
                    r = run_hybrida(c, s, args.cycles, v)
                    if r.pop("scored") != [k + 1 for k in specs[(c.key, s)]["scored"]]:
                        notes.append(f"{c.key}, seed {s}: scored cycles differ between the codes")
                    c.results[("hybrida", v, s)] = r
        for (side, label, s), r in c.results.items():
            if "error" in r:
                notes.append(f"{c.key}, {side} {label}, seed {s}: {r['error']}")
        done.append(c)
        shown = [x for x in cases if x in done]
        meta = {
            "date": datetime.date.today().isoformat(),
            "command": f"`{command(__file__, argv)}`",
            "machine": f"{machine()}, threads {args.threads} (both codes), "
            f"{time.perf_counter() - t_all:.0f} s in all"
            + ("" if len(done) == len(cases) else f" (partial: {len(done)} of {len(cases)} cases)"),
            "hybrida": f"Python {platform.python_version()}, torch {torch.__version__}, float64",
            "DAPPER": dapper_version or "not run",
        }
        text = build_section(shown, meta, notes, readings)
        if args.output != "-":
            write_section(SECTION, text, Path(args.output))
        if args.json:
            out: dict = {"_meta": meta, "_notes": notes}
            for x in shown:
                out[x.key] = {f"{side}|{label}|{s}": r for (side, label, s), r in x.results.items()}
            Path(args.json).write_text(json.dumps(out))
    print(text)
    if args.output != "-":
        print(f"wrote section '{SECTION}' of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
