"""LETKF and QG on a GPU: seconds per cycle of the LETKF at n = 10^7 (float32) and of the QG LETKF twin.

Run with the project's Python: ``.venv/bin/python benchmarks/scaling/gpu_letkf.py``.

Without a usable device (``--device``, default ``cuda``) it prints why and exits 0,
leaving ``docs/benchmarks.md`` alone. ``--device cpu`` runs the same code on the CPU for a
smoke test (use ``--quick``); only a CUDA run writes the docs section (between
``<!-- gpu-letkf:start -->`` and ``<!-- gpu-letkf:end -->``).

LETKF rows: Lorenz-96 as in ``benchmarks/scaling/letkf_scaling.py`` (F = 8, dt = 0.05, one
RK4 step per cycle, every point observed, R = I, Gaspari-Cohn loc_rad = 4, infl = 1.02,
N = 20), warm start (a spun-up n = 4000 state tiled and perturbed, ensemble spread 0.3).
Every random number is drawn on the CPU with a seeded generator and moved, as the library
does. The first cycle (CUDA start-up, localisation tables) is reported apart; the steady
cycle is the best of the later ones, timed with ``torch.cuda.synchronize()``. QG rows: the
``qg/letkf64`` preset (``--qg-presets``: also ``qg/letkf128``) runs through ``run_experiment`` with
``device=cuda`` (truth, observations, ensemble and LETKF on the GPU; the model's spin-up
for its initial state runs on the CPU, inside the build time); with ``--cpu-reference``
the 64x64 twin also runs on the CPU and the table gives the largest difference of the
analysis means.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import add_output_args, md_table, output_path, provenance, write_section
from hybrida.assimilation.ensemble import LETKF
from hybrida.device import check_available, parse_device
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError

LOC_RAD, INFL, N_MEMBERS = 4.0, 1.02, 20
SECTION = "gpu-letkf"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _now(device: torch.device) -> float:
    _sync(device)
    return time.perf_counter()


def letkf_case(n: int, dtype: torch.dtype, device: torch.device, cycles: int, interp_every: int, seed: int = 0) -> dict:
    """Seconds per forecast / analysis / cycle of an n-variable L96 LETKF on ``device``; rmse after the last cycle."""
    g = torch.Generator().manual_seed(seed)
    base = Lorenz96(4000).initial_state()
    x = base.repeat(-(-n // 4000))[:n] + 0.01 * torch.randn(n, generator=g, dtype=torch.float64)
    E = (x + 0.3 * torch.randn(N_MEMBERS, n, generator=g, dtype=torch.float64)).to(dtype).to(device)
    x = x.to(dtype).to(device)
    model = Lorenz96(n)
    method = LETKF(N_MEMBERS, loc_rad=LOC_RAD, infl=INFL, interp_every=interp_every)
    error = DiagonalError(torch.ones(n, dtype=dtype, device=device))
    locations = torch.arange(n, dtype=torch.float64, device=device).to(dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with torch.no_grad():
        for _ in range(cycles):
            x = model.step(x)
            y = x + torch.randn(n, generator=g, dtype=torch.float64).to(dtype).to(device)
            obs = Observation(y=y, operator=lambda z: z, error=error, locations=locations)
            t0 = _now(device)
            E = model.step(E)
            t1 = _now(device)
            E = method.analyse(E, obs)
            t2 = _now(device)
            times.append((t1 - t0, t2 - t1))
    later = times[1:] or times
    best = min(later, key=lambda ft: ft[0] + ft[1])
    return {
        "first_s": sum(times[0]),
        "s_forecast": best[0],
        "s_analysis": best[1],
        "s_cycle": best[0] + best[1],
        "rmse": float((E.mean(0) - x).double().pow(2).mean().sqrt()),
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan,
    }


def qg_case(preset: str, device: str, cycles: int, dtype: str) -> tuple[dict, torch.Tensor]:
    """Summary of ``preset`` run for ``cycles`` cycles on ``device`` and its analysis means ``(K, n)`` (on the CPU)."""
    from hybrida.experiment.config import load_config
    from hybrida.experiment.runner import run_experiment

    cfg = load_config(preset, [f"cycles={cycles}", "burn_in=0", f"device={device}", f"dtype={dtype}"])
    t0 = time.perf_counter()
    res = run_experiment(cfg, progress=False)
    total = time.perf_counter() - t0
    s = res.summary
    means = torch.stack([r.posterior_mean.detach().cpu() for r in res.records])
    return {"s_cycle": s["wall_s"] / max(s["n_cycles"], 1), "build_s": s["build_s"], "total_s": total,
            "rmse_a": s["rmse_a"], "rmse_last": res.records[-1].rmse_a if res.records else math.nan}, means


def _g(v: float) -> str:
    return "—" if isinstance(v, float) and math.isnan(v) else f"{v:.3g}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:K, or cpu for a smoke test (never written)")
    ap.add_argument("--quick", action="store_true", help="n = 10^5 and 3 QG cycles of qg/letkf64 only")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="LETKF state sizes (default 10^6 and 10^7)")
    ap.add_argument("--cycles", type=int, default=4, help="LETKF cycles per case (the first is reported apart)")
    ap.add_argument("--qg-cycles", type=int, default=None, help="cycles of each QG twin (default 20, --quick 3; 0: none)")
    ap.add_argument("--qg-presets", nargs="+", default=["qg/letkf64"],
                    help="QG presets to run (qg/letkf128's CPU spin-up of two 128x128 models takes minutes)")
    ap.add_argument("--cpu-reference", action="store_true", help="also run qg/letkf64 on the CPU and compare")
    add_output_args(ap, SECTION)
    args = ap.parse_args()
    try:
        parse_device(args.device)
    except ValueError as err:  # a typo is a usage error
        print(f"gpu_letkf: {err}", file=sys.stderr)
        return 2
    try:
        device = torch.device(check_available(args.device))
    except ValueError as err:  # no GPU here: nothing to measure, and that is not a failure
        print(f"gpu_letkf: {err}; nothing run, no docs written")
        return 0
    if device.type == "cpu":  # a smoke test on a shared machine
        torch.set_num_threads(1)
    sizes = args.sizes or ([10**5] if args.quick else [10**6, 10**7])
    cases = [(n, torch.float32, 1) for n in sizes]
    if not args.quick:
        cases += [(sizes[-1], torch.float32, 8), (sizes[0], torch.float64, 1)]
    rows = []
    for n, dtype, k in cases:
        try:
            r = letkf_case(n, dtype, device, args.cycles, k)
            rows.append([f"{n:,}", N_MEMBERS, str(dtype)[6:], k, _g(r["first_s"]), _g(r["s_forecast"]),
                         _g(r["s_analysis"]), _g(r["s_cycle"]), _g(r["rmse"]), _g(r["peak_gib"])])
        except (RuntimeError, MemoryError) as exc:  # e.g. out of GPU memory: keep the other rows
            rows.append([f"{n:,}", N_MEMBERS, str(dtype)[6:], k, f"error: {type(exc).__name__}", "", "", "", "", ""])
        print(" | ".join(map(str, rows[-1])), flush=True)
    letkf_table = md_table(
        ["n", "N", "dtype", "interp_every", "first cycle s", "s/forecast", "s/analysis", "s/cycle", "rmse_a (last)",
         "peak GiB"], rows,
    )
    qg_rows, qg_note = [], ""
    presets = ["qg/letkf64"] if args.quick else args.qg_presets
    cycles = args.qg_cycles if args.qg_cycles is not None else (3 if args.quick else 20)
    for preset in presets if cycles > 0 else []:
        s, means = qg_case(preset, str(device), cycles, "float64")
        qg_rows.append([preset, str(device), cycles, _g(s["build_s"]), _g(s["s_cycle"]), _g(s["rmse_a"]),
                        _g(s["rmse_last"])])
        print(" | ".join(map(str, qg_rows[-1])), flush=True)
        if args.cpu_reference and preset == "qg/letkf64" and device.type != "cpu":
            c, ref = qg_case(preset, "cpu", cycles, "float64")
            diff = float((means - ref).abs().max() / ref.abs().max())
            qg_rows.append([preset, "cpu", cycles, _g(c["build_s"]), _g(c["s_cycle"]), _g(c["rmse_a"]),
                            _g(c["rmse_last"])])
            qg_note = (f"Largest difference of the {cycles} analysis means, GPU vs CPU (float64), relative to the "
                       f"largest |mean|: {diff:.1e}.\n\n")
    qg_table = md_table(["preset", "device", "cycles", "build s", "s/cycle", "rmse_a (mean)", "rmse_a (last)"], qg_rows)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    body = (
        "## LETKF and QG on a GPU\n\n"
        f"Device: {name}. Lorenz-96 LETKF, all points observed, R = I, loc_rad = 4 (Gaspari-Cohn), "
        f"infl = 1.02, N = {N_MEMBERS}, warm start; `first cycle` includes CUDA start-up and the "
        "localisation tables, the other times are the best later cycle "
        f"(of {args.cycles}). QG: the presets through `run_experiment` with `device={device}`, burn_in 0 (the mean "
        "rmse_a includes the spin-up from the reference state; build s includes the CPU spin-up of the model's "
        "initial state).\n\n"
        + "\n".join(letkf_table) + "\n\n"
        + ("\n".join(qg_table) + "\n\n" if qg_rows else "")
        + qg_note
        + "\n".join(provenance(__file__, f"torch {torch.get_num_threads()} CPU thread(s)"))
    )
    print(body)
    out = output_path(args)
    if out and device.type == "cuda":
        write_section(SECTION, body, out)
    elif out:
        print(f"gpu_letkf: a {device.type} run is a smoke test; {out} left alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
