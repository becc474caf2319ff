"""3D-Var with a static climatological background covariance, solved iteratively."""

from __future__ import annotations

import torch
from torch import Tensor

from hybrida.assimilation.base import AssimilationMethod, State
from hybrida.assimilation.variational.climatology import check_climatology, check_positive, psd_sqrt
from hybrida.assimilation.variational.minimize import Linearization, gauss_newton
from hybrida.assimilation.variational.robust import RobustNorm, as_robust_norm, varqc_flags
from hybrida.observations.base import Observation

__all__ = ["ThreeDVar"]


def _robust_linearizer(whitened, rob: RobustNorm, G0: Tensor):
    """Linearisation of rho(r(v)) for an affine r with Jacobian ``G0``: value rho(r), Jacobian diag(rho'(r)) G0."""

    def lin(v: Tensor) -> Linearization:
        r = whitened(v)
        rho, drho = torch.func.jvp(rob.transform, (r,), (torch.ones_like(r),))
        G = drho.unsqueeze(-1) * G0
        return Linearization(rho, lambda w: G @ w, lambda u: u @ G, G)

    return lin


class ThreeDVar(AssimilationMethod):
    """3D-Var analysis xa = argmin 1/2|x - xb|^2_B^{-1} + 1/2|y - H(x)|^2_R^{-1}, B = xB * C_clim.

    Minimised in the control variable v with x = xb + B^{1/2} v (Lorenc 1986;
    Bannister 2008):

        J(v) = 1/2 |v|^2 + 1/2 |R^{-1/2}(y - H(xb + B^{1/2} v))|^2,

    by Gauss–Newton outer loops with conjugate-gradient inner solves
    (:func:`~hybrida.assimilation.variational.minimize.gauss_newton`); the
    Jacobian products of H come from autodiff, so nonlinear H works. For a
    linear H one outer loop reaches the BLUE. ``max_iter`` bounds the CG
    iterations of each outer loop, ``max_outer`` the outer loops (1 for a
    linear H), ``tol`` the relative gradient norm. B^{1/2} is the symmetric
    square root of B (eigendecomposition, once). DAPPER's ``Var3D`` (B from
    the truth's climatology times ``xB``) is the reference setup.

    Variational QC: ``robust`` (a :class:`~hybrida.assimilation.variational.robust.RobustNorm`,
    e.g. ``Huber(2.0)`` or ``GaussianFlat(0.05, 15)``) replaces 1/2|r|^2 by
    sum_i phi(r_i) through the residual transform rho(r) (1/2 rho^2 = phi);
    the residual is then nonlinear in v, so the Gauss–Newton loop relinearises
    (up to ``max_outer`` times) even for a linear H. It starts from the
    quadratic analysis, as VarQC is switched on only after the first
    iterations at ECMWF (Andersson & Järvinen 1999): a non-convex norm then
    picks the basin of the data-consistent solution, not of the background. The final VarQC weights
    are in :attr:`varqc_weights`, the flags (4 where weight < 0.5) from
    :meth:`analysis_flags`. With ``robust=None`` (default) nothing changes.
    """

    kind = "deterministic"
    needs_climatology = True

    def __init__(
        self,
        climatology: tuple[Tensor, Tensor],
        xB: float = 1.0,
        max_iter: int = 100,
        tol: float = 1e-10,
        max_outer: int = 10,
        robust: RobustNorm | dict | None = None,
    ):
        self.xB = check_positive("ThreeDVar: xB", xB)
        self.tol = check_positive("ThreeDVar: tol", tol)
        if int(max_iter) < 1 or int(max_outer) < 1:
            raise ValueError(f"ThreeDVar: max_iter and max_outer must be >= 1, got {max_iter}, {max_outer}")
        self.max_iter = int(max_iter)
        self.max_outer = int(max_outer)
        _, cov = check_climatology(climatology, "ThreeDVar")
        self.B = self.xB * cov
        self.B_sqrt = psd_sqrt(self.B)
        self.n = cov.shape[0]
        #: per-iteration costs of the last analysis: J at each outer iterate
        self.cost_history: list[float] = []
        #: quadratic-model cost after each CG iteration of the last analysis
        self.inner_cost_history: list[float] = []
        self._diag: dict[str, float] = {}
        self.robust = as_robust_norm(robust, "ThreeDVar: robust")
        #: VarQC weights psi(r)/r of the valid observations at the last analysis (robust only)
        self.varqc_weights: Tensor | None = None
        self._valid: Tensor | None = None

    def analyse(
        self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> State:
        """Minimise J(v) from v = 0 and return xb + B^{1/2} v*."""
        if not isinstance(prior, Tensor) or prior.shape != (self.n,):
            raise ValueError(f"ThreeDVar: prior must be a state tensor of shape ({self.n},)")
        self._valid = torch.isfinite(obs.y)
        self.varqc_weights = None
        obs = obs.valid()
        if obs.p == 0:
            self._diag = {"n_obs": 0.0}
            return prior
        xb = prior.detach()
        S = self.B_sqrt.to(xb)
        y = obs.y.to(xb)
        err = obs.error

        def whitened(v: Tensor) -> Tensor:
            return err.whiten(y - obs.H(xb + S @ v))

        rob = self.robust
        residual = whitened if rob is None else (lambda v: rob(whitened(v)))
        jac = linearizer = None
        if obs.matrix is not None:
            # linear H: the residual's Jacobian -R^{-1/2} H B^{1/2} is constant; form it once
            jac = -err.whiten((obs.matrix.to(xb) @ S).mT).mT
            if rob is not None:  # robust: diag(rho'(r)) times that constant Jacobian, per outer loop
                linearizer, jac = _robust_linearizer(whitened, rob, jac), None
        v0 = torch.zeros_like(xb)
        if rob is not None:  # VarQC starts from the quadratic analysis (Andersson & Järvinen 1999)
            v0 = self._quadratic(whitened, obs, err, S, xb)
        res = gauss_newton(
            residual,
            v0,
            max_outer=1 if jac is not None else self.max_outer,
            max_inner=self.max_iter,
            tol=self.tol,
            jacobian=jac,
            linearizer=linearizer,
        )
        self.cost_history = res.costs
        self.inner_cost_history = res.inner_costs
        self._diag = {
            "cost_initial": res.costs[0],
            "cost_final": res.costs[-1],
            "grad_norm": res.grad_norm,
            "n_outer": float(res.n_outer),
            "n_inner": float(res.n_inner),
            "n_obs": float(obs.p),
        }
        if rob is not None:
            with torch.no_grad():
                self.varqc_weights = rob.weight(whitened(res.v))
            self._diag["varqc_rejected"] = float((self.varqc_weights < 0.5).sum())
        return xb + S @ res.v

    def _quadratic(self, whitened, obs: Observation, err, S: Tensor, xb: Tensor) -> Tensor:
        """Minimiser v of the quadratic (non-robust) cost: the first guess of the VarQC minimisation."""
        jac = None if obs.matrix is None else -err.whiten((obs.matrix.to(xb) @ S).mT).mT
        res = gauss_newton(whitened, torch.zeros_like(xb), max_outer=1 if jac is not None else self.max_outer,
                           max_inner=self.max_iter, tol=self.tol, jacobian=jac)
        return res.v

    def analysis_flags(self, threshold: float = 0.5) -> Tensor | None:
        """int8 flags of the last analysis' observations: 0 good, 1 missing, 4 VarQC weight < ``threshold``.

        None before any analysis or without ``robust``.
        """
        if self._valid is None or self.robust is None:
            return None
        w = self.varqc_weights if self.varqc_weights is not None else torch.ones(0)
        return varqc_flags(w, self._valid, threshold)

    def diagnostics(self) -> dict[str, float]:
        """Initial/final cost, final gradient norm and iteration counts of the last analysis."""
        return dict(self._diag)
