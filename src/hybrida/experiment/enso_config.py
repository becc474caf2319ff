"""Settings of the ENSO pipeline (:mod:`hybrida.experiment.enso`): a dataclass with defaults and ``--set`` overrides."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from hybrida.experiment.config import ConfigError

__all__ = ["DEFAULT_OBS_FILE", "SPIN_UP", "EnsoConfig"]

#: where ``hybrida data enso`` writes by default and the presets read from
DEFAULT_OBS_FILE = "data/enso.nc"
#: months at the start of a run left out of statistics (filter spin-up)
SPIN_UP = 24


@dataclass
class EnsoConfig:
    """Settings of the ENSO experiment; every field has a default (``--set key=value`` in the CLI)."""

    name: str = "enso/recharge"
    seed: int = 0
    #: ensemble members
    members: int = 40
    #: observation file written by ``hybrida data enso``
    obs_file: str = DEFAULT_OBS_FILE
    #: parameters estimated with the state: name -> [prior mean, prior std]
    estimate: dict[str, list[float]] = field(default_factory=lambda: {
        "R": [-0.02, 0.02], "alpha": [0.12, 0.03], "r": [0.03, 0.015], "seasonal_amp": [0.0, 0.02]})
    #: other oscillator parameters (gamma fixes the scale of h; forcing_memory > 0 adds the red-noise state ξ)
    fixed: dict[str, float] = field(default_factory=lambda: {"gamma": 0.12, "seasonal_phase": 10.0,
                                                             "forcing_memory": 2.0})
    #: initial std of the monthly stochastic forcing of each state variable (T, h[, ξ]); tuned when tune_model_noise
    noise_std: list[float] = field(default_factory=lambda: [0.02, 0.02, 0.3])
    #: std of the additive parameter noise after each analysis (keeps the parameters adaptable)
    param_noise: float = 0.002
    #: multiplicative inflation of the inner ETKF
    infl: float = 1.0
    #: Desroziers iterations on the fit period (0: keep the file's obs_error)
    desroziers_iterations: int = 4
    tune_model_noise: bool = True
    fit: list[int] = field(default_factory=lambda: [1950, 1990])
    verify: list[int] = field(default_factory=lambda: [1991, 2010])
    test: list[int] = field(default_factory=lambda: [2011, 2016])
    max_lead: int = 12
    #: also train the seasonal correction on the fit-period analyses and cycle the hybrid
    learned: bool = False
    hidden: int = 16
    #: months of the forecast loss of the correction (1: one-month pairs)
    rollout: int = 1
    epochs: int = 1500
    #: a small, fast setting (tests, smoke runs): 10 members, 1 Desroziers iteration, 200 epochs
    quick: bool = False

    def resolved(self) -> EnsoConfig:
        """The config with ``quick`` applied."""
        if not self.quick:
            return self
        return EnsoConfig(**{**asdict(self), "members": min(self.members, 10),
                             "desroziers_iterations": min(self.desroziers_iterations, 1),
                             "epochs": min(self.epochs, 200)})

    @classmethod
    def from_overrides(cls, base: dict[str, Any], overrides: list[str]) -> EnsoConfig:
        """A config from a preset dict and ``key=value`` strings (YAML values); unknown keys are errors."""
        data = copy.deepcopy(base)
        allowed = set(cls.__dataclass_fields__)
        for item in overrides:
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in allowed:
                raise ConfigError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(allowed))}")
            data[key] = yaml.safe_load(value)
        try:
            cfg = cls(**data)
        except TypeError as err:
            raise ConfigError(f"enso config: {err}") from None
        defaults = cls()
        for key in data:
            want, got = type(getattr(defaults, key)), getattr(cfg, key)
            ok = isinstance(got, want) or (want is float and isinstance(got, int) and not isinstance(got, bool))
            if not ok or (want is int and isinstance(got, bool)):
                raise ConfigError(f"{key}: expected a {want.__name__}, got {got!r}")
        if cfg.members < 3:
            raise ConfigError(f"members: need at least 3, got {cfg.members}")
        return cfg
