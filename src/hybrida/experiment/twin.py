"""Twin experiments: a nature run of the model and synthetic observations of it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from hybrida.assimilation.variational.climatology import ClimatologySample
from hybrida.models.base import Model
from hybrida.observations.base import Observation
from hybrida.observations.system import ObservationSystem


@dataclass
class Twin:
    """Truth at analysis times ``(K + 1, n)`` and the observations of cycles 1..K.

    ``truth`` is None when the observations were read from a file (real data):
    the cycle then scores against the observations only.
    """

    truth: Tensor | None
    observations: list[Observation]
    steps_per_cycle: int


def nature_run(model: Model, x0: Tensor, n_cycles: int, steps_per_cycle: int) -> Tensor:
    """True states at analysis times 0..n_cycles, shape ``(n_cycles + 1, n)``."""
    states = [x0]
    x = x0
    with torch.no_grad():
        for k in range(n_cycles):
            x = model.forecast(x, steps_per_cycle, k * steps_per_cycle * model.dt)
            states.append(x)
    return torch.stack(states)


def make_twin(
    model: Model,
    obs_system: ObservationSystem,
    x0: Tensor,
    n_cycles: int,
    generator: torch.Generator | None = None,
    n_state: int | None = None,
) -> Twin:
    """Run the truth from ``x0`` and observe it every ``obs_system.every`` steps.

    No observation is taken at t=0 (cycle 0). With ``n_state`` (imperfect-model
    twins whose truth has more variables than the forecast model, e.g. the
    two-scale Lorenz-96 truth of a one-scale model) the truth is cut to its
    leading ``n_state`` variables before it is observed and stored.
    """
    truth = nature_run(model, x0, n_cycles, obs_system.every)
    if n_state is not None:
        truth = truth[..., :n_state].contiguous()
    observations = [obs_system.observe(truth[k], k, generator) for k in range(1, n_cycles + 1)]
    return Twin(truth=truth, observations=observations, steps_per_cycle=obs_system.every)


def _free_run_blocks(
    model: Model, x0: Tensor, n_steps: int, spinup: int, thin: int, chunk: int, progress: bool = False
) -> Iterator[Tensor]:
    """The states after steps 1, 1 + thin, ... of a free run from ``x0``, stacked ``chunk`` at a time.

    Run it under ``torch.no_grad()`` (a grad-mode switch inside a generator would leak to the caller).
    ``progress`` shows a progress bar over the steps (a long climatology otherwise runs silently).
    """
    x = model.forecast(x0, spinup) if spinup else x0
    block: list[Tensor] = []
    steps = tqdm(range(n_steps), desc="climatology", unit="step", disable=not progress, leave=False, mininterval=1.0)
    for k in steps:
        x = model.step(x, k * model.dt)
        if k % thin == 0:
            block.append(x)
        if block and (len(block) == chunk or k == n_steps - 1):
            yield torch.stack(block)
            block = []


def _too_few(count: int, n_steps: int, thin: int) -> ValueError:
    return ValueError(f"climatology: needs at least 2 states, got {count} (steps {n_steps}, thin {thin})")


def climatology_sample(
    model: Model, x0: Tensor, n_steps: int, spinup: int = 0, thin: int = 1, progress: bool = False
) -> ClimatologySample:
    """The states of :func:`climatology`'s free run kept as anomalies ``(T, n)`` about their mean.

    For methods that never need the dense covariance (4D-Var with a homogeneous B):
    O(T n) memory instead of O(n²).
    """
    with torch.no_grad():
        blocks = list(_free_run_blocks(model, x0, n_steps, spinup, thin, chunk=max(n_steps, 1), progress=progress))
    X = torch.cat(blocks) if blocks else x0.new_zeros(0, x0.shape[-1])
    if X.shape[0] < 2:
        raise _too_few(X.shape[0], n_steps, thin)
    mean = X.mean(0)
    return ClimatologySample(mean, X - mean)


def climatology(
    model: Model, x0: Tensor, n_steps: int, spinup: int = 0, thin: int = 1, chunk: int = 512,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Climatological mean ``(n,)`` and covariance ``(n, n)`` from a long free run.

    The states after steps 1, 1 + thin, ... are accumulated ``chunk`` at a time with the
    pairwise update of Chan, Golub & LeVeque (1979), so memory is O(n^2 + chunk n), not the
    whole trajectory (a 20 000-step run of n = 20 000 would keep 3.2 GB).
    """
    count, mean, m2 = 0, None, None
    with torch.no_grad():
        for b in _free_run_blocks(model, x0, n_steps, spinup, thin, chunk, progress):
            b_mean = b.mean(0)
            anomalies = b - b_mean
            b_m2 = anomalies.mT @ anomalies
            if mean is None:
                count, mean, m2 = b.shape[0], b_mean, b_m2
                continue
            total = count + b.shape[0]
            delta = b_mean - mean
            m2 = m2 + b_m2 + torch.outer(delta, delta) * (count * b.shape[0] / total)
            mean = mean + delta * (b.shape[0] / total)
            count = total
    if mean is None or count < 2:
        raise _too_few(count, n_steps, thin)
    return mean, m2 / (count - 1)
