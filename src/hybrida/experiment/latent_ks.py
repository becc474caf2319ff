"""``hybrida learn latent latent_ks``: latent-space DA on Kuramoto–Sivashinsky (setup of Bocquet et al. 2019).

KS n=128 on a domain of 32π, dt=0.5 (ETDRK4), all points observed every 2 steps with R=I
(hybrida's ``ks/bocquet2019`` preset). POD and a periodic convolutional autoencoder of the
same latent size k (≤ 32) are fitted on a free run; latent ETKF / 3D-Var / bootstrap PF with
each are cycled beside the full-space LETKF, ETKF, 3D-Var and bootstrap PF on the same test
truth and observations (:mod:`hybrida.experiment.latent_pipeline`). Bars (issue 15): the
latent ETKF (autoencoder) within 20% of the LETKF rmse at the same N and ≥5× cheaper per
analysis; latent 3D-Var below full 3D-Var.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hybrida.experiment.latent_pipeline import LatentConfig, LatentProblem, run_latent_pipeline
from hybrida.experiment.learned_analysis import pipeline_config
from hybrida.models.ks import KuramotoSivashinsky
from hybrida.observations.networks import IdentityObs

DESCRIPTION = (
    "Latent-space DA on KS bocquet2019 (n=128, all observed every 2 steps, R=I): POD and a conv autoencoder "
    "(k=32); latent ETKF/3D-Var/PF vs full LETKF/ETKF/3D-Var/PF (bar: latent ETKF <= 1.2x LETKF rmse, >= 5x cheaper)"
)

DEFAULTS: dict[str, Any] = {
    "latent": 32, "members": 16, "particles": 100, "free_run": 8000, "test_cycles": 1000, "burn_in": 200,
    "tune_cycles": 300, "loc_rad": 51 / 1.82, "letkf_infl": [1.02, 1.05], "etkf_infl": [1.05, 1.2, 1.5],
    "xB": [0.1, 0.3], "pf_reg": [0.5, 1.0, 2.0], "init_std": 0.5, "extra_latent": [48],
}
QUICK: dict[str, Any] = {
    **DEFAULTS, "free_run": 3000, "test_cycles": 200, "burn_in": 50, "tune_cycles": 60, "epochs": 20,
    "max_minutes": 1.5, "channels": 8, "letkf_infl": [1.02], "etkf_infl": [1.2, 1.5], "xB": [0.1, 0.3],
    "pf_reg": [1.0], "particles": 50, "var_outer": 2, "var_iter": 20,
}


def make_config(quick: bool, overrides: list[str]) -> LatentConfig:
    """The validated config: the KS defaults (or the quick variant) with ``--set`` overrides applied."""
    base = pipeline_config(LatentConfig, QUICK if quick else DEFAULTS, True, [])
    return pipeline_config(LatentConfig, base.model_dump(), True, overrides)


def bars(table: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """The issue-15 bars on KS, each with its numbers and whether it is met."""
    ref, lat = table["letkf"], table["latent_etkf_ae"]
    out = []
    for key in ("ae", "pod"):
        row = table[f"latent_etkf_{key}"]
        speed = ref["ms_per_analysis"] / max(row["ms_per_analysis"], 1e-12)
        out.append({
            "bar": f"latent ETKF ({key.upper()}) rmse <= 1.2 x LETKF rmse (same N) and >= 5x cheaper per analysis",
            "headline": key == "ae", "threshold": 1.2 * ref["rmse"], "rmse": row["rmse"],
            "ratio": row["rmse"] / ref["rmse"], "speedup": speed,
            "met": bool(row["rmse"] <= 1.2 * ref["rmse"] and speed >= 5.0),
        })
    for key in ("pod", "ae"):
        out.append({
            "bar": f"latent 3D-Var ({key.upper()}) rmse < full 3D-Var rmse", "threshold": table["3dvar"]["rmse"],
            "rmse": table[f"latent_3dvar_{key}"]["rmse"],
            "met": bool(table[f"latent_3dvar_{key}"]["rmse"] < table["3dvar"]["rmse"]),
        })
    out.append({
        "bar": "POD vs AE latent ETKF at equal latent size (reported)", "threshold": table["latent_etkf_pod"]["rmse"],
        "rmse": lat["rmse"], "met": True,
    })
    return out


def problem() -> LatentProblem:
    """KS bocquet2019: model, identity network every 2 steps, and draws on the attractor."""
    model = KuramotoSivashinsky(128, dt=0.5)

    def draw(gen: torch.Generator) -> torch.Tensor:
        x0 = 0.1 * torch.randn(128, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            return model.forecast(x0, 1000)

    return LatentProblem("ks/bocquet2019", model, IdentityObs(128, std=1.0, every=2), draw, "latent_etkf_ae", bars)


def run(
    out: Path,
    *,
    seed: int = 1,
    quick: bool = False,
    overrides: list[str] | None = None,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fit, cycle and compare on KS; writes ``out/summary.json``, ``out/latent.pt`` and plots."""
    cfg = make_config(quick, list(overrides or []))
    return run_latent_pipeline(problem(), cfg, Path(out), seed=seed, quick=quick, resume=resume, progress=progress)
