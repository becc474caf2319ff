"""Iterative ensemble Kalman smoother: Gauss–Newton in ensemble space over a sliding window.

Normalisation (that of :mod:`hybrida.assimilation.ensemble.etkf`): with the
window-start ensemble E₀ ``(N, n)``, mean x̄₀ and anomalies A₀ = E₀ - x̄₀, a
state of the window start is x₀(w) = x̄₀ + A₀ᵀ w / √(N-1), so the prior of the
control vector w ∈ R^N is N(0, I) and the cost is

    J(w) = ½ |w|² + ½ Σ_k |R_k^{-1/2} (y_k - H_k(M_{0→k}(x₀(w))))|²

over the new observations y_k of the window. Each Gauss–Newton iteration
propagates an ensemble built around x₀(w) through the window, takes the whitened
observed anomalies Y (rows = members, divided by √(N-1)) of all its new
observations, maps them back to sensitivities to w (S = T⁻¹ Y in the transform
variant, S = Y / ε in the bundle variant) and solves the N×N normal equations

    (I + S Sᵀ) Δw = S d - w,     d = R^{-1/2} (y - mean H(M(ensemble))).

The analysis at the window start is x̄₀ + A₀ᵀ w* / √(N-1) + T A₀ with the
symmetric square root T = (I + S Sᵀ)^{-1/2} of the last iteration: with one
iteration and an empty window (``lag=0``) this is exactly the ETKF.

* ``variant="transform"``: the ensemble propagated is x₀(w) + T A₀ (T of the
  previous iteration, I at the first), so it already has the posterior's shape,
  and S = T⁻¹ Y "de-conditions" the observed anomalies (Sakov, Oliver &
  Bertino 2012, IEnKF; Bocquet & Sakov 2014, iEnKS; DAPPER ``iEnKS('Sqrt')``).
* ``variant="bundle"``: the ensemble propagated is x₀(w) + ε A₀, a finite-difference
  bundle, and S = Y / ε (Bocquet & Sakov 2012; Sakov et al. 2012, bundle IEnKF).

Cycling (single data assimilation with ``shift``) is that of
:class:`~hybrida.assimilation.window.WindowMethod`. Multiplicative inflation
``infl`` and, with ``rot=True``, a random mean-preserving rotation are applied
to the posterior anomalies at the window start, as DAPPER's ``iEnKS`` does.
Convergence: iterations stop after ``n_iter`` or once |Δw| < ``wtol`` (the
2-norm of the step in w, whose prior is N(0, I)); DAPPER's ``wtol`` (on its
unnormalised w, test ``|Δw|² < wtol·N``) corresponds to √(wtol·N·(N-1)) here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.assimilation.base import State
from hybrida.assimilation.ensemble.base import _check_positive_int
from hybrida.assimilation.ensemble.inflation import inflate_multiplicative
from hybrida.assimilation.ensemble.rotation import rotate_anomalies
from hybrida.assimilation.window import Window, WindowMethod
from hybrida.observations.base import Observation

__all__ = ["IEnKS", "window_sensitivities"]

VARIANTS = ("transform", "bundle")


def window_sensitivities(
    trajectory: list[Tensor], observations: list[Observation], scale: float
) -> tuple[Tensor, Tensor]:
    """Whitened observed anomalies ``(N, p)`` and innovations ``(p,)`` of a propagated ensemble.

    ``trajectory[i]`` is the ensemble ``(N, n)`` at the time of the (already
    NaN-free) ``observations[i]``; the anomalies of every observation in the
    window are R^{-1/2}(H(x_j) - mean H(x)) / ``scale`` side by side, and the
    innovations R^{-1/2}(y - mean H(x)).
    """
    Y, d = [], []
    for E, obs in zip(trajectory, observations):
        if obs.p == 0:
            continue
        HE = obs.H(E)
        if HE.shape != (E.shape[0], obs.p):
            raise ValueError(
                f"observation operator returned shape {tuple(HE.shape)}, expected {(E.shape[0], obs.p)}"
            )
        ym = HE.mean(0)
        Y.append(obs.error.whiten(HE - ym) / scale)
        d.append(obs.error.whiten(obs.y.to(E) - ym))
    return torch.cat(Y, -1), torch.cat(d, -1)


class IEnKS(WindowMethod):
    """Iterative ensemble Kalman smoother (Bocquet & Sakov 2014), transform or bundle variant.

    With ``lag=1`` (the default, as DAPPER) it is the iterative EnKF of Sakov,
    Oliver & Bertino (2012); with ``lag=0`` an iterative ETKF at the
    observation time. See the module docstring for the equations.
    """

    kind = "ensemble"

    def __init__(
        self,
        N: int,
        lag: int = 1,
        shift: int = 1,
        infl: float = 1.0,
        rot: bool = False,
        n_iter: int = 10,
        wtol: float = 0.0,
        variant: str = "transform",
        epsilon: float = 1e-4,
    ):
        name = type(self).__name__
        super().__init__(lag=lag, shift=shift)
        self.N = _check_positive_int(f"{name}: N", N, 2)
        self.n_iter = _check_positive_int(f"{name}: n_iter", n_iter, 1)
        infl = float(infl)
        if not (math.isfinite(infl) and infl > 0):
            raise ValueError(f"{name}: infl must be a finite number > 0, got {infl}")
        self.infl = infl
        if not isinstance(rot, bool):
            raise ValueError(f"{name}: rot must be True or False, got {rot!r}")  # noqa: TRY004
        self.rot = rot
        wtol = float(wtol)
        if not (math.isfinite(wtol) and wtol >= 0):
            raise ValueError(f"{name}: wtol must be a finite number >= 0, got {wtol}")
        self.wtol = wtol
        if variant not in VARIANTS:
            raise ValueError(f"{name}: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.variant = variant
        epsilon = float(epsilon)
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"{name}: epsilon must be a finite number > 0, got {epsilon}")
        self.epsilon = epsilon
        self._diag: dict[str, float | list[float]] = {}

    def check_ensemble(self, E: Tensor) -> Tensor:
        """Raise a clear error unless ``E`` is a floating ensemble ``(N, n)`` with N members."""
        name = type(self).__name__
        if not isinstance(E, Tensor) or E.ndim != 2 or not E.is_floating_point():
            shape = tuple(E.shape) if isinstance(E, Tensor) else type(E).__name__
            raise ValueError(f"{name}: the window start must be a floating ensemble (N, n), got {shape}")
        if E.shape[0] != self.N:
            raise ValueError(f"{name}: ensemble has {E.shape[0]} members, method was built with N={self.N}")
        return E

    def analyse(
        self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> State:
        """Collect ``obs`` and analyse the window when due; diagnostics are empty on other cycles."""
        self._diag = {}
        return super().analyse(prior, obs, t, generator)

    def analyse_window(self, window: Window, generator: torch.Generator | None) -> Tensor:
        """Analysed ensemble ``(N, n)`` at the window start (Gauss–Newton on J(w), then infl/rot)."""
        E0 = self.check_ensemble(window.start)
        observations = [obs.valid() for obs in window.observations]
        n_obs = sum(obs.p for obs in observations)
        self._diag = {"n_obs": float(n_obs)}
        if n_obs == 0:
            return E0  # nothing to assimilate: no analysis, hence no inflation (as EnsembleMethod)
        N = self.N
        sq = math.sqrt(N - 1)
        xm = E0.mean(0)
        A = E0 - xm
        eye = torch.eye(N, dtype=E0.dtype, device=E0.device)
        w = torch.zeros(N, dtype=E0.dtype, device=E0.device)
        T, T_inv = eye, eye
        transform = self.variant == "transform"
        costs, grads = [], []
        for _ in range(self.n_iter):
            x0 = xm + (w @ A) / sq
            E = x0 + (T @ A if transform else self.epsilon * A)
            with torch.no_grad():
                traj = window.trajectory(E)
            Y, d = window_sensitivities(traj, observations, sq)
            S = T_inv @ Y if transform else Y / self.epsilon
            grad = w - S @ d
            lam, V = torch.linalg.eigh(S @ S.mT + eye)
            dw = -(V @ ((V.mT @ grad) / lam))
            costs.append(0.5 * float(w @ w + d @ d))
            grads.append(float(torch.linalg.vector_norm(grad)))
            T = (V * lam.rsqrt()) @ V.mT
            T_inv = (V * lam.sqrt()) @ V.mT
            w = w + dw
            if float(torch.linalg.vector_norm(dw)) < self.wtol:
                break
        resid = d - S.mT @ dw  # Gauss–Newton (quadratic) model of the cost at the final w
        self._diag.update(
            n_iter=float(len(costs)),
            cost_initial=costs[0],
            cost_final=0.5 * float(w @ w + resid @ resid),
            dfs=float((1.0 - 1.0 / lam).sum()),
            cost_per_iteration=costs,
            grad_norm_per_iteration=grads,
        )
        Ea = xm + (w @ A) / sq + T @ A
        Ea = inflate_multiplicative(Ea, self.infl)
        return rotate_anomalies(Ea, generator) if self.rot else Ea

    def diagnostics(self) -> dict[str, float | list[float]]:
        """n_obs, n_iter, cost_initial, cost_final, dfs; cost and |∇J| per iteration (lists)."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._diag.items()}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(N={self.N}, lag={self.lag}, shift={self.shift}, infl={self.infl}, "
            f"rot={self.rot}, n_iter={self.n_iter}, wtol={self.wtol}, variant={self.variant!r}"
            + (f", epsilon={self.epsilon}" if self.variant == "bundle" else "")
            + ")"
        )
