"""Configuration of ``hybrida learn filter bach2025_l96`` (:mod:`hybrida.experiment.filter_bach_l96`)."""

from __future__ import annotations

from pydantic import Field

from hybrida.experiment.config import _Strict
from hybrida.experiment.learned_analysis import pipeline_config


class FilterBachConfig(_Strict):
    """Everything the pipeline needs; every field has a default."""

    sigma: float = Field(1.0, gt=0, description="observation error std σ_y")
    sizes: list[int] = Field([5, 10, 20, 40, 60, 100], description="ensemble sizes N evaluated")
    train_N: int = Field(20, ge=3, description="ensemble size the network is trained at")
    infls: list[float] = Field([1.0, 1.03, 1.06, 1.1, 1.15], description="LETKF inflations tried")
    radii: list[float] = Field([1.0, 1.5, 2.0, 3.0, 4.0, 6.0], description="LETKF radii tried (grid points)")
    large_radii: list[float] = Field([8.0, 12.0], description="radii also tried at N >= large_from (the best "
                                     "radius grows with N)")
    large_from: int = Field(60, ge=2, description="smallest N that also tries large_radii")
    grid_trajectories: int = Field(6, ge=1, description="trajectories of the grid search")
    grid_cycles: int = Field(400, ge=20, description="cycles per grid-search trajectory")
    train_trajectories: int = Field(16, ge=1, description="training trajectories")
    train_cycles: int = Field(300, ge=20, description="cycles per training trajectory")
    valid_trajectories: int = Field(16, ge=1, description="validation trajectories (early stopping)")
    valid_cycles: int = Field(250, ge=20, description="cycles per validation trajectory")
    test_trajectories: int = Field(24, ge=1, description="test trajectories (the paper: 64)")
    test_cycles: int = Field(1000, ge=20, description="cycles per test trajectory (the paper: 1500)")
    burn_in: int = Field(100, ge=0, description="cycles left out of every R-RMSE")
    epochs: int = Field(20, ge=0, description="training epochs at most (0: untrained, the tuned LETKF)")
    finetune_epochs: int = Field(15, ge=0, description="epochs of fine-tuning (truth loss) at finetune_sizes (0: none)")
    finetune_sizes: list[int] | None = Field([40, 60, 100], description="sizes the N=train_N network is fine-tuned at "
                                             "(None: every N but train_N)")
    finetune_max_minutes: float = Field(30.0, gt=0, description="wall-time budget of each fine-tuning (minutes)")
    finetune_lr: float | None = Field(None, gt=0, description="Adam learning rate of the fine-tuning (None: lr)")
    at_N_sizes: list[int] = Field([60, 100], description="sizes at which a network is also trained from the start (truth "
                                  "loss, starting at the tuned LETKF of that N, at most epochs epochs)")
    at_N_lr: float | None = Field(None, gt=0, description="Adam learning rate of the training at at_N_sizes (None: lr)")
    lr_final: float | None = Field(None, gt=0, description="cosine decay of the learning rate at train_N towards this "
                                   "after the last epoch (None: constant)")
    at_N_lr_final: float | None = Field(0.0003, gt=0, description="the same for the training at at_N_sizes; when "
                                        "set, that training runs every epoch (no early stopping; the best validated "
                                        "weights are kept)")
    adaptive: bool = Field(True, description="also run the LETKF with adaptive prior inflation (the grid radius)")
    lr: float = Field(0.003, gt=0, description="Adam learning rate")
    window: int = Field(10, ge=1, description="cycles per truncated-BPTT window")
    patience: int = Field(5, ge=1, description="epochs without validation improvement before stopping")
    fresh_data: bool = Field(True, description="new training trajectories every epoch (False: one fixed set)")
    max_minutes: float = Field(60.0, gt=0, description="wall-time budget of each training (minutes)")
    hidden: int = Field(8, ge=1, description="channels of the ensemble field network")
    width: int = Field(2, ge=1, description="half-width of its periodic convolutions")
    field: bool = Field(False, description="use the ensemble field network (False: taper and scalar inflation only)")
    sites: int = Field(3, ge=1, description="taper rows / base inflations by distance to the nearest observation")
    correction: bool = Field(True, description="add the convolutional correction of the analysis mean")
    correction_hidden: int = Field(16, ge=1, description="channels of the mean correction")
    correction_particles: bool = Field(False, description="give the mean correction the localised particle-filter "
                                       "increment and effective sample size of the forecast ensemble as inputs")
    init_loc_rad: float | None = Field(None, gt=0, description="starting radius (None: the tuned LETKF's at train_N)")
    init_infl: float | None = Field(None, gt=1, description="starting inflation (None: the tuned LETKF's)")
    truth_free: bool = Field(True, description="also train the truth-free (next-observation) variant")
    bar_truth: float = Field(0.10, description="required relative gain 1 - learned/LETKF of the truth-trained filter "
                             "at bar_sizes (negative: may be that much worse)")
    bar_sizes: list[int] = Field([10, 20], description="ensemble sizes the truth bar applies to")
    bar_truth_free: float = Field(0.05, description="required relative gain of the truth-free filter at train_N")
    bar_large: float = Field(0.15, description="required gain of the truth-trained (or fine-tuned) filter at "
                             "bar_large_sizes (those evaluated)")
    bar_large_sizes: list[int] = Field([60, 100], description="large ensemble sizes bar_large applies to")
    bar_adaptive: bool = Field(True, description="the truth-trained filter must also beat the adaptive-inflation "
                               "LETKF at bar_sizes")


QUICK = {
    "sizes": [10, 20], "infls": [1.02, 1.05, 1.08], "radii": [1.5, 2.5, 4.0], "grid_trajectories": 4,
    "grid_cycles": 250, "train_trajectories": 8, "train_cycles": 200, "valid_trajectories": 4, "valid_cycles": 200,
    "test_trajectories": 8, "test_cycles": 400, "burn_in": 50, "epochs": 4, "hidden": 4, "truth_free": False,
    "field": False, "correction": False, "fresh_data": False, "init_loc_rad": 6.0, "init_infl": 1.15, "lr": 0.1, "window": 5, "bar_truth": -0.03,
    "bar_sizes": [20], "finetune_epochs": 0, "finetune_lr": 0.05, "at_N_sizes": [], "bar_adaptive": False,
}
#: the quick preset starts far from the tuned LETKF (radius 6, inflation 1.15) and must come back within 3% of it


def make_config(quick: bool, overrides: list[str]) -> FilterBachConfig:
    """The validated config: defaults (or the quick variant) with ``--set`` overrides applied."""
    config = pipeline_config(FilterBachConfig, QUICK, quick, overrides)
    if config.train_N not in config.sizes:
        config.sizes = sorted({*config.sizes, config.train_N})
    return config
