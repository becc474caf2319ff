"""DAPPER side of ``dapper_compare.py``: a Python for DAPPER, its venv, and the run in it.

DAPPER is never imported here: ``benchmarks/.dapper-venv`` (git-ignored) gets a
pinned DAPPER from PyPI and ``benchmarks/peers/dapper_side.py`` runs in it as a
subprocess on the cases' ``.npz`` files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from l96_cases import DT, OBS_VAR, Case

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DAPPER_VENV = ROOT / "benchmarks" / ".dapper-venv"
DAPPER_SIDE = HERE / "dapper_side.py"
#: DAPPER releases used (pinned, so that reruns compare with the same DAPPER):
#: the newest for Python >= 3.12, and the last one that installs on Python 3.10/3.11
#: (1.7.2 and later have Requires-Python >= 3.12)
DAPPER_VERSION_PY312 = "1.8.1"
DAPPER_VERSION = "1.7.1"


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)


def _tail(text: str, limit: int = 600) -> str:
    """The last lines of a tool's stderr as one line, pip's location warnings left out."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "is ignored" not in ln]
    return " / ".join(lines)[-limit:]


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _base_python() -> str:
    """This interpreter's base installation (a venv cannot be made from a venv's python)."""
    cand = getattr(sys, "_base_executable", None)
    if cand and Path(cand).exists() and Path(cand).resolve() != Path(sys.executable).resolve():
        return cand
    for name in ("python3", "python"):
        p = Path(sys.base_prefix) / "bin" / name
        if p.exists():
            return str(p)
    return sys.executable


def _python_version(python: str) -> tuple[int, int] | None:
    try:
        r = _run([python, "-c", "import sys; print(*sys.version_info[:2])"], timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    major, minor = r.stdout.split()
    return int(major), int(minor)


def _find_python_312() -> str | None:
    """A Python >= 3.12 on this machine (PATH or pyenv's installed versions), if any."""
    cands = [shutil.which(f"python3.{m}") for m in (12, 13)]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        for d in sorted(pyenv.iterdir()):
            cands.append(str(d / "bin" / "python3"))
    for c in cands:
        if c and Path(c).exists():
            v = _python_version(c)
            if v and (3, 12) <= v < (3, 14):
                return c
    return None


def dapper_candidates(args) -> list[tuple[str, str]]:
    """(python, DAPPER version) pairs to try, best first.

    DAPPER >= 1.7.2 needs Python >= 3.12: with such a Python the newest pinned
    release, else the last one that installs on this Python (3.10/3.11).
    """
    if args.dapper_python:
        v = _python_version(args.dapper_python) or (0, 0)
        default = DAPPER_VERSION_PY312 if v >= (3, 12) else DAPPER_VERSION
        return [(args.dapper_python, args.dapper_version or default)]
    out = []
    py312 = _find_python_312()
    if py312:
        out.append((py312, args.dapper_version or DAPPER_VERSION_PY312))
    base = _base_python()
    if (_python_version(base) or (0, 0)) >= (3, 12):
        out.insert(0, (base, args.dapper_version or DAPPER_VERSION_PY312))
    else:
        out.append((base, args.dapper_version or DAPPER_VERSION))
    return out


def ensure_dapper_venv(version: str, python: str) -> tuple[Path | None, str]:
    """``benchmarks/.dapper-venv`` with DAPPER ``version`` on ``python``; (venv python, note)."""
    py = _venv_python(DAPPER_VENV)
    stamp = DAPPER_VENV / ".dapper-version"
    pyver = _python_version(python)
    want = f"dapper {version} python {pyver[0]}.{pyver[1]}" if pyver else None
    if want is None:
        return None, f"{python} does not run"
    if py.exists() and stamp.exists() and stamp.read_text().strip() == want:
        check = _run([str(py), "-c", "import importlib.metadata as m; print(m.version('dapper'))"])
        if check.returncode == 0 and check.stdout.strip() == version:
            return py, ""
    if DAPPER_VENV.exists() and _python_version(str(py)) != pyver:
        shutil.rmtree(DAPPER_VENV)  # made with another Python: start again
    print(
        f"dapper: installing dapper=={version} into {DAPPER_VENV.relative_to(ROOT)} with "
        f"{python} (Python {pyver[0]}.{pyver[1]}; once, about a minute)",
        flush=True,
    )
    if not py.exists():
        r = _run([python, "-m", "venv", str(DAPPER_VENV)])
        if r.returncode != 0:
            return None, f"could not create the DAPPER venv with {python}: {_tail(r.stderr)}"
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    r = _run([*pip, f"dapper=={version}"])
    if r.returncode != 0:
        return None, (
            f"`pip install dapper=={version}` failed on Python {pyver[0]}.{pyver[1]}: "
            f"{_tail(r.stderr)}"
        )
    stamp.write_text(want + "\n")
    return py, ""


def find_dapper_python(args, log_failures: bool = False) -> tuple[Path | None, str]:
    """The DAPPER venv's python (made on first use) for ``args``; (python, why not).

    Tries :func:`dapper_candidates` in turn; ``log_failures`` prints each
    failed attempt to stderr.
    """
    failures = []
    for python, version in dapper_candidates(args):
        py, why = ensure_dapper_venv(version, python)
        if py is not None:
            return py, ""
        failures.append(why)
        if log_failures:
            print(f"dapper: {why}", file=sys.stderr, flush=True)
    return None, " | ".join(failures) or "no Python found for DAPPER"


def side_env(threads: int) -> dict[str, str]:
    """Environment of a DAPPER-side subprocess: no display, ``threads`` BLAS threads (0: default)."""
    env = dict(os.environ, MPLBACKEND="Agg")
    if threads > 0:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    return env


def run_side(
    py: Path, script: Path, spec: list[dict], tmp: Path, stem: str, threads: int, timeout: float
) -> tuple[dict | None, str]:
    """Run ``script CASES.json RESULTS.json`` with ``py`` on ``spec``; (results, why not).

    The side script writes its results after every case, so a crash or a
    timeout still returns the cases done so far; ``why`` is empty unless no
    results file appeared.
    """
    cases_json, out_json = tmp / f"{stem}_cases.json", tmp / f"{stem}_results.json"
    cases_json.write_text(json.dumps(spec))
    try:
        r = _run(
            [str(py), str(script), str(cases_json), str(out_json)],
            env=side_env(threads),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        r = None
    if not out_json.exists():
        why = "timed out" if r is None else f"exit {r.returncode}: {_tail(r.stderr)}"
        return None, f"the DAPPER run failed ({why})"
    return json.loads(out_json.read_text()), ""


def run_dapper(cases: list[Case], tmp: Path, args) -> tuple[dict | None, str]:
    todo = [c for c in cases if c.dapper]
    if not todo:
        return None, ""
    py, why = find_dapper_python(args, log_failures=True)
    if py is None:
        return None, why
    spec = [
        {
            "name": c.name,
            "npz": c.npz,
            "method": c.method,
            "N": c.N,
            "infl": c.infl,
            "loc_rad": c.loc_rad,
            "dt": DT,
            "obs_var": OBS_VAR,
            "burn_in": c.burn_in,
            "cycles": c.cycles,
            "batch": args.dapper_batch,
            "repeat": c.repeat,
        }
        for c in todo
    ]
    print(f"dapper: running {len(todo)} case(s) in the DAPPER venv", flush=True)
    t0 = time.perf_counter()
    res, why = run_side(py, DAPPER_SIDE, spec, tmp, "dapper", args.threads, args.dapper_timeout)
    if res is None:
        return None, why
    by_name = {c["name"]: c for c in res["cases"]}
    for c in todo:
        c.result["dapper"] = by_name.get(c.name, {"error": "not run (DAPPER side stopped early)"})
    print(
        f"dapper: DAPPER {res['dapper_version']} on Python {res['python']} "
        f"({time.perf_counter() - t0:.1f} s in all)",
        flush=True,
    )
    return res, ""


def section_footer(cases, meta: dict, notes: list[str]) -> list[str]:
    """Closing lines of a hybrida-vs-DAPPER docs section: the meta items, then the notes.

    A case whose ``result[side]`` holds an ``error`` (side "dapper" or "hybrida")
    adds it to ``notes`` first, so a failed run is reported, not hidden.
    """
    for c in cases:
        for side in ("dapper", "hybrida"):
            err = c.result.get(side, {}).get("error")
            if err:
                notes.append(f"{c.name}, {side}: {err}")
    return [f"- {k}: {v}" for k, v in meta.items()] + [f"- **Note:** {n}" for n in notes]
