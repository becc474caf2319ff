"""Sliding assimilation windows shared by 4D-Var, the iEnKS and 4D-EnVar.

A window covers ``span <= lag`` cycles after its start time. Each cycle the
method's forecast advances the current estimate; observations are collected
until ``shift`` of them are pending, then the method analyses the window at
its start (:meth:`WindowMethod.analyse_window`), and the analysed start is
propagated ``shift`` cycles to become the next window's start and to the end
of the window to give the current analysis. Each observation is assimilated
once, when it enters the window ("single data assimilation", Bocquet & Sakov
2014, sec. 2; DAPPER's ``iEnKS``/``Var4D`` cycling with ``shift=1``). With
``shift == lag`` the windows do not overlap (classical operational 4D-Var).
``lag=0`` (with ``shift=1``) puts the window start at the observation time:
no model inside the window, a filter (4D-Var becomes 3D-Var, the iEnKS an
iterative ETKF).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from hybrida.assimilation.base import AssimilationMethod, State, WindowState
from hybrida.models.base import Model
from hybrida.observations.base import Observation

__all__ = ["Window", "WindowMethod"]


@dataclass
class Window:
    """One assimilation window: where it starts and which observations lie in it.

    ``obs_steps[i]`` is the number of model steps from the window start
    (model time ``t_start``) to ``observations[i]``; ``end_steps`` the steps
    to the end of the window (the current time).
    """

    model: Model
    start: Tensor
    t_start: float
    observations: list[Observation]
    obs_steps: list[int]
    end_steps: int
    steps_per_cycle: int

    def trajectory(self, x0: Tensor, forcing: list[Tensor] | None = None) -> list[Tensor]:
        """Model states at each observation time from ``x0`` at the window start (differentiable).

        With ``forcing`` (weak-constraint 4D-Var), ``forcing[c]`` is added to
        the state at the end of cycle c (c = 0 .. end_steps/steps_per_cycle - 1):
        x_{c+1} = M(x_c) + eta_c (Tremolet 2006).
        """
        out = []
        x, step = x0, 0
        dt = self.model.dt
        for target in self.obs_steps:
            while step < target:
                x = self.model.step(x, self.t_start + step * dt)
                step += 1
                if forcing is not None and step % self.steps_per_cycle == 0:
                    x = x + forcing[step // self.steps_per_cycle - 1]
            out.append(x)
        return out


class WindowMethod(AssimilationMethod):
    """Base of methods that analyse a window of ``lag`` cycles at its start.

    Subclasses set :attr:`kind` ("deterministic" or "ensemble") and write
    :meth:`analyse_window`; the state they cycle is a
    :class:`~hybrida.assimilation.base.WindowState`. The model is the one the
    cycle forecasts with (recorded at each :meth:`forecast`), so a learned
    surrogate drives the window exactly as a physical model does.
    """

    def __init__(self, lag: int = 1, shift: int = 1):
        name = type(self).__name__
        for label, value, low in (("lag", lag, 0), ("shift", shift, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: {label} must be an integer >= {low}, got {value!r}")
        if shift > max(lag, 1):
            raise ValueError(f"{name}: shift ({shift}) must be <= lag ({lag}), or 1 when lag is 0")
        self.lag = lag
        self.shift = shift
        self.model: Model | None = None
        self.steps_per_cycle: int | None = None

    def initial_state(
        self, mean: Tensor, std: Tensor | float, generator: torch.Generator | None = None
    ) -> State:
        """The inner initial state (state or ensemble) as both window start and current estimate."""
        x = super().initial_state(mean, std, generator)
        return WindowState(current=x, start=x.clone(), t_start=0.0, span=0, pending=[])

    def check_window_state(self, state: State) -> WindowState:
        """Raise a clear error unless ``state`` is a :class:`WindowState`."""
        if not isinstance(state, WindowState):
            raise TypeError(
                f"{type(self).__name__}: state must be a WindowState (use method.initial_state), "
                f"got {type(state).__name__}"
            )
        return state

    def propagate(self, x: Tensor, n_steps: int, t0: float) -> Tensor:
        """Forecast ``x`` by ``n_steps`` model steps (no gradient is kept)."""
        with torch.no_grad():
            return self.model.forecast(x, n_steps, t0)

    def forecast(self, model: Model, state: State, n_steps: int, t0: float = 0.0) -> State:
        """Advance the current estimate by one cycle of ``n_steps``; the window start stays."""
        state = self.check_window_state(state)
        if self.steps_per_cycle is not None and n_steps != self.steps_per_cycle and state.span > 0:
            raise ValueError(
                f"{type(self).__name__}: cycles must have a fixed length, got {n_steps} steps "
                f"after {self.steps_per_cycle}"
            )
        self.model, self.steps_per_cycle = model, n_steps
        current = self.propagate(state.current, n_steps, t0)
        return replace(state, current=current, span=state.span + 1)

    def analyse(
        self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> State:
        """Collect ``obs``; once ``shift`` are pending, analyse the window and slide it."""
        prior = self.check_window_state(prior)
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__}: analyse needs a forecast first (it records the model)")
        pending = [*prior.pending, obs]
        if len(pending) < self.shift:
            return replace(prior, pending=pending)
        spc = self.steps_per_cycle
        if self.lag == 0:
            # window start at the observation time: no model inside the window
            window = Window(self.model, prior.current, t, pending, [0], 0, spc)
            x_a = self.analyse_window(window, generator).detach()
            return WindowState(current=x_a, start=x_a, t_start=t, span=0, pending=[])
        first = prior.span - len(pending) + 1
        window = Window(
            model=self.model,
            start=prior.start,
            t_start=prior.t_start,
            observations=pending,
            obs_steps=[(first + i) * spc for i in range(len(pending))],
            end_steps=prior.span * spc,
            steps_per_cycle=spc,
        )
        start_a = self.analyse_window(window, generator).detach()
        moved = max(0, prior.span + self.shift - self.lag)
        t_new = prior.t_start + moved * spc * self.model.dt
        new_start = self.propagate(start_a, moved * spc, prior.t_start) if moved else start_a
        current = self.propagate(new_start, (prior.span - moved) * spc, t_new)
        return WindowState(current=current, start=new_start, t_start=t_new, span=prior.span - moved, pending=[])

    @abstractmethod
    def analyse_window(self, window: Window, generator: torch.Generator | None) -> Tensor:
        """Analysis at the window start (state ``(n,)`` or ensemble ``(N, n)``) given its observations."""
