"""Experiment configuration: pydantic models, YAML loading and dotted-key overrides."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hybrida import registry
from hybrida.device import check_available, parse_device


class ConfigError(ValueError):
    """An invalid experiment configuration; the message names the field and the allowed values."""


class ConfigLoader(yaml.SafeLoader):
    """YAML safe loader that also reads ``1e-3``, ``1e6`` and ``1.0e6`` as numbers.

    YAML 1.1 (PyYAML) only takes a float with a dot and a signed exponent
    (``1.0e+6``); the dotless and unsigned forms people write stay strings there.
    """


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`ConfigLoader` (every config and ``--set`` value goes through here)."""
    return yaml.load(text, Loader=ConfigLoader)  # a SafeLoader subclass: safe


def _check_name(name: str, table: dict[str, str], what: str, field: str) -> str:
    # "package.module:Class" names a user plugin that is imported directly
    if ":" in name:
        return name
    if name not in table:
        allowed = ", ".join(sorted(table))
        raise ValueError(f"{field}: unknown {what} '{name}'; choose one of: {allowed}")
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    """Which dynamical model runs the truth and the forecasts."""

    name: str = Field("lorenz96", description="registered model name (or 'module:Class')")
    params: dict[str, Any] = Field(
        default_factory=dict, description="constructor keyword arguments"
    )

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _check_name(v, registry.MODELS, "model", "model.name")


class ObservationConfig(_Strict):
    """Which observation network observes the truth, and how often; or a file of real observations."""

    name: str = Field("identity", description="registered observation network (or 'module:Class')")
    params: dict[str, Any] = Field(
        default_factory=dict, description="network keyword arguments (n and every are filled in)"
    )
    every: int = Field(1, ge=1, description="model steps between two analyses")
    file: str | None = Field(
        None,
        description="observation file (hybrida/IODA-like NetCDF) assimilated instead of a twin's synthetic "
        "observations: no truth; the file sets the cycles and the steps between them",
    )

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _check_name(v, registry.OBSERVATIONS, "observation network", "observations.name")

    @field_validator("params")
    @classmethod
    def _positive_std(cls, v: dict[str, Any]) -> dict[str, Any]:
        std = v.get("std")
        if std is not None:
            ok = isinstance(std, (int, float)) and math.isfinite(std) and std > 0
            if not ok:
                raise ValueError(
                    f"observations.params.std: must be a finite number > 0, got {std!r}"
                )
        return v


class QCConfig(_Strict):
    """Quality control run on each cycle's observations before the analysis."""

    name: str = Field("background", description="registered quality-control check (or 'module:Class')")
    params: dict[str, Any] = Field(default_factory=dict, description="constructor keyword arguments")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _check_name(v, registry.QC, "quality-control check", "qc.name")


class MethodConfig(_Strict):
    """Which assimilation method analyses the observations."""

    name: str = Field("etkf", description="registered method name (or 'module:Class')")
    params: dict[str, Any] = Field(
        default_factory=dict, description="constructor keyword arguments"
    )

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _check_name(v, registry.METHODS, "method", "method.name")

    @field_validator("params")
    @classmethod
    def _sane(cls, v: dict[str, Any]) -> dict[str, Any]:
        N = v.get("N")
        if N is not None and (not isinstance(N, int) or isinstance(N, bool) or N < 2):
            raise ValueError(f"method.params.N: ensemble size must be an integer >= 2, got {N!r}")
        infl = v.get("infl")
        if infl is not None and (not isinstance(infl, (int, float)) or not infl > 0):
            raise ValueError(f"method.params.infl: inflation must be a number > 0, got {infl!r}")
        loc = v.get("loc_rad")
        if loc is not None and (not isinstance(loc, (int, float)) or not loc > 0):
            raise ValueError(f"method.params.loc_rad: radius must be a number > 0, got {loc!r}")
        return v


class InitialConfig(_Strict):
    """How the truth and the first background are drawn around ``model.initial_state()``."""

    std: float = Field(
        1.0, ge=0, description="std of the initial ensemble / background around its centre"
    )
    truth_std: float = Field(0.0, ge=0, description="std of the perturbation of the true x0")
    center: Literal["truth", "reference"] = Field(
        "truth",
        description="centre of the initial ensemble: the true x0, or the unperturbed reference state "
        "(DAPPER convention: truth and ensemble drawn independently from the same N(x0, std^2))",
    )


class ClimatologyConfig(_Strict):
    """Long free model run giving the climatological mean and covariance (when a method needs it)."""

    steps: int = Field(20000, ge=2, description="model steps of the free run")
    spinup: int = Field(1000, ge=0, description="model steps discarded first")
    thin: int = Field(1, ge=1, description="keep every thin-th state")


class ExperimentConfig(_Strict):
    """A twin experiment: model, observations, method, length and seed."""

    name: str = Field("custom", description="experiment / preset name")
    seed: int = Field(
        3000, ge=0, description="master seed; truth, initial and analysis streams derive from it"
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="dynamical model")
    truth_model: ModelConfig | None = Field(
        None,
        description=(
            "imperfect-model twin: the model that runs the truth (default: `model`); same dt, "
            "its leading `model.n` variables are the forecast model's state"
        ),
    )
    observations: ObservationConfig = Field(
        default_factory=ObservationConfig, description="observation network"
    )
    method: MethodConfig = Field(default_factory=MethodConfig, description="assimilation method")
    cycles: int = Field(200, gt=0, description="number of analysis cycles")
    burn_in: float = Field(0.0, ge=0, description="model time excluded from the scores")
    initial: InitialConfig = Field(default_factory=InitialConfig, description="initial conditions")
    climatology: ClimatologyConfig = Field(
        default_factory=ClimatologyConfig, description="climatology run"
    )
    qc: QCConfig | None = Field(
        None, description="quality control of the observations before each analysis (none by default)"
    )
    dtype: Literal["float64", "float32"] = Field("float64", description="tensor dtype")
    device: str = Field(
        "cpu",
        description="torch device the run computes on: cpu, cuda, cuda:K or mps (truth, observations, "
        "ensembles and B are created there; random numbers are drawn on the CPU and moved, so the draws "
        "are the same on every device); results are written from the CPU",
    )
    store_members: bool = Field(False, description="write the analysis members to results.nc")
    checkpoint_every: int = Field(0, ge=0, description="cycles between checkpoints; 0 = off")
    threads: int = Field(
        0, ge=0, description="torch intra-op threads; 0 = automatic (1 for small states, else all)"
    )

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        return parse_device(v)

    @model_validator(mode="after")
    def _semantics(self) -> ExperimentConfig:
        if self.device == "mps" and self.dtype == "float64":
            raise ValueError("device: 'mps' has no float64 tensors; set dtype: float32 (or device: cpu)")
        dt = self.model.params.get("dt")
        if isinstance(dt, (int, float)) and dt > 0:
            total = self.cycles * self.observations.every * dt
            if self.burn_in >= total:
                raise ValueError(
                    f"burn_in: {self.burn_in} must be < total time {total:g} "
                    f"(cycles {self.cycles} x every {self.observations.every} x dt {dt})"
                )
        return self

    def digest(self) -> str:
        """sha256 of the canonical JSON of this config (checkpoints carry it)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def to_yaml(self) -> str:
        """The config as YAML text."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def format_validation_error(err: ValidationError, model: type[BaseModel] = ExperimentConfig) -> str:
    """One line per problem, each naming the dotted field and what is allowed."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            parent = model
            for part in e["loc"][:-1]:
                f = parent.model_fields.get(str(part)) if hasattr(parent, "model_fields") else None
                ann = getattr(f, "annotation", None) if f else None
                parent = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
                if parent is None:
                    break
            allowed = ", ".join(parent.model_fields) if parent is not None else "?"
            lines.append(f"{loc}: unknown key '{e['loc'][-1]}'; allowed keys: {allowed}")
            continue
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
            # our validators already name the field
            lines.append(msg if ":" in msg.split(" ")[0] else f"{loc}: {msg}")
            continue
        ctx = e.get("ctx") or {}
        if "expected" in ctx and str(ctx["expected"]) not in msg:
            msg = f"{msg} (allowed: {ctx['expected']})"
        lines.append(f"{loc or 'config'}: {msg}")
    return "; ".join(lines)


def validate_config(data: dict[str, Any]) -> ExperimentConfig:
    """Validate a plain dict into an :class:`ExperimentConfig` (raises :class:`ConfigError`)."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"config: expected a mapping of keys to values, got {type(data).__name__}"
        )
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    check_device(config.device)
    return config


def check_device(device: str) -> None:
    """A one-line :class:`ConfigError` when torch cannot use ``device`` here (it lists the available ones)."""
    try:
        check_available(device)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into its key path and YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. method.params.N=20")
    key, _, raw = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"--set {text!r}: key must be dotted names, e.g. method.params.N=20")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(
            f"--set {key}: value {raw!r} is not valid YAML ({err.__class__.__name__})"
        ) from None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted-key overrides applied (creating nested dicts)."""
    out = copy.deepcopy(data)
    items = (
        [parse_override(o) for o in overrides]
        if isinstance(overrides, list)
        else [(k.split("."), v) for k, v in overrides.items()]
    )
    for parts, value in items:
        node = out
        for i, p in enumerate(parts[:-1]):
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"--set {'.'.join(parts)}: '{where}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively by ``update`` (sections merge, values replace)."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def switch_method(data: dict[str, Any], name: Any) -> dict[str, Any]:
    """Change ``method.name``; the old method's params give way to the preset's tuned ones."""
    from hybrida.experiment.presets import tuned_params

    method = data.get("method")
    if not isinstance(method, dict) or method.get("name") == name or not isinstance(name, str):
        return data
    tuned = tuned_params(str(data.get("name", "")), name)
    data = dict(data)
    data["method"] = {"name": name, "params": tuned or {}}
    return data


def _with_base(data: dict[str, Any]) -> dict[str, Any]:
    # a config may start from a preset: {preset: lorenz63/sakov2012, method: {...}}
    if "preset" not in data:
        return data
    base = read_source(str(data.pop("preset")))
    new_method = (
        data.get("method", {}).get("name") if isinstance(data.get("method"), dict) else None
    )
    if new_method is not None:
        base = switch_method(base, new_method)
    return deep_merge(base, data)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML (or JSON) config file; a :class:`ConfigError` says what is wrong."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(err, 'problem', err)}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def read_source(source: str | Path | dict[str, Any] | None) -> dict[str, Any]:
    """The raw config dict of a preset name, a YAML path, or an inline dict."""
    from hybrida.experiment.presets import PRESETS, get_preset

    if source is None:
        return get_preset("lorenz96/sakov2008")
    if isinstance(source, dict):
        return _with_base(copy.deepcopy(source))
    text = str(source)
    path = Path(text)
    if text in PRESETS:
        return get_preset(text)
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        return _with_base(read_yaml_mapping(path))
    allowed = ", ".join(sorted(PRESETS))
    raise ConfigError(
        f"unknown preset '{text}'; choose one of: {allowed} (or a path to a .yaml file)"
    )


def load_config(
    source: str | Path | dict[str, Any] | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Load a preset name / YAML path / dict, apply ``KEY=VALUE`` overrides, then validate."""
    data = read_source(source)
    if overrides:
        for o in overrides:
            parts, value = parse_override(o)
            if parts == ["method", "name"]:
                data = switch_method(data, value)
        data = apply_overrides(data, list(overrides))
    return validate_config(data)
