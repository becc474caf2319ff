"""The two-layer QG testbed: agreement with pyqg-jax (tendencies, spun-up statistics) and QG DA rows.

1. Tendencies: hybrida's :class:`~hybrida.models.qg.QGModel` and pyqg-jax's
   ``QGModel`` (double precision) on random PV fields at 64×64 with pyqg's
   default parameters: max |Δ dq̂/dt| / max |dq̂/dt|.
2. Spun-up statistics: from pyqg's initial condition (same seed) hybrida
   (RK4, dt 7200 s) and pyqg-jax (AB3, dt 7200 s, its ``SteppedModel``) run
   ``--years`` years; the eddy kinetic energy (pyqg's ``total_ke``) and the
   isotropic KE spectra of each layer are averaged over the last half, sampled
   every 5 days. A second hybrida run from another seed shows the sampling
   spread of these statistics.
3. DA rows: the LETKF with 2-D localisation on 64×64×2 (``qg/letkf64``) and
   128×128×2 (``qg/letkf128``), rmse_a against the climatological std of a
   one-year free run; time per analysis at 64×64×2. Each preset's row is kept
   in ``qg_da_rows.json``; ``--da-presets`` reruns only the presets named.

Writes the "qg" section of docs/benchmarks.md.

    .venv/bin/python benchmarks/reproduce/qg.py --no-da              # sections 1-2, ~5-10 min
    .venv/bin/python benchmarks/reproduce/qg.py --reuse-validation   # section 3 only, ~10 min + ~40 min at 128²
    .venv/bin/python benchmarks/reproduce/qg.py --reuse-validation --da-presets qg/letkf128  # one row rerun
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hybrida.assimilation.ensemble import LETKF
from hybrida.experiment.config import ExperimentConfig
from hybrida.experiment.presets import get_preset
from hybrida.experiment.runner import run_experiment
from hybrida.models.qg import QGModel
from hybrida.observations.grid2d import RandomGridObs

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.common import add_output_args, md_table, output_path, provenance, write_section

DAY = 86400.0
#: the DA presets of section 3, in table order
DA_PRESETS = ("qg/letkf64", "qg/letkf128")


def _pyqg_jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    import pyqg_jax

    return jax, pyqg_jax


def tendency_rows(n_fields: int = 5) -> list[list[str]]:
    """Max relative difference of dq̂/dt, ψ̂ and the EKE against pyqg-jax on random fields."""
    jax, pj = _pyqg_jax()
    import jax.numpy as jnp

    rows = []
    for name, params in (
        ("pyqg defaults, 64×64", {"nx": 64}),
        ("U2=-0.01, no drag, δ=0.5, 64×32", {"nx": 64, "ny": 32, "W": 5e5, "U2": -0.01, "rek": 0.0,
                                              "delta": 0.5}),
    ):
        m = QGModel(**params)
        keys = ("nx", "ny", "L", "W", "beta", "rd", "delta", "U1", "U2", "rek")
        jm = pj.qg_model.QGModel(**{k: getattr(m, k) for k in keys}, precision=pj.state.Precision.DOUBLE)
        worst = {"dq̂/dt": 0.0, "ψ̂": 0.0, "EKE": 0.0}
        g = torch.Generator().manual_seed(0)
        for _ in range(n_fields):
            x = 1e-5 * torch.randn(m.n, generator=g, dtype=torch.float64)
            st = jm.create_initial_state(jax.random.key(0)).update(q=jnp.asarray(m.to_grid(x).numpy()))
            full = jm.get_full_state(st)
            qh = m.spectral(x)
            for key, ours, ref in (
                ("dq̂/dt", m.spectral_tendency(qh).numpy(), np.array(full.dqhdt)),
                ("ψ̂", m.invert(qh).numpy(), np.array(full.ph)),
            ):
                worst[key] = max(worst[key], float(np.abs(ours - ref).max() / np.abs(ref).max()))
            ke = float(pj.diagnostics.total_ke(full, jm.get_grid()))
            worst["EKE"] = max(worst["EKE"], abs(float(m.kinetic_energy(x)) - ke) / ke)
        rows.append([name, *(f"{v:.1e}" for v in worst.values())])
    return rows


def run_hybrida(m: QGModel, seed: int, steps: int, every: int, keep_from: int) -> list[torch.Tensor]:
    """States every ``every`` steps from step ``keep_from`` on, starting from pyqg's initial PV."""
    x = m.random_state(torch.Generator().manual_seed(seed))
    kept = []
    with torch.no_grad():
        for k in range(0, steps, every):
            x = m.forecast(x, every)
            if k + every >= keep_from:
                kept.append(x)
    return kept


def run_pyqg_jax(m: QGModel, x0: torch.Tensor, steps: int, every: int, keep_from: int) -> list[torch.Tensor]:
    """pyqg-jax's AB3 run of the same length from ``x0``; PV states in hybrida's layout."""
    jax, pj = _pyqg_jax()
    import jax.numpy as jnp

    jm = pj.qg_model.QGModel(nx=m.nx, precision=pj.state.Precision.DOUBLE)
    stepped = pj.steppers.SteppedModel(jm, pj.steppers.AB3Stepper(dt=m.dt))
    st = stepped.initialize_stepper_state(
        jm.create_initial_state(jax.random.key(0)).update(q=jnp.asarray(m.to_grid(x0).numpy()))
    )

    @jax.jit
    def advance(s):
        return jax.lax.fori_loop(0, every, lambda _, v: stepped.step_model(v), s)

    kept = []
    for k in range(0, steps, every):
        st = advance(st)
        if k + every >= keep_from:
            kept.append(torch.from_numpy(np.array(st.state.q)).reshape(-1))
    return kept


def statistics(m: QGModel, states: list[torch.Tensor]) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Time-mean EKE, wavenumbers and the time-mean KE spectra (2, K)."""
    X = torch.stack(states)
    k, spec = m.ke_spectrum(X)
    return float(m.kinetic_energy(X).mean()), k, spec.mean(0)


def spinup_rows(years: float) -> tuple[list[list[str]], dict[str, float]]:
    m = QGModel()
    steps = round(years * 360 * DAY / m.dt)
    every = round(5 * DAY / m.dt)
    keep_from = steps // 2
    timings, stats = {}, {}
    t0 = time.perf_counter()
    stats["hybrida RK4 (seed 0)"] = statistics(m, run_hybrida(m, 0, steps, every, keep_from))
    timings["hybrida"] = time.perf_counter() - t0
    x0 = m.random_state(torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    stats["pyqg-jax AB3 (seed 0)"] = statistics(m, run_pyqg_jax(m, x0, steps, every, keep_from))
    timings["pyqg-jax"] = time.perf_counter() - t0
    stats["hybrida RK4 (seed 1)"] = statistics(m, run_hybrida(m, 1, steps, every, keep_from))
    ref_eke, k, ref_spec = stats["pyqg-jax AB3 (seed 0)"]
    band = (k >= 2 * math.pi / m.L * 2) & (k <= 2 * math.pi / m.L * 20)  # energy-containing to inertial
    rows = []
    for name, (eke, _, spec) in stats.items():
        rel = [float(((spec[i, band] - ref_spec[i, band]).abs() / ref_spec[i, band]).mean()) for i in range(2)]
        peak = [int(torch.argmax(spec[i])) + 1 for i in range(2)]
        rows.append([name, f"{eke:.3e}", f"{eke / ref_eke - 1:+.1%}", f"{rel[0]:.1%}", f"{rel[1]:.1%}",
                     f"{peak[0]}, {peak[1]}"])
    return rows, timings


def climatological_std(m: QGModel, x0: torch.Tensor, days: int = 360) -> float:
    """rms deviation of a free run (sampled daily) from its time mean: the climatology rmse."""
    with torch.no_grad():
        states, x = [], x0
        for _ in range(days):
            x = m.forecast(x, round(DAY / m.dt))
            states.append(x)
    X = torch.stack(states)
    return float(X.var(0).mean().sqrt())


def letkf_timing(threads: int, repeats: int = 5) -> float:
    """Seconds per LETKF analysis at 64×64×2 (N=20, p=1024 new random network each time)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    m = QGModel()
    g = torch.Generator().manual_seed(0)
    x = m.random_state(g)
    E = x + 1e-6 * torch.randn(20, m.n, generator=g, dtype=torch.float64)
    net = RandomGridObs(n=m.n, p=1024, layer_std=[1e-6, 1.5e-7])
    f = LETKF(20, loc_rad=1.0, infl=1.1)
    f.analyse(E, net.observe(x, 0, g))
    best = math.inf
    for c in range(repeats):
        obs = net.observe(x, c + 1, g)
        t0 = time.perf_counter()
        f.analyse(E, obs)
        best = min(best, time.perf_counter() - t0)
    torch.set_num_threads(old)
    return best


def da_row(preset: str, cycles: int | None) -> dict:
    """One section-3 row: ``preset`` (``cycles`` overrides its length) run by ``run_experiment``."""
    cfg = copy.deepcopy(get_preset(preset))
    if cycles is not None:
        cfg["cycles"] = cycles
    config = ExperimentConfig(**cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    res = run_experiment(config, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = res.summary
    m = QGModel(**{**config.model.params, "seed": 1})
    clim = climatological_std(m, m.initial_state())
    p = config.method.params
    return {
        "row": [f"`{preset}`", f"{m.ny}×{m.nx}×2", f"{config.observations.params['p']}",
                f"LETKF N={p['N']}, loc_rad {p['loc_rad']:g}, infl {p['infl']:g}", f"{s['rmse_a']:.2e}",
                f"{s['spread_a']:.2e}", f"{clim:.2e}", f"{s['rmse_a'] / clim:.2f}",
                f"{s['n_scored']} of {config.cycles}", f"{wall:.0f}", f"{cpu:.0f}"],
        "date": time.strftime("%Y-%m-%d"), "load_end": f"{os.getloadavg()[0]:.1f}",
    }


ROWS = Path(__file__).with_name("qg_rows.json")
DA_ROWS = Path(__file__).with_name("qg_da_rows.json")


def validation_lines(years: float) -> list[str]:
    """Sections 1 and 2 (tendencies, spun-up statistics) as Markdown lines."""
    lines = ["### 1. Tendencies on random PV fields (5 fields, float64), max relative difference", ""]
    lines += md_table(["parameters", "dq̂/dt", "ψ̂", "EKE"], tendency_rows(), ["l", "r", "r", "r"])
    rows, timings = spinup_rows(years)
    lines += ["", (f"### 2. Spun-up statistics ({years:g} years from pyqg's initial PV, dt 7200 s, "
                   "means over the second half, every 5 days)"), ""]
    lines += md_table(
        ["run", "EKE (m²/s²)", "EKE vs pyqg-jax", "KE spectrum rel. diff, layer 1",
         "layer 2", "spectral peak (index), layers 1, 2"],
        rows, ["l", "r", "r", "r", "r", "r"],
    )
    lines += ["", (f"Spectra differences are the mean |ΔE(κ)|/E(κ) over wavenumbers 2–20 (2π/L units); "
                   f"the seed-1 row starts from another draw of pyqg's initial PV and saturates ~0.5 year later "
                   f"(its mean includes some growth), an upper bound on the sampling spread. Wall time: hybrida {timings['hybrida']:.0f} s, "
                   f"pyqg-jax {timings['pyqg-jax']:.0f} s (one thread, jit included).")]
    return lines


def da_lines(cycles: int | None, presets: list[str]) -> list[str]:
    """Section 3 (LETKF rows) as Markdown lines; ``presets`` are rerun, the others read from ``DA_ROWS``."""
    cache = json.loads(DA_ROWS.read_text()) if DA_ROWS.exists() else {}
    for preset in presets:
        cache[preset] = da_row(preset, cycles)
        DA_ROWS.write_text(json.dumps(cache, indent=1, ensure_ascii=False))
    rows = [cache[p]["row"] for p in DA_PRESETS if p in cache]
    lines = ["", ("### 3. DA: daily cycles, random PV observations (both layers, 1/8 of the grid points), "
                  "truth from an independent spin-up"), ""]
    lines += md_table(["preset", "grid", "obs / day", "method", "rmse_a", "spread_a", "clim. std",
                       "rmse_a / clim", "cycles scored", "wall (s)", "CPU (s)"], rows,
                      ["l", "l", "r", "l", "r", "r", "r", "r", "r", "r", "r"])
    lines += ["", "Rows run on: " + "; ".join(f"`{p}` {cache[p]['date']} (load {cache[p]['load_end']} at the end)"
                                               for p in DA_PRESETS if p in cache) + "."]
    t1, t2 = letkf_timing(1), letkf_timing(2)
    lines += ["", (f"LETKF analysis at 64×64×2, N=20, p=1024 (fresh network each time, table rebuilt): "
                   f"{t1:.2f} s on 1 thread, {t2:.2f} s on 2 threads (best of 5).")]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=float, default=3.0, help="length of the spun-up comparison runs")
    parser.add_argument("--cycles", type=int, default=None, help="DA cycles (days); default: each preset's")
    parser.add_argument("--da-presets", nargs="*", default=list(DA_PRESETS),
                        help="DA presets to rerun (others: their row from qg_da_rows.json)")
    parser.add_argument("--no-da", action="store_true", help="sections 1-2 only")
    parser.add_argument("--reuse-validation", action="store_true",
                        help=f"take sections 1-2 from {ROWS.name} (written by an earlier run)")
    add_output_args(parser, "qg")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t_all = time.perf_counter()
    if args.reuse_validation:
        validation = json.loads(ROWS.read_text())
    else:
        validation = {"lines": validation_lines(args.years), "provenance": provenance(__file__, "1", argv)}
        ROWS.write_text(json.dumps(validation, indent=1, ensure_ascii=False))
    lines = ["## Two-layer quasi-geostrophic testbed (hybrida vs pyqg-jax)", ""] + validation["lines"]
    lines += ["", "Sections 1–2 made by:"] + validation["provenance"]
    if not args.no_da:
        lines += da_lines(args.cycles, args.da_presets)
        lines += ["", "Section 3 made by:"] + provenance(
            __file__, "1 (analysis timing: 1 and 2)", argv, wall_time=f"{time.perf_counter() - t_all:.0f} s"
        )
    body = "\n".join(lines)
    out = output_path(args)
    if out is not None:
        write_section("qg", body, out)
    sys.stdout.write(body + "\n")


if __name__ == "__main__":
    main()
