"""3D-Var with a static climatological background covariance, solved iteratively."""

from __future__ import annotations

import torch
from torch import Tensor

from hybrida.assimilation.base import AssimilationMethod, State
from hybrida.assimilation.variational.climatology import check_climatology, check_positive, psd_sqrt
from hybrida.assimilation.variational.minimize import gauss_newton
from hybrida.observations.base import Observation

__all__ = ["ThreeDVar"]


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

    def analyse(
        self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> State:
        """Minimise J(v) from v = 0 and return xb + B^{1/2} v*."""
        if not isinstance(prior, Tensor) or prior.shape != (self.n,):
            raise ValueError(f"ThreeDVar: prior must be a state tensor of shape ({self.n},)")
        obs = obs.valid()
        if obs.p == 0:
            self._diag = {"n_obs": 0.0}
            return prior
        xb = prior.detach()
        S = self.B_sqrt.to(xb)
        y = obs.y.to(xb)
        err = obs.error

        def residual(v: Tensor) -> Tensor:
            return err.whiten(y - obs.H(xb + S @ v))

        jac = None
        if obs.matrix is not None:
            # linear H: the residual's Jacobian -R^{-1/2} H B^{1/2} is constant; form it once
            jac = -err.whiten((obs.matrix.to(xb) @ S).mT).mT
        res = gauss_newton(
            residual,
            torch.zeros_like(xb),
            max_outer=1 if jac is not None else self.max_outer,
            max_inner=self.max_iter,
            tol=self.tol,
            jacobian=jac,
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
        return xb + S @ res.v

    def diagnostics(self) -> dict[str, float]:
        """Initial/final cost, final gradient norm and iteration counts of the last analysis."""
        return dict(self._diag)
