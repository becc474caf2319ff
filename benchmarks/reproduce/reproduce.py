"""Full-length reproduction of the published RMSE tables, medians over seeds, on Dask.

    .venv/bin/python benchmarks/reproduce/reproduce.py [--seeds 1 2 3] [--workers 2] [--only lorenz96 ks] [--section NAME]

Runs every row of ``hybrida.experiment.references.ROWS`` at the preset's full
length for each seed, takes the median rmse_a, checks it against the
published value (+-0.02, or 5% above 0.5) and writes the table to
``docs/benchmarks.md`` (section "reproduction").
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import command, machine, write_section
from hybrida.experiment.references import ROWS
from hybrida.experiment.sweep import run_point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--only", nargs="*", default=[], help="run the rows whose label contains any of these substrings"
    )
    parser.add_argument(
        "--section", default=None, help="write the table to this section of docs/benchmarks.md (default: "
        "'reproduction' for a full run of every row, none otherwise)"
    )
    parser.add_argument("--cycles", type=int, default=None, help="override every preset's length")
    parser.add_argument("--title", default=None, help="heading of the written section")
    parser.add_argument("--json", type=Path, default=None, help="also write the per-seed summaries here")
    args = parser.parse_args(argv)

    from dask.distributed import Client, LocalCluster

    rows = [r for r in ROWS if not args.only or any(o in r.label for o in args.only)]
    seeds = {r.label: r.seed_list(args.seeds) for r in rows}  # some rows need more seeds
    jobs = [(r, s) for r in rows for s in seeds[r.label]]
    t0 = time.perf_counter()
    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        futures = [
            client.submit(
                run_point,
                r.config(seed=s, cycles=args.cycles).model_dump(mode="json"),
                None,
                pure=False,
            )
            for r, s in jobs
        ]
        summaries = client.gather(futures)
    wall = time.perf_counter() - t0

    lines = [
        "## " + (args.title or "Reproduction of published analysis RMSE"),
        "",
        (
            f"Command: `{command(__file__, argv)}`; {datetime.date.today().isoformat()}; {machine()}; "
            f"{args.workers} Dask worker processes with one torch thread each; {wall:.0f} s in all."
        ),
        "",
        (
            "Median over seeds (more than given for rows that ask for them) of the time-mean rmse_a "
            "after burn-in, full preset length; "
            "bar: +-0.02, or +-5% above 0.5 (REFERENCES.md). 'lost %': per seed, the share of "
            "cycles whose analysis error exceeds 4x the ensemble spread (the filter lost track)."
        ),
        "",
        "| experiment | published | hybrida (median) | per seed | within bar | lost % | s/run |",
        "|---|---|---|---|---|---|---|",
    ]
    n_ok = 0
    done = 0
    for r in rows:
        mine = summaries[done : done + len(seeds[r.label])]
        done += len(mine)
        vals = [m.get("rmse_a", float("nan")) for m in mine]
        med = statistics.median(vals)
        ok = abs(med - r.rmse_a) <= r.tolerance()
        n_ok += ok
        secs = statistics.median(m.get("wall_s", float("nan")) for m in mine)
        per_seed = ", ".join(f"{v:.3f}" for v in vals)
        lost = [m.get("lost_fraction", float("nan")) for m in mine]
        lost_txt = (
            "-" if all(math.isnan(v) for v in lost) else ", ".join(f"{100 * v:.0f}" for v in lost)
        )
        verdict = "yes" if ok else "**no**"
        lines.append(
            f"| {r.label} | {r.rmse_a} | {med:.3f} | {per_seed} | {verdict} | {lost_txt} | {secs:.1f} |"
        )
    lines += ["", f"{n_ok} of {len(rows)} rows within the bar."]
    if args.json:
        per_row, done = {}, 0
        for r in rows:
            per_row[r.label] = {"published": r.rmse_a, "seeds": seeds[r.label],
                                "runs": summaries[done : done + len(seeds[r.label])]}
            done += len(seeds[r.label])
        args.json.write_text(json.dumps(per_row, indent=1, default=str))
    text = "\n".join(lines)
    print(text)
    section = args.section or ("reproduction" if not args.only and args.cycles is None else None)
    if section:
        write_section(section, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
