"""Settings of the CNN-analysis pipeline (``hybrida learn analysis cnn_analysis``) and their checks."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from hybrida.experiment.config import ConfigError, _Strict
from hybrida.experiment.learned_analysis import pipeline_config

#: the bars of issue 12 (test rmse_a): trained on the truth, on the reanalysis; and those of --quick
BARS = {"truth": 0.25, "reanalysis": 0.30}
QUICK_BARS = {"truth": 0.40, "reanalysis": 0.45}
VARIANTS = ("truth", "reanalysis")


class CNNAnalysisConfig(_Strict):
    """Everything the CNN-analysis pipeline does; every field has a default (the headline run)."""

    obs_std: float = Field(1.0, gt=0, description="observation-error std (every variable observed each step)")
    spinup: int = Field(500, ge=0, description="cycles of the nature run dropped before the training stretch")
    train_cycles: int = Field(6000, ge=100, description="cycles of the training stretch")
    valid_cycles: int = Field(1000, ge=50, description="cycles of the validation stretch (early stopping, selection)")
    test_cycles: int = Field(2000, ge=50, description="cycles of the test stretch")
    gap: int = Field(100, ge=0, description="cycles between the stretches")
    burn_in: int = Field(100, ge=0, description="cycles of each stretch left out (DA spin-up), and of the test score")
    test_initial_std: float = Field(0.5, gt=0, description="std of the initial error of every cycled test method")
    segment: int = Field(50, ge=5, description="cycles per training segment cycled by the network")
    valid_segment: int = Field(100, ge=10, description="cycles per validation segment")
    channels: int = Field(32, ge=1, description="CNN channels")
    blocks: int = Field(3, ge=0, description="residual blocks (two convolutions each)")
    kernel: int = Field(5, ge=1, description="odd convolution width")
    radius: int = Field(2, ge=0, description="half-width of the learned local gain")
    rounds: int = Field(3, ge=0, description="online rounds (cycle the network, refit)")
    epochs: int = Field(8, ge=1, description="epochs of the first (offline) fit")
    epochs_online: int = Field(5, ge=1, description="epochs of each online refit")
    max_pairs: int = Field(18000, ge=100, description="training pairs kept (newest)")
    batch_size: int = Field(256, ge=1, description="minibatch size")
    lr: float = Field(2e-3, ge=0, description="Adam learning rate of the first fit (cosine decay within each fit)")
    lr_online: float = Field(5e-4, ge=0, description="Adam learning rate of the online refits")
    patience: int = Field(4, ge=1, description="epochs without validation improvement before a fit stops")
    unroll_epochs: int = Field(4, ge=0, description="epochs of the final fine-tuning through the cycle (0: none)")
    unroll_window: list[int] = Field(
        default_factory=lambda: [20], description="cycles unrolled per training window; a list is a curriculum (epoch e: "
        "entry min(e, len-1))"
    )
    unroll_segment: int = Field(100, ge=5, description="cycles per training segment of the fine-tuning")
    unroll_lr: float = Field(3e-4, ge=0, description="Adam learning rate of the unrolled fine-tuning (start)")
    unroll_lr_min: float = Field(3e-5, ge=0, description="its final learning rate (cosine decay over unroll_epochs)")
    unroll_late: float = Field(1.0, gt=0, description="loss weight of a window's last cycle relative to its first")
    unroll_truncate: int = Field(0, ge=0, description="truncated backpropagation every so many cycles (0: none)")
    unroll_steps: int = Field(50, ge=1, description="Adam steps per unrolled epoch")
    unroll_batch: int = Field(64, ge=1, description="windows per unrolled training step")
    unroll_patience: int = Field(3, ge=1, description="unrolled epochs without cycled-validation gain before stopping")
    unroll_variants: list[str] = Field(
        default_factory=lambda: ["truth"], description="variants fine-tuned through the cycle"
    )
    etkf_N: int = Field(28, ge=2, description="ETKF members (reanalysis and baseline)")
    etkf_infl: float = Field(1.02, ge=1, description="ETKF multiplicative inflation")
    xB: float = Field(0.02, gt=0, description="3D-Var background scaling of the climatological B")
    clim_steps: int = Field(20000, ge=100, description="model steps of the free run giving 3D-Var's climatological B")
    variants: list[str] = Field(default_factory=lambda: list(VARIANTS), description="variants to train: truth, reanalysis")
    threads: int = Field(1, ge=1, description="torch threads")


QUICK: dict[str, Any] = {
    "train_cycles": 2000, "valid_cycles": 400, "test_cycles": 600, "spinup": 200, "rounds": 2, "epochs": 6,
    "epochs_online": 4, "max_pairs": 6000, "valid_segment": 50, "channels": 24, "clim_steps": 5000,
    "unroll_epochs": 3, "unroll_steps": 30,
}


def make_config(quick: bool, overrides: list[str]) -> CNNAnalysisConfig:
    """The (quick) config with ``--set`` overrides applied, or a ConfigError naming the field."""
    cfg = pipeline_config(CNNAnalysisConfig, QUICK, quick, overrides)
    bad = sorted(set(cfg.variants) - set(VARIANTS))
    if bad or not cfg.variants:
        raise ConfigError(f"variants: {bad or '[]'} not allowed; choose among {list(VARIANTS)}")
    bad_u = sorted(set(cfg.unroll_variants) - set(VARIANTS))
    if bad_u:
        raise ConfigError(f"unroll_variants: {bad_u} not allowed; choose among {list(VARIANTS)}")
    if not cfg.unroll_window or any(not 1 <= w < cfg.unroll_segment for w in cfg.unroll_window):
        raise ConfigError(
            f"unroll_window: each entry must be in [1, unroll_segment - 1 = {cfg.unroll_segment - 1}], "
            f"got {cfg.unroll_window}"
        )
    if cfg.train_cycles - cfg.burn_in < cfg.unroll_segment:
        raise ConfigError(f"unroll_segment: {cfg.unroll_segment} is longer than the training stretch after burn_in")
    if cfg.kernel % 2 == 0:
        raise ConfigError(f"kernel: must be odd, got {cfg.kernel}")
    for name, length in (("train_cycles", cfg.train_cycles), ("valid_cycles", cfg.valid_cycles)):
        if length - cfg.burn_in < max(cfg.segment, cfg.valid_segment):
            raise ConfigError(f"{name}: {length} leaves fewer than one segment after burn_in {cfg.burn_in}")
    if cfg.burn_in >= cfg.test_cycles:
        raise ConfigError(f"burn_in: {cfg.burn_in} must be < test_cycles {cfg.test_cycles}")
    return cfg


def same_run(stored: Any, key: dict[str, Any]) -> bool:
    """Whether a checkpoint's data and online training are this run's (the fine-tuning fields may differ).

    A field the stored config lacks (added later) must keep the old behaviour: its default.
    """
    if not isinstance(stored, dict) or stored.get("seed") != key["seed"]:
        return False
    defaults = CNNAnalysisConfig().model_dump()
    old = stored.get("config", {})
    fixed = [k for k in key["config"] if not k.startswith("unroll_") and k != "variants"]
    return all(old.get(k, defaults[k]) == key["config"][k] for k in fixed) and set(old) <= set(key["config"])


def unroll_key(cfg: CNNAnalysisConfig, variant: str) -> dict[str, Any] | None:
    """The fine-tuning settings a variant gets (None: not fine-tuned)."""
    if cfg.unroll_epochs == 0 or variant not in cfg.unroll_variants:
        return None
    return {k: v for k, v in cfg.model_dump().items() if k.startswith("unroll_") and k != "unroll_variants"}
