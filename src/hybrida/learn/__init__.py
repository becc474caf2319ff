"""Learned components: surrogate models, their training and their diagnostics."""

from __future__ import annotations

from hybrida.learn.diagnostics import (
    L96_LEADING_LYAPUNOV,
    SkillCurve,
    TaylorResult,
    TLComparison,
    ValidTime,
    adjoint_test,
    climatological_std,
    forecast_skill,
    free_run,
    leading_lyapunov,
    lyapunov_time,
    power_spectrum,
    spectrum_log_distance,
    taylor_test,
    tl_comparison,
    valid_time,
)
from hybrida.learn.persist import load_surrogate, save_surrogate
from hybrida.learn.surrogate import (
    NETWORKS,
    BrajardCNN,
    ResidualCNN,
    ResidualMLP,
    SurrogateModel,
    register_network,
)
from hybrida.learn.train import FitResult, TrajectoryDataset, fit, rollout_loss, split_trajectory

__all__ = [
    "L96_LEADING_LYAPUNOV",
    "NETWORKS",
    "BrajardCNN",
    "FitResult",
    "ResidualCNN",
    "ResidualMLP",
    "SkillCurve",
    "SurrogateModel",
    "TLComparison",
    "TaylorResult",
    "TrajectoryDataset",
    "ValidTime",
    "adjoint_test",
    "climatological_std",
    "fit",
    "forecast_skill",
    "free_run",
    "leading_lyapunov",
    "load_surrogate",
    "lyapunov_time",
    "power_spectrum",
    "register_network",
    "rollout_loss",
    "save_surrogate",
    "spectrum_log_distance",
    "split_trajectory",
    "taylor_test",
    "tl_comparison",
    "valid_time",
]
