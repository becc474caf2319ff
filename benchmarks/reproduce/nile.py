"""The Nile oracle: local-level variances by maximum innovation likelihood, hybrida vs statsmodels vs Durbin & Koopman.

The annual Nile flow 1871–1970 (shipped with statsmodels) is written as a
hybrida observation file and read back; hybrida's EKF over the local-level
model (random walk + noise) gives the innovation log-likelihood, and
:func:`hybrida.learn.variance_mle.fit_local_level` maximises it over
(σ²_ε, σ²_η) with its own Nelder–Mead. Two starts: statsmodels' approximate
diffuse one (κ = 10⁶, first innovation left out) and, as κ = 10¹⁰, the exact
diffuse one of Durbin & Koopman (2012). statsmodels' ``UnobservedComponents``
is fitted with its defaults and run to convergence. Writes the "nile"
section of docs/benchmarks.md.

    .venv/bin/python benchmarks/reproduce/nile.py      # about 30 s on 2 busy cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from hybrida.datasets.nile import load_nile, write_nile_observations
from hybrida.io.obsfile import load_observations
from hybrida.learn.variance_mle import fit_local_level, local_level_loglik

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.common import add_output_args, md_table, output_path, provenance, write_section

#: Durbin & Koopman (2012), ch. 2, sec. 2.10 (exact diffuse initialisation)
DURBIN_KOOPMAN = (15099.0, 1469.1)


def statsmodels_fits() -> dict[str, tuple[float, float, float, float]]:
    """(σ²_ε, σ²_η, llf, seconds) of statsmodels' fits: default, converged, exact diffuse converged."""
    import statsmodels.api as sm
    from statsmodels.tsa.statespace.initialization import Initialization

    _, y = load_nile()
    out = {}
    tight = {"method": "nm", "maxiter": 4000, "xtol": 1e-10, "ftol": 1e-12}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, exact, kwargs in [
            ("statsmodels 0.15 `fit()` defaults (L-BFGS)", False, {}),
            ("statsmodels, Nelder–Mead to convergence", False, tight),
            ("statsmodels exact diffuse, Nelder–Mead to convergence", True, tight),
        ]:
            model = sm.tsa.UnobservedComponents(y, "local level")
            if exact:
                model.ssm.initialization = Initialization(1, "diffuse")
            t0 = time.perf_counter()
            res = model.fit(disp=False, **kwargs)
            out[name] = (float(res.params[0]), float(res.params[1]), float(res.llf), time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    add_output_args(ap, "nile")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import statsmodels

    with tempfile.TemporaryDirectory() as tmp:
        path = write_nile_observations(Path(tmp) / "nile.nc")
        obs = load_observations(path, n_state=1)
    sm_fits = statsmodels_fits()
    sm_default = next(iter(sm_fits.values()))
    hy = {}
    for name, kappa in [("hybrida EKF, κ = 10⁶ (statsmodels' start)", 1e6),
                        ("hybrida EKF, κ = 10¹⁰ (≈ exact diffuse)", 1e10)]:
        t0 = time.perf_counter()
        fit = fit_local_level(obs, diffuse_variance=kappa)
        hy[name] = (fit.obs_variance, fit.level_variance, fit.loglik, time.perf_counter() - t0, fit.n_evaluations)
    t0 = time.perf_counter()
    llf_at_sm = local_level_loglik(obs, sm_default[0], sm_default[1])
    eval_s = time.perf_counter() - t0

    def pct(v: float, ref: float) -> str:
        return f"{100 * (v / ref - 1):+.2f} %"

    ref = sm_default  # issue 18's target: statsmodels' default fit (15078, 1479)
    rows = []
    for name, (eps, eta, llf, sec, *evals) in [*hy.items(), *sm_fits.items()]:
        rows.append([name, f"{eps:.1f}", f"{eta:.2f}", pct(eps, ref[0]), pct(eta, ref[1]), f"{llf:.6f}",
                     f"{evals[0]}" if evals else "", f"{sec:.2f}"])
    rows.append(["Durbin & Koopman (2012), ch. 2 (exact diffuse)", f"{DURBIN_KOOPMAN[0]:.0f}",
                 f"{DURBIN_KOOPMAN[1]:.1f}", pct(DURBIN_KOOPMAN[0], ref[0]), pct(DURBIN_KOOPMAN[1], ref[1]),
                 "", "", ""])
    header = ["estimate", "σ²_ε", "σ²_η", "σ²_ε vs sm default", "σ²_η vs sm default", "log L", "filter runs",
              "time (s)"]
    sm_conv = sm_fits["statsmodels, Nelder–Mead to convergence"]
    best = hy["hybrida EKF, κ = 10⁶ (statsmodels' start)"]
    halving = best[2] - local_level_loglik(obs, best[0], best[1] / 2)
    intro = (
        "Annual Nile flow at Aswan 1871–1970 (statsmodels' `datasets/nile`, 10⁸ m³), written with "
        "`hybrida.datasets.nile.write_nile_observations` and read back. Local level y = α + ε, "
        "α_{k+1} = α_k + η: `LocalLevel` model, EKF with Q = σ²_η and R = σ²_ε; log L = −½ Σ_k "
        "[log 2π F_k + v_k²/F_k] over the innovations v = O−B, F = HP_fHᵀ + R, the first left out; "
        "maximised over the log-variances by `hybrida.learn.variance_mle.fit_local_level` "
        "(Nelder–Mead from moment estimates, tolerance 10⁻⁶ in log-variance). κ is the prior variance "
        "of the first observed level. Issue 18's target is statsmodels' default output "
        f"({ref[0]:.2f}, {ref[1]:.2f}; within 1 %), the reference of the percentages. hybrida's log L at "
        f"statsmodels' default estimates: {llf_at_sm:.10f} vs statsmodels' llf {sm_default[2]:.10f} "
        f"(one filter run, {eval_s * 1000:.0f} ms)."
    )
    reading = (
        "With statsmodels' start hybrida finds statsmodels' own optimum once statsmodels is run to "
        f"convergence; statsmodels' default L-BFGS stops where σ²_η is {pct(ref[1], sm_conv[1])} off it, "
        f"at a log L {sm_conv[2] - ref[2]:.1e} lower. The exact diffuse start gives Durbin & Koopman's "
        "values, within 1 % of issue 18's numbers. The likelihood is flat in σ²_η: halving it costs "
        f"{halving:.2f} in log L."
    )
    body = "\n".join(
        [
            "## The Nile oracle: local-level variances by maximum innovation likelihood",
            "",
            intro,
            "",
            *md_table(header, rows, ["l"] + ["r"] * 7),
            "",
            reading,
            "",
            *provenance(__file__, f"{args.threads} (torch)", argv, statsmodels=statsmodels.__version__),
        ]
    )
    path = output_path(args)
    if path is not None:
        write_section("nile", body, path)
    print(body)


if __name__ == "__main__":
    main()
