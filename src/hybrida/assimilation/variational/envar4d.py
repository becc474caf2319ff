"""Hybrid 4D-EnVar: the hybrid EnVar over an assimilation window, with ensemble trajectories as 4D covariance.

Over a window starting at t_0 with observations at t_1..t_K, the increment
at t_k is built from the same control variables for every time,

    dx(t_k) = sqrt(beta) B_s^{1/2} v + sqrt(1 - beta)/sqrt(N-1) sum_i (L^{1/2} alpha_i) ∘ a_i(t_k),

with a_i(t_k) the anomalies of the ensemble forecast from the window start:
the flow-dependent time correlations come from the ensemble trajectories,
no tangent-linear or adjoint model is needed (Liu et al. 2008; Buehner et
al. 2010; Lorenc et al. 2015), and the static part is constant over the
window (as in operational hybrid-4DEnVar). The analysis is the window-start
increment dx(t_0); its anomalies come from the 4D ETKF/LETKF transform,
whose weights use the observed trajectory anomalies at every time (Hunt et
al. 2004, 2007), applied to the window-start anomalies.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hybrida.assimilation.variational.envar import HybridEnVar
from hybrida.assimilation.window import Window, WindowMethod
from hybrida.observations.base import Observation
from hybrida.observations.errors import CorrelatedError, DiagonalError, ErrorModel

__all__ = ["HybridEnVar4D", "window_observation"]


def window_observation(window: Window, observations: list[Observation], obs_steps: list[int]) -> Observation:
    """All ``observations`` of a window as one observation of the window-start state.

    Its operator maps a start state (or ensemble) x_0 to
    [H_1(M_{0→1}(x_0)), ..., H_K(M_{0→K}(x_0))] through the window's model, its
    error is block-diagonal (diagonal when every block is) and its locations
    are the concatenated locations (None if any is missing): an ensemble
    square-root update with it is the 4D-(L)ETKF of Hunt et al. (2004).
    """
    sub = Window(
        window.model, window.start, window.t_start, observations, obs_steps,
        window.end_steps, window.steps_per_cycle,
    )

    def operator(x: Tensor) -> Tensor:
        states = sub.trajectory(x)
        return torch.cat([o.H(s) for o, s in zip(observations, states)], -1)

    error: ErrorModel
    if all(isinstance(o.error, DiagonalError) for o in observations):
        error = DiagonalError(torch.cat([o.error.variance for o in observations]))
    else:
        error = CorrelatedError(torch.block_diag(*[o.error.cov for o in observations]))
    locs = [o.locations for o in observations]
    return Observation(
        y=torch.cat([o.y for o in observations]),
        operator=operator,
        error=error,
        locations=None if any(loc is None for loc in locs) else torch.cat(locs),
        matrix=None,
    )


class HybridEnVar4D(WindowMethod):
    """Hybrid 4D-EnVar over sliding windows of ``lag`` cycles (analysis at the window start).

    Same parameters as :class:`~hybrida.assimilation.variational.envar.HybridEnVar`
    (``N``, ``climatology``, ``xB``, ``beta``, ``loc_rad``, ``infl``,
    ``perturbations``, solver settings, ``dfs``) plus the window ``lag`` and
    ``shift`` of :class:`~hybrida.assimilation.window.WindowMethod`. The
    background at each observation time is the mean of the ensemble forecast
    from the window start. ``lag=0`` is the 3D hybrid EnVar.
    """

    kind = "ensemble"
    needs_climatology = True

    def __init__(
        self,
        N: int,
        climatology: tuple[Tensor, Tensor],
        xB: float = 1.0,
        beta: float = 0.5,
        loc_rad: float | None = None,
        infl: float = 1.0,
        perturbations: str = "etkf",
        lag: int = 1,
        shift: int = 1,
        max_iter: int = 100,
        max_outer: int = 10,
        tol: float = 1e-10,
        dfs: bool = True,
    ):
        super().__init__(lag=lag, shift=shift)
        self.core = HybridEnVar(
            N, climatology, xB=xB, beta=beta, loc_rad=loc_rad, infl=infl, perturbations=perturbations,
            max_iter=max_iter, max_outer=max_outer, tol=tol, dfs=dfs,
        )
        self.N = self.core.N
        self.n = self.core.n

    def analyse_window(self, window: Window, generator: torch.Generator | None) -> Tensor:
        """Analysis ensemble (N, n) at the window start from all the window's observations."""
        E0 = self.core.check_prior(window.start).detach()
        keep = [(o.valid(), s) for o, s in zip(window.observations, window.obs_steps)]
        keep = [(o, s) for o, s in keep if o.p > 0]
        if not keep:
            self.core._diag = {"n_obs": 0.0}
            return E0
        observations, steps = [o for o, _ in keep], [s for _, s in keep]
        sub = Window(
            window.model, E0, window.t_start, observations, steps, window.end_steps, window.steps_per_cycle
        )
        with torch.no_grad():
            states = sub.trajectory(E0)
        xbs = [E.mean(-2) for E in states]
        As = [E - xb for E, xb in zip(states, xbs)]
        c = self.core.solve(xbs, As, observations)
        x0 = E0.mean(-2)
        A0 = E0 - x0
        xa0 = x0 + self.core.control.increment(c, A0)
        with torch.no_grad():
            Aa0 = self.core.analysis_anomalies(E0, window_observation(window, observations, steps))
        return xa0 + self.core.infl * Aa0

    def diagnostics(self) -> dict[str, float | list[float]]:
        """The diagnostics of the last window analysis (see HybridEnVar.diagnostics)."""
        return self.core.diagnostics()

    def __repr__(self) -> str:
        c = self.core
        return (
            f"HybridEnVar4D(N={c.N}, xB={c.xB}, beta={c.beta}, loc_rad={c.loc_rad}, infl={c.infl}, "
            f"perturbations='{c.perturbations}', lag={self.lag}, shift={self.shift})"
        )
