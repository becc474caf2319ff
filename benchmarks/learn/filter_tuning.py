"""Gradient-tuned LETKF inflation and radius against the grid-searched LETKF (issue 13, part 1 oracle).

Run with the project's Python: ``.venv/bin/python benchmarks/learn/filter_tuning.py``.

Sakov & Oke (2008) Lorenz-96 (n=40, F=8, dt 0.05, all observed every step, R = I), LETKF
N=10. Per seed: a twin of ``--train`` training cycles then ``--test`` test cycles; the
:class:`~hybrida.assimilation.ensemble.differentiable.TrainableLETKF` starts far from the
tuned values (infl 1.2, radius 8) and is trained by truncated BPTT (windows of 10 cycles,
Adam, ``--epochs`` passes) on the training cycles, with the truth loss and with the
truth-free next-observation loss; the classical LETKF is grid-searched over inflation ×
radius on the test cycles themselves (an optimistic baseline). Scores: time-mean analysis
rmse on the test cycles after 100 burn-in cycles, all from the same start ensemble.

Written to ``docs/benchmarks.md`` between ``<!-- filter-tuning:start -->`` and ``<!-- filter-tuning:end -->``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import add_output_args, md_table, output_path, provenance, write_section
from hybrida.assimilation.ensemble.differentiable import TrainableLETKF
from hybrida.assimilation.ensemble.letkf import LETKF
from hybrida.experiment.twin import make_twin
from hybrida.learn.filter_tuning import rmse_of, tune_filter
from hybrida.models.lorenz96 import Lorenz96
from hybrida.observations.networks import IdentityObs

SECTION = "filter-tuning"
D = torch.float64
INFLS = (1.0, 1.01, 1.02, 1.03, 1.04, 1.06, 1.1)
RADII = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0)


def run_seed(seed: int, n_train: int, n_test: int, epochs: int, N: int) -> dict:
    model = Lorenz96(n=40)
    g = torch.Generator().manual_seed(seed)
    x0 = model.initial_state() + 0.1 * torch.randn(40, generator=g, dtype=D)
    tw = make_twin(model, IdentityObs(40, std=1.0), x0, n_train + n_test, g)
    start = tw.truth[0] + torch.randn(N, 40, generator=g, dtype=D)
    test_start = tw.truth[n_train] + 0.3 * torch.randn(N, 40, generator=g, dtype=D)
    test = (tw.observations[n_train:], 1, tw.truth[n_train:])

    def score(method) -> float:
        return rmse_of(method, model, test_start, test[0], test[1], test[2], burn_in=100)

    row: dict = {"seed": seed}
    grid = {(i, r): score(LETKF(N=N, loc_rad=r, infl=i)) for i in INFLS for r in RADII}
    (row["grid_infl"], row["grid_rad"]), row["grid"] = min(grid.items(), key=lambda kv: kv[1])
    for loss in ("truth", "observations"):
        f = TrainableLETKF(N=N, loc_rad=8.0, infl=1.2)
        t0 = time.perf_counter()
        tune_filter(f, model, start, tw.observations[:n_train], 1, tw.truth[: n_train + 1],
                    loss=loss, window=10, epochs=epochs, lr=0.1)
        row[f"{loss}_s"] = time.perf_counter() - t0
        row[loss] = score(f)
        row[f"{loss}_infl"], row[f"{loss}_rad"] = float(f.infl.detach()), float(f.loc_rad.detach())
    row["start"] = score(TrainableLETKF(N=N, loc_rad=8.0, infl=1.2))
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--N", type=int, default=10)
    add_output_args(parser, SECTION)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for s in (int(x) for x in args.seeds.split(",")):
        rows.append(run_seed(s, args.train, args.test, args.epochs, args.N))
        print(rows[-1], flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in ("grid", "truth", "observations", "start")}
    table = md_table(
        ["seed", "start (1.2, 8)", "grid-searched LETKF (infl, rad)", "tuned, truth loss (infl, rad)",
         "tuned, next-obs loss (infl, rad)", "truth / grid", "train s (truth, obs)"],
        [
            (r["seed"], f"{r['start']:.4f}", f"{r['grid']:.4f} ({r['grid_infl']}, {r['grid_rad']:g})",
             f"{r['truth']:.4f} ({r['truth_infl']:.3f}, {r['truth_rad']:.2f})",
             f"{r['observations']:.4f} ({r['observations_infl']:.3f}, {r['observations_rad']:.2f})",
             f"{r['truth'] / r['grid']:.3f}", f"{r['truth_s']:.0f}, {r['observations_s']:.0f}")
            for r in rows
        ],
    )
    met = med["truth"] <= 1.02 * med["grid"]
    body = "\n".join([
        "## Gradient-tuned LETKF inflation and radius (issue 13, part 1)",
        "",
        (f"Lorenz-96 sakov2008 (n=40, all observed every step, R = I), LETKF N={args.N}. The trainable LETKF starts "
        f"at inflation 1.2 and radius 8 and is trained by truncated BPTT through {args.train} training cycles "
        f"(windows of 10, Adam lr 0.1, {args.epochs} epochs); the LETKF is grid-searched over inflation "
        f"{INFLS} x radius {RADII} on the test cycles themselves. Time-mean analysis rmse over {args.test} test "
        "cycles after 100 burn-in, same start ensemble for every filter."),
        "",
        *table,
        "",
        (f"Median rmse: start {med['start']:.4f}, grid-searched {med['grid']:.4f}, tuned with the truth "
        f"{med['truth']:.4f} ({med['truth'] / med['grid']:.3f} of the grid; bar ≤ 1.02: {'met' if met else 'NOT met'}), "
        f"tuned on the next observations only {med['observations']:.4f}."),
        "",
        *provenance(__file__, "1 (torch)", argv),
    ])
    print(body)
    if (path := output_path(args)) is not None:
        write_section(SECTION, body, path)


if __name__ == "__main__":
    main()
