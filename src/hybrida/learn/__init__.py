"""How to train learned parts, and how to judge them.

Datasets and the rollout loss (:mod:`~hybrida.learn.train`), offline correction fitting
(:mod:`~hybrida.learn.correction`), online learning by state augmentation
(:mod:`~hybrida.learn.online`), persistence (:mod:`~hybrida.learn.persist`), and TL/adjoint and
forecast diagnostics (:mod:`~hybrida.learn.diagnostics`). The learned parts themselves live in the
slot they fill: networks in :mod:`hybrida.nn`, surrogate and corrected models in
:mod:`hybrida.models`. End-to-end pipelines (reanalysis, the DA–ML loop) are experiments:
:mod:`hybrida.experiment`. This package never imports :mod:`hybrida.experiment`.
"""

from __future__ import annotations

from hybrida.learn.aivar import fit_aivar
from hybrida.learn.amortised import fit_amortised
from hybrida.learn.bias import BiasCorrected, BiasFit, bias_departures, fit_bias_model
from hybrida.learn.cnn_analysis import fit_cnn_analysis, fit_online
from hybrida.learn.cnn_unroll import cycle_weights, fit_unrolled
from hybrida.learn.correction import correction_targets, fit_correction
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
from hybrida.learn.filter_tuning import TuningResult, tune_filter
from hybrida.learn.fourdvarnet import fit_fourdvarnet
from hybrida.learn.latent import (
    encoded_climatology,
    fit_autoencoder,
    fit_latent_surrogate,
    fit_pod,
    reconstruction_rmse,
)
from hybrida.learn.obs_operator import collocated_pairs, fit_obs_operator
from hybrida.learn.persist import load_surrogate, save_surrogate
from hybrida.learn.qc import DetectorFit, fit_gross_error_detector, gross_error_examples
from hybrida.learn.train import FitResult, TrajectoryDataset, fit, rollout_loss, split_trajectory

__all__ = [
    "L96_LEADING_LYAPUNOV",
    "BiasCorrected",
    "BiasFit",
    "DetectorFit",
    "FitResult",
    "SkillCurve",
    "TLComparison",
    "TaylorResult",
    "TrajectoryDataset",
    "TuningResult",
    "ValidTime",
    "adjoint_test",
    "bias_departures",
    "climatological_std",
    "collocated_pairs",
    "correction_targets",
    "cycle_weights",
    "encoded_climatology",
    "fit",
    "fit_aivar",
    "fit_amortised",
    "fit_autoencoder",
    "fit_bias_model",
    "fit_cnn_analysis",
    "fit_correction",
    "fit_fourdvarnet",
    "fit_gross_error_detector",
    "fit_latent_surrogate",
    "fit_obs_operator",
    "fit_online",
    "fit_pod",
    "fit_unrolled",
    "forecast_skill",
    "free_run",
    "gross_error_examples",
    "leading_lyapunov",
    "load_surrogate",
    "lyapunov_time",
    "power_spectrum",
    "reconstruction_rmse",
    "rollout_loss",
    "save_surrogate",
    "spectrum_log_distance",
    "split_trajectory",
    "taylor_test",
    "tl_comparison",
    "tune_filter",
    "valid_time",
]
