"""Hybrid 3D-EnVar: variational analysis with B = beta B_s + (1 - beta) L ∘ P_e, ensemble cycled.

The mean comes from minimising, in the alpha control variables of
:class:`~hybrida.assimilation.variational.hybridcov.HybridControl`
(Lorenc 2003; Buehner 2005),

    J(v, alpha) = 1/2 |v|^2 + 1/2 sum_i |alpha_i|^2 + 1/2 |R^{-1/2}(y - H(x_b + dx(v, alpha)))|^2,

by Gauss–Newton outer loops with conjugate-gradient inner loops. The
analysis anomalies come from an ensemble square-root update of the prior
anomalies (ETKF, Hunt et al. 2007, or LETKF with the same ``loc_rad``),
recentred on the EnVar mean and inflated by ``infl``, as operational hybrids
recentre their EnKF ensemble on the hybrid analysis (e.g. Wang et al. 2013;
Buehner et al. 2013).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hybrida.assimilation.base import AssimilationMethod, State
from hybrida.assimilation.ensemble.base import observed_anomalies
from hybrida.assimilation.ensemble.etkf import etkf_transform
from hybrida.assimilation.ensemble.letkf import LETKF
from hybrida.assimilation.variational.climatology import check_climatology, check_positive, psd_sqrt
from hybrida.assimilation.variational.dfs import dfs_from_jacobian
from hybrida.assimilation.variational.hybridcov import HybridControl, localization_sqrt
from hybrida.assimilation.variational.minimize import gauss_newton
from hybrida.observations.base import Observation

__all__ = ["HybridEnVar", "VarResult", "check_envar_params", "minimise"]

#: accepted values of ``perturbations``
PERTURBATIONS = ("etkf", "letkf")
#: the exact dfs needs the (p, size) Jacobian: skipped (NaN) above this many entries
DFS_MAX_ENTRIES = 2**24


@dataclass
class VarResult:
    """Minimiser of J(c) = 1/2 |c|^2 + 1/2 |r(c)|^2 with its history."""

    c: Tensor
    #: J at v0 and after every inner (CG) iteration; at each new outer iterate the true J
    cost_per_iteration: list[float] = field(default_factory=list)
    #: |grad J| likewise (inner entries: gradient of the Gauss–Newton quadratic model)
    grad_norm_per_iteration: list[float] = field(default_factory=list)
    grad_norm: float = math.inf
    n_outer: int = 0
    n_inner: int = 0


def minimise(
    residual: Callable[[Tensor], Tensor],
    c0: Tensor,
    jacobian: Tensor | None = None,
    max_outer: int = 10,
    max_inner: int = 100,
    tol: float = 1e-10,
) -> VarResult:
    """Minimise 1/2 |c|^2 + 1/2 |r(c)|^2 by Gauss–Newton + CG, keeping every inner iteration.

    :func:`~hybrida.assimilation.variational.minimize.gauss_newton`
    (Courtier et al. 1994) with its per-CG-iteration history as the result's
    ``cost_per_iteration`` / ``grad_norm_per_iteration``. ``jacobian``
    (constant, affine r) replaces the autodiff products by matrix products.
    """
    res = gauss_newton(residual, c0, max_outer=max_outer, max_inner=max_inner, tol=tol, jacobian=jacobian)
    return VarResult(
        res.v, list(res.history_costs), list(res.history_grad_norms), res.grad_norm, res.n_outer, res.n_inner
    )


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_envar_params(
    owner: str, N: int, beta: float, loc_rad: float | None, infl: float, perturbations: str,
    max_iter: int, max_outer: int, tol: float,
) -> tuple[int, float, float | None, float]:
    """Validated (N, beta, loc_rad, infl), or a ValueError naming the bad parameter."""
    N = _check_int(f"{owner}: N", N, 2)
    beta = float(beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"{owner}: beta must lie in [0, 1], got {beta}")
    if loc_rad is not None:
        if isinstance(loc_rad, bool):
            raise ValueError(f"{owner}: loc_rad must be a number > 0 or None, got {loc_rad!r}")
        loc_rad = float(loc_rad)
        if not (math.isfinite(loc_rad) and loc_rad > 0):
            raise ValueError(f"{owner}: loc_rad must be finite and > 0 (or None), got {loc_rad}")
    infl = float(infl)
    if not (math.isfinite(infl) and infl > 0):
        raise ValueError(f"{owner}: infl must be finite and > 0, got {infl}")
    if perturbations not in PERTURBATIONS:
        raise ValueError(
            f"{owner}: unknown perturbations {perturbations!r}; choose one of: {', '.join(PERTURBATIONS)}"
        )
    if perturbations == "letkf" and loc_rad is None:
        raise ValueError(f"{owner}: perturbations='letkf' needs a loc_rad")
    _check_int(f"{owner}: max_iter", max_iter, 1)
    _check_int(f"{owner}: max_outer", max_outer, 1)
    check_positive(f"{owner}: tol", tol)
    return N, beta, loc_rad, infl


class HybridEnVar(AssimilationMethod):
    """Hybrid 3D-EnVar: mean from J(v, alpha) with B = beta xB C_clim + (1 - beta) L ∘ P_e.

    Parameters: ensemble size ``N``; ``climatology`` (mean, cov) from the
    builder; ``xB`` scales the static B_s = xB C_clim (as in
    :class:`~hybrida.assimilation.variational.ThreeDVar`); ``beta`` in [0, 1]
    is the weight of B_s (1: 3D-Var with the ensemble mean as background,
    0: pure localized-ensemble EnVar); ``loc_rad`` localizes P_e in model
    space with the Gaspari–Cohn taper of half-width 1.82 loc_rad (None: no
    localization); ``infl`` multiplies the posterior anomalies;
    ``perturbations`` picks the square-root update giving the anomalies
    ("etkf": global ETKF transform of the prior anomalies; "letkf": the LETKF
    with R-localization radius ``loc_rad``), recentred on the EnVar mean.
    ``max_iter`` bounds each CG inner loop, ``max_outer`` the Gauss–Newton
    outer loops (one suffices for a linear H), ``tol`` the relative gradient
    norm; ``dfs=False`` skips the tr(HK) diagnostic.

    With linear H the mean is the BLUE with the hybrid B; beta = 0 without
    localization gives the ETKF (Kalman, P = P_e) mean (Lorenc 2003; Wang et
    al. 2007 show the equivalence of the alpha control variable with L ∘ P_e).
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
        max_iter: int = 100,
        max_outer: int = 10,
        tol: float = 1e-10,
        dfs: bool = True,
    ):
        name = type(self).__name__
        self.N, self.beta, self.loc_rad, self.infl = check_envar_params(
            name, N, beta, loc_rad, infl, perturbations, max_iter, max_outer, tol
        )
        self.xB = check_positive(f"{name}: xB", xB)
        if not isinstance(dfs, bool):
            raise ValueError(f"{name}: dfs must be True or False, got {dfs!r}")  # noqa: TRY004
        self.perturbations = perturbations
        self.max_iter, self.max_outer, self.tol = max_iter, max_outer, float(tol)
        self.compute_dfs = dfs
        _, cov = check_climatology(climatology, name)
        self.n = cov.shape[0]
        static_sqrt = psd_sqrt(self.xB * cov)  # same square root as ThreeDVar
        loc = localization_sqrt(self.n, self.loc_rad) if self.loc_rad is not None else None
        self.control = HybridControl(static_sqrt, self.beta, self.N, loc)
        self._letkf = (
            LETKF(self.N, self.loc_rad, solver="eigh") if perturbations == "letkf" else None
        )
        self._diag: dict[str, float | list[float]] = {}

    def check_prior(self, prior: State) -> Tensor:
        """Raise a clear error unless ``prior`` is a floating ensemble ``(N, n)``."""
        name = type(self).__name__
        if not isinstance(prior, Tensor) or prior.shape != (self.N, self.n):
            shape = tuple(prior.shape) if isinstance(prior, Tensor) else type(prior).__name__
            raise ValueError(f"{name}: prior must be an ensemble of shape ({self.N}, {self.n}), got {shape}")
        if not prior.is_floating_point():
            raise ValueError(f"{name}: prior must be a floating-point tensor, got {prior.dtype}")
        return prior

    def mean_analysis(self, xb: Tensor, A: Tensor, obs: Observation) -> Tensor:
        """The hybrid variational analysis mean from background ``xb`` (n,) and anomalies ``A`` (N, n)."""
        return xb + self.control.increment(self.solve([xb], [A], [obs]), A)

    def solve(self, xbs: list[Tensor], As: list[Tensor], observations: list[Observation]) -> Tensor:
        """Optimal control c* of J for observations at T times (4D-EnVar when T > 1).

        The background at observation time k is ``xbs[k]`` (n,) with anomalies
        ``As[k]`` (N, n); the increment there is U(A_k) c (static part constant
        in time, no tangent-linear model; Liu et al. 2008, Buehner et al. 2010).
        The observations must be valid (no NaN); costs and dfs are recorded.
        """
        U = self.control
        like = xbs[0]
        ys = [o.y.to(like) for o in observations]

        def residual(c: Tensor) -> Tensor:
            parts = [
                o.error.whiten(y - o.H(xb + U.increment(c, A)))
                for o, y, xb, A in zip(observations, ys, xbs, As)
            ]
            return torch.cat(parts, -1)

        jac = None
        if all(o.matrix is not None for o in observations):
            # linear H: the residual's Jacobian -R^{-1/2} H U(A_k) is constant; form it once
            jac = torch.cat(
                [-o.error.whiten(U.matrix(A, o.matrix).mT).mT for o, A in zip(observations, As)], 0
            )
        c0 = torch.zeros(U.size, dtype=like.dtype, device=like.device)
        res = minimise(
            residual, c0, jac, 1 if jac is not None else self.max_outer, self.max_iter, self.tol
        )
        self._record(res, sum(o.p for o in observations), self._dfs(res.c, residual, jac))
        return res.c

    def _dfs(self, c: Tensor, residual: Callable[[Tensor], Tensor], jac: Tensor | None) -> float:
        if not self.compute_dfs:
            return math.nan
        if jac is None:
            p = residual(c).shape[-1]
            if p * c.numel() > DFS_MAX_ENTRIES:
                return math.nan
            jac = torch.func.jacrev(residual)(c)  # linearised at the analysis
        return dfs_from_jacobian(jac)  # tr(HK) = sum s^2/(1+s^2), Cardinali et al. 2004

    def _record(self, res: VarResult, p: int, dfs: float) -> None:
        self._diag = {
            "cost_initial": res.cost_per_iteration[0],
            "cost_final": res.cost_per_iteration[-1],
            "grad_norm": res.grad_norm,
            "n_outer": float(res.n_outer),
            "n_inner": float(res.n_inner),
            "n_obs": float(p),
            "dfs": dfs,
            "cost_per_iteration": list(res.cost_per_iteration),
            "grad_norm_per_iteration": list(res.grad_norm_per_iteration),
        }

    def analysis_anomalies(self, E: Tensor, obs: Observation) -> Tensor:
        """Posterior anomalies (N, n): ETKF or LETKF square-root update of the prior anomalies."""
        if self._letkf is not None:
            Ea = self._letkf.analyse(E, obs)
            return Ea - Ea.mean(-2, keepdim=True)
        S, d, _ = observed_anomalies(E, obs)
        _, T = etkf_transform(S, d)
        return T @ (E - E.mean(-2, keepdim=True))

    def analyse(
        self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """Posterior ensemble: EnVar mean + infl * square-root-updated prior anomalies."""
        E = self.check_prior(prior).detach()
        obs = obs.valid()
        if obs.p == 0:
            self._diag = {"n_obs": 0.0}
            return prior
        xb = E.mean(-2)
        A = E - xb
        xa = self.mean_analysis(xb, A, obs)
        Aa = self.analysis_anomalies(E, obs)
        return xa + self.infl * Aa

    def diagnostics(self) -> dict[str, float | list[float]]:
        """Costs, gradient norm, iteration counts, n_obs, dfs and per-iteration histories of the last analysis."""
        return dict(self._diag)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(N={self.N}, xB={self.xB}, beta={self.beta}, loc_rad={self.loc_rad}, "
            f"infl={self.infl}, perturbations='{self.perturbations}')"
        )
