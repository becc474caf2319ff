"""Shared plumbing of the scripts that run inside the DAPPER venv (``*_dapper_side.py``, ``dapper_side.py``).

Not imported by hybrida. Each side script is started as
``python SCRIPT.py CASES.json RESULT.json`` and calls :func:`side_main` with its
own ``run_case(mods, case) -> dict``.
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import sys
from collections.abc import Callable
from typing import Any


def import_dapper():
    """Import DAPPER quietly (it prints a liveplotting warning with Agg) with progress bars off."""
    import matplotlib

    matplotlib.use("Agg")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import dapper
        import dapper.da_methods as da
        import dapper.mods as modelling
        import dapper.tools.progressbar as pb
    pb.disable_progbar = True
    pb.disable_user_interaction = True
    return dapper, da, modelling


def side_main(
    argv: list[str], run_case: Callable[[Any, dict], dict], mods: Any, tag: str, extra: dict | None = None
) -> int:
    """Run every case of ``argv[1]`` and write the results to ``argv[2]`` after each case.

    A failing case is recorded with its error and the others still run, so partial
    results survive a crash.
    """
    cases_path, out_path = argv[1], argv[2]
    with open(cases_path) as f:
        cases = json.load(f)
    results = {
        "dapper_version": mods[0].__version__,
        "python": platform.python_version(),
        **(extra or {}),
        "cases": [],
    }
    for case in cases:
        try:
            results["cases"].append(run_case(mods, case))
        except Exception as err:  # noqa: BLE001 - report it, go on with the other cases
            results["cases"].append({"name": case["name"], "error": f"{type(err).__name__}: {err}"})
        with open(out_path, "w") as f:
            json.dump(results, f)
        print(f"{tag}: {case['name']} done", file=sys.stderr, flush=True)
    return 0
