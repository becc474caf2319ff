"""Evaluation of a learned surrogate on a test period: valid times, Lyapunov exponents, spectra, TL/AD.

Valid times compare like with like (issue: a surrogate started from the truth against a true
model started from a perturbed truth flattered the surrogate): the surrogate and the true model
both forecast from the same DA analyses of the test period, the skill a user gets; the
surrogate's forecasts from the truth are an upper bound, labelled as such.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from hybrida.learn import diagnostics as dg
from hybrida.models.base import Model

__all__ = ["cycle_forecast", "diagnose", "valid_times"]


def cycle_forecast(model: Any, x0: torch.Tensor, n_cycles: int, every: int) -> torch.Tensor:
    """States (n_cycles + 1, *x0.shape) of ``model`` run ``every`` steps per cycle."""
    xs = [x0]
    with torch.no_grad():
        for _ in range(n_cycles):
            xs.append(model.forecast(xs[-1], every))
    return torch.stack(xs)


def _finite(v: float) -> float:
    return float(v) if math.isfinite(float(v)) else math.nan


def _skill_from_states(
    model: Model, steps_per_cycle: int, x0: torch.Tensor, truth: torch.Tensor,
    starts: torch.Tensor, lead: int, clim: float, dt_cycle: float,
) -> dg.SkillCurve:
    """Normalised error of ``model`` forecasts from ``x0`` (S, n) against truth rows starts + k."""
    fc = cycle_forecast(model, x0, lead, steps_per_cycle)
    ref = truth[starts.unsqueeze(0) + torch.arange(lead + 1).unsqueeze(-1)]
    nr = ((fc - ref) ** 2).mean(-1).sqrt().T / clim
    times = torch.arange(lead + 1, dtype=torch.float64) * dt_cycle
    return dg.SkillCurve(times, nr.mean(0), nr, clim)


def valid_times(ev, surrogate, tw, analyses, clim, lam_ref, art) -> dict[str, Any]:
    """Valid times like for like: both models forecast from the same DA analyses of the test period.

    The analyses are those of the DA with the true model (the best state estimate a user has);
    forecasts start after the DA's burn-in. The surrogate's forecasts from the truth itself
    are an upper bound, reported and plotted separately.
    """
    test_truth, dt_cycle = tw.test_truth, tw.dt_cycle
    L = round(ev.lead / dt_cycle)
    first = min(ev.burn_in_cycles, test_truth.shape[0] - L - 1)
    S = min(ev.n_starts, test_truth.shape[0] - L - first)
    starts = torch.linspace(first, test_truth.shape[0] - L - 1, S).round().long()
    x0 = analyses[starts].to(test_truth.dtype)
    curves = {
        "from_analyses": _skill_from_states(surrogate, 1, x0, test_truth, starts, L, clim, dt_cycle),
        "model_from_analyses": _skill_from_states(
            tw.model, tw.every, x0, test_truth, starts, L, clim, dt_cycle
        ),
        "from_truth": _skill_from_states(
            surrogate, 1, test_truth[starts], test_truth, starts, L, clim, dt_cycle
        ),
    }
    art |= {"skill": curves["from_analyses"], "skill_reference": curves["model_from_analyses"],
            "skill_upper": curves["from_truth"]}
    # persistence (the analysis held fixed): the baseline any forecast must beat
    ref = test_truth[starts.unsqueeze(0) + torch.arange(L + 1).unsqueeze(-1)]
    persistence = ((x0.unsqueeze(0) - ref) ** 2).mean(-1).sqrt().mean(-1) / clim
    persistence_truth = ((ref[:1] - ref) ** 2).mean(-1).sqrt().mean(-1) / clim
    out: dict[str, Any] = {
        "threshold": ev.threshold,
        "lead": L * dt_cycle,
        # normalised forecast error after one cycle from the same analyses
        "skill_cycle1_surrogate": float(curves["from_analyses"].nrmse[1]),
        "skill_cycle1_model": float(curves["model_from_analyses"].nrmse[1]),
        "skill_cycle1_persistence": float(persistence[1]),
        # the same from the true states: the emulator's own one-cycle error
        "skill_cycle1_from_truth": float(curves["from_truth"].nrmse[1]),
        "skill_cycle1_persistence_from_truth": float(persistence_truth[1]),
        "skill_lead_persistence": float(persistence[-1]),
        "skill_lead_surrogate": float(curves["from_analyses"].nrmse[-1]),
        "skill_lead_model": float(curves["model_from_analyses"].nrmse[-1]),
    }
    for key, prefix in (("from_analyses", "valid_time"), ("model_from_analyses", "valid_time_model"),
                        ("from_truth", "valid_time_from_truth")):
        vt = dg.valid_time(curves[key], ev.threshold, lam_ref)
        out[prefix] = vt.time
        out[f"{prefix}_lyapunov"] = vt.lyapunov_times
        out[f"{prefix}_median"] = float(vt.time_starts.median())
    return out


def diagnose(ev, surrogate, tw, analyses, art) -> dict[str, Any]:
    """Valid times, Lyapunov exponents, spectra and TL/adjoint checks of the surrogate on test states."""
    model, every, test_truth = tw.model, tw.every, tw.test_truth
    clim = dg.climatological_std(tw.truth)
    # a few test states, spread as the forecast starts of earlier versions (same numbers)
    L = round(ev.lead / tw.dt_cycle)
    S = min(ev.n_starts, test_truth.shape[0] - L - 1)
    starts = torch.linspace(0, test_truth.shape[0] - L - 1, S).round().long()
    x_lyap = test_truth[starts[: ev.lyapunov_starts]]
    # the physical model is cheap: a 4x longer run gives a steadier Lyapunov-time unit
    lam_true = dg.leading_lyapunov(
        model,
        x_lyap,
        n_steps=4 * ev.lyapunov_steps * every,
        transient=ev.lyapunov_transient * every,
    )
    try:
        lam_sur = dg.leading_lyapunov(
            surrogate, x_lyap, n_steps=ev.lyapunov_steps, transient=ev.lyapunov_transient
        )
    except (RuntimeError, ValueError):  # a blown-up free run
        lam_sur = math.nan
    lam_ref = lam_true if math.isfinite(lam_true) and lam_true > 0 else None
    out: dict[str, Any] = {
        "clim_std": clim,
        "lyapunov_surrogate": _finite(lam_sur),
        "lyapunov_truth": lam_true,
    }
    out |= valid_times(ev, surrogate, tw, analyses, clim, lam_ref, art)
    art["lyapunov"] = lam_ref
    # spectra of long free runs from a few test states
    T = ev.free_run_cycles or test_truth.shape[0] - 1
    x0 = test_truth[starts[: min(4, S)]]
    free = dg.free_run(surrogate, x0, T)
    finite = bool(torch.isfinite(free).all())
    # a layered 2-D model (QG) gets its isotropic spectrum; a 1-D one the spectrum along its ring
    grid = (model.nz, model.ny, model.nx) if all(hasattr(model, a) for a in ("nz", "ny", "nx")) else None
    spec_truth = dg.power_spectrum(test_truth, grid)
    spec_sur = dg.power_spectrum(free, grid) if finite else torch.full_like(spec_truth, math.nan)
    out |= {
        "free_run_finite": finite,
        "spectrum_log_distance": dg.spectrum_log_distance(spec_sur, spec_truth)
        if finite
        else math.nan,
    }
    art |= {"spectrum_truth": spec_truth, "spectrum_surrogate": spec_sur}
    x = test_truth[0].to(torch.float64)
    out["taylor_slope"] = dg.taylor_test(surrogate, x).slope
    out["adjoint_error"] = dg.adjoint_test(surrogate, x)
    if every == 1:
        tl = dg.tl_comparison(surrogate, model, x, n_steps=1, k=1)
        out["tl_rel_frobenius"] = tl.rel_frobenius
        out["tl_angle_leading"] = float(tl.angle_initial[0])
    return out
