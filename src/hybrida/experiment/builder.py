"""Turn a validated :class:`ExperimentConfig` into the parts of a twin experiment."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hybrida import registry
from hybrida.assimilation.base import AssimilationMethod, State
from hybrida.device import move_attributes
from hybrida.experiment.config import ConfigError, ExperimentConfig, check_device
from hybrida.experiment.memory import check_climatology_memory, check_run_memory, observation_bytes
from hybrida.experiment.twin import Twin, climatology, climatology_sample, make_twin
from hybrida.models.base import Model
from hybrida.observations.base import Observation
from hybrida.observations.system import ObservationSystem

STREAMS = ("truth", "initial", "analysis", "torch_global")


@dataclass
class Experiment:
    """Everything :func:`hybrida.experiment.runner.run_experiment` needs to cycle."""

    config: ExperimentConfig
    model: Model
    obs_system: ObservationSystem
    method: AssimilationMethod
    twin: Twin
    initial: State
    generators: dict[str, torch.Generator]
    seeds: dict[str, int]
    climatology: tuple[Tensor, Tensor] | None = None
    qc: Any = None

    @property
    def total_time(self) -> float:
        """Model time of the last analysis."""
        return self.config.cycles * self.twin.steps_per_cycle * self.model.dt


def derive_seeds(seed: int) -> dict[str, int]:
    """Independent 63-bit seeds for each random stream, derived from one master seed.

    Uses numpy's ``SeedSequence`` so that neighbouring master seeds do not
    share streams (seed+1 would make run s's initial ensemble run s+1's truth).
    """
    states = np.random.SeedSequence(seed).generate_state(len(STREAMS), dtype=np.uint64)
    return {name: int(s) >> 1 for name, s in zip(STREAMS, states)}


def resolve(table: dict[str, str], name: str, what: str) -> Any:
    """:func:`hybrida.registry.resolve` with import failures as a :class:`ConfigError`."""
    try:
        return registry.resolve(table, name, what)
    except ImportError as err:
        raise ConfigError(f"{what}.name: cannot import '{name}' ({err})") from None


def _accepted(cls: type) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [
        p
        for p in params
        if p != "self" and params[p].kind not in (inspect.Parameter.VAR_POSITIONAL,)
    ]


def check_params(cls: type, names: Any, field: str) -> None:
    """Raise a :class:`ConfigError` naming ``field`` when ``cls`` does not take some of ``names``."""
    sig = inspect.signature(cls.__init__)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return
    accepted = _accepted(cls)
    unknown = sorted(set(names) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{field}: {cls.__name__} has no parameter {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted)}"
        )


def instantiate(cls: type, kwargs: dict[str, Any], field: str) -> Any:
    """``cls(**kwargs)`` with errors naming ``field`` and the accepted parameters."""
    check_params(cls, kwargs, field)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{field}: {cls.__name__}: {err}") from None


def build_model(config: ExperimentConfig) -> Model:
    """The dynamical (forecast) model of ``config``."""
    cls = resolve(registry.MODELS, config.model.name, "model")
    return instantiate(cls, dict(config.model.params), "model.params")


def build_truth_model(config: ExperimentConfig, model: Model) -> Model:
    """The model that runs the truth: ``truth_model`` when given (imperfect-model twin), else ``model``."""
    if config.truth_model is None:
        return model
    cls = resolve(registry.MODELS, config.truth_model.name, "truth_model")
    truth = instantiate(cls, dict(config.truth_model.params), "truth_model.params")
    if abs(truth.dt - model.dt) > 1e-12 * model.dt:
        raise ConfigError(f"truth_model.params.dt: {truth.dt} must equal the forecast model's dt {model.dt}")
    if truth.n < model.n:
        raise ConfigError(
            f"truth_model: has {truth.n} variables, fewer than the forecast model's {model.n}"
        )
    return truth


def check_against_model(config: ExperimentConfig, model: Model) -> None:
    """Semantic checks that need the model (its time step)."""
    total = config.cycles * config.observations.every * model.dt
    if config.burn_in >= total:
        raise ConfigError(
            f"burn_in: {config.burn_in} must be < total time {total:g} "
            f"(cycles {config.cycles} x every {config.observations.every} x dt {model.dt})"
        )


def build_observations(
    config: ExperimentConfig, model: Model, dtype: torch.dtype
) -> ObservationSystem:
    """The observation network of ``config`` on the model grid."""
    params = dict(config.observations.params)
    for reserved in ("n", "every", "dtype"):
        if reserved in params:
            hint = "observations.every" if reserved == "every" else "the model/config"
            raise ConfigError(f"observations.params.{reserved}: set by {hint}, remove it here")
    cls = resolve(registry.OBSERVATIONS, config.observations.name, "observations")
    kwargs = {"n": model.n, "every": config.observations.every, **params}
    if "dtype" in _accepted(cls):
        kwargs["dtype"] = dtype
    return instantiate(cls, kwargs, "observations.params")


def build_method(
    config: ExperimentConfig, model: Model, x0: Tensor, progress: bool = False
) -> tuple[AssimilationMethod, tuple[Tensor, Tensor] | None]:
    """The assimilation method; computes the model climatology first when it needs one (``progress``: with a bar)."""
    cls = resolve(registry.METHODS, config.method.name, "method")
    params = dict(config.method.params)
    clim = None
    check_params(cls, params, "method.params")  # before the (slow) climatology run
    if getattr(cls, "needs_climatology", False):
        if "climatology" in params:
            raise ConfigError(
                "method.params.climatology: computed from the 'climatology' section; remove it"
            )
        c = config.climatology
        suffices = getattr(cls, "climatology_sample_suffices", None)
        if suffices is not None and suffices(params):  # anomalies (T, n): no (n, n) matrix
            clim = climatology_sample(model, x0, c.steps, spinup=c.spinup, thin=c.thin, progress=progress)
        else:
            check_climatology_memory(config, model.n)
            clim = climatology(model, x0, c.steps, spinup=c.spinup, thin=c.thin, progress=progress)
        params["climatology"] = clim
    return instantiate(cls, params, "method.params"), clim


def build_qc(config: ExperimentConfig) -> Any:
    """The quality-control check of ``config`` (None without a ``qc`` section)."""
    if config.qc is None:
        return None
    cls = resolve(registry.QC, config.qc.name, "qc")
    return instantiate(cls, dict(config.qc.params), "qc.params")


@dataclass
class Prepared:
    """A run of ``config`` before its nature run: parts, seed streams, the true start ``x0``."""

    config: ExperimentConfig
    model: Model
    truth_model: Model
    obs_system: ObservationSystem
    method: AssimilationMethod
    qc: Any
    generators: dict[str, torch.Generator]
    seeds: dict[str, int]
    x_ref: Tensor
    x0: Tensor
    climatology: tuple[Tensor, Tensor] | None

    def initial(self, twin: Twin) -> State:
        """The initial state around the truth's start or the reference state (``initial.center``)."""
        center = twin.truth[0] if self.config.initial.center == "truth" else self.x_ref
        try:
            return self.method.initial_state(center, self.config.initial.std, generator=self.generators["initial"])
        except ValueError as err:  # e.g. a learned analysis trained for another state size
            raise ConfigError(f"method: {err}") from None

    def experiment(self, twin: Twin) -> Experiment:
        """The :class:`Experiment` with this ``twin`` and its initial state.

        A method that checks its inputs (a learned analysis trained for one state size,
        observation count and dtype) sees the first observations now, so a mismatch is a
        one-line :class:`ConfigError` before the run, not an error inside the cycle.
        """
        initial = self.initial(twin)
        check = getattr(self.method, "check_inputs", None)
        if callable(check) and twin.observations and isinstance(initial, Tensor):
            try:
                check(initial, twin.observations[0])
            except ValueError as err:
                raise ConfigError(f"method: {err}") from None
        return Experiment(
            config=self.config, model=self.model, obs_system=self.obs_system, method=self.method, twin=twin,
            initial=initial, generators=self.generators, seeds=self.seeds,
            climatology=self.climatology, qc=self.qc,
        )


def prepare(
    config: ExperimentConfig, observations: list[Observation] | None = None, progress: bool = False
) -> Prepared:
    """Everything of :func:`build` up to the nature run (vectorised runs batch the nature runs).

    ``progress`` shows a bar while a climatology is computed (minutes for large models).
    """
    if observations is not None and config.initial.center == "truth":
        raise ConfigError(
            "initial.center: 'truth' needs a nature run; with observations from a file use 'reference'"
        )
    dtype = getattr(torch, config.dtype)
    check_device(config.device)  # an ExperimentConfig built in Python skipped validate_config's check
    device = torch.device(config.device)
    model = build_model(config)
    truth_model = build_truth_model(config, model)
    check_against_model(config, model)
    obs_system = build_observations(config, model, dtype)
    qc = build_qc(config)  # before the nature run: a bad qc section fails at once
    seeds = derive_seeds(config.seed)
    gens = {
        name: torch.Generator().manual_seed(s)
        for name, s in seeds.items()
        if name != "torch_global"
    }

    if not hasattr(model, "initial_state"):
        raise ConfigError(f"model.name: {type(model).__name__} has no initial_state(dtype)")
    # the run lives on config.device: the true start and the reference state are moved there, and the
    # nature run, observations, climatology (B) and initial ensemble follow them; the draws stay on the
    # CPU generators and are moved, so every device sees the same random numbers
    x_ref = model.initial_state(dtype).to(device)
    # an imperfect-model truth starts on its own attractor
    x0 = truth_model.initial_state(dtype).to(device) if truth_model is not model else x_ref.clone()
    if config.initial.truth_std > 0:
        x0 = x0 + config.initial.truth_std * torch.randn(
            x0.shape, generator=gens["truth"], dtype=dtype
        ).to(device)
    # before the climatology run and the truth: refuse a run that cannot fit in memory
    check_run_memory(config, model.n, truth_model.n, observation_bytes(obs_system, x_ref))
    method, clim = build_method(config, model, x_ref, progress)
    # tensors a method or QC check made at construction (a B from its params, taper tables) join the run
    move_attributes(method, device)
    if qc is not None:
        move_attributes(qc, device)
    if qc is not None and getattr(qc, "B", False) is None:
        qc.B = getattr(method, "B", None)  # a single-state method's static B gives the check its HBH^T
    return Prepared(config, model, truth_model, obs_system, method, qc, gens, seeds, x_ref, x0, clim)


def build(
    config: ExperimentConfig, observations: list[Observation] | None = None, progress: bool = False
) -> Experiment:
    """Model, network, method, nature run + observations, and initial state of ``config``.

    With ``observations`` (cycles 1..K, e.g. read from a file) there is no
    nature run: ``twin.truth`` is None and ``initial.center`` must be
    ``reference``. The initial state is drawn from the same seed stream as in
    the twin, so a twin and the assimilation of its written observations give
    identical analyses. ``progress`` shows a bar while a climatology is computed.
    """
    p = prepare(config, observations, progress)
    if observations is None:
        n_state = p.model.n if p.truth_model.n > p.model.n else None
        twin = make_twin(p.truth_model, p.obs_system, p.x0, config.cycles, p.generators["truth"], n_state=n_state)
    else:
        # observations read from a file sit on the CPU: they join the run's device (a no-op on the CPU)
        device = p.x_ref.device
        twin = Twin(
            truth=None, observations=[o.to_device(device) for o in observations],
            steps_per_cycle=config.observations.every,
        )
    return p.experiment(twin)
