"""Variational bias correction (VarBC): bias coefficients beta in the 3D-Var control vector.

The cycled state is z = [x, beta]; the analysis minimises (Derber & Wu 1998;
Dee 2004; Auligné, McNally & Dee 2007)

    J(v, w) = 1/2 |v|^2 + 1/2 |w|^2 + 1/2 |R^{-1/2}(y - H(x) - P(x_b) beta)|^2,
    x = x_b + B^{1/2} v,   beta = beta_b + B_beta^{1/2} w,

with beta_b the previous analysis of the coefficients (persisted by the
forecast) and B_beta = diag(beta_std^2) their background variance. Predictors
P are evaluated at the background (as operational VarBC does), so for a linear
H the problem is linear in (v, w) and one Gauss–Newton iteration gives the
BLUE of the augmented problem. ThreeDVar itself is left untouched: this is its
control-variable transform with the extra block, solved by the same
:func:`~hybrida.assimilation.variational.minimize.gauss_newton`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hybrida.assimilation.base import AssimilationMethod, State
from hybrida.assimilation.variational.climatology import check_climatology, check_positive, psd_sqrt
from hybrida.assimilation.variational.minimize import gauss_newton
from hybrida.models.base import Model
from hybrida.observations.base import Observation
from hybrida.observations.bias import BiasPredictors, LinearBias

__all__ = ["VarBC3D"]


class VarBC3D(AssimilationMethod):
    """3D-Var with variational bias correction on the cycled state z = [x (n), beta (m)].

    ``predictors`` define P(x) (:class:`~hybrida.observations.bias.BiasPredictors`,
    m = channels x predictors coefficients); ``beta_std`` is B_beta^{1/2}
    (a number or one value per coefficient), ``beta0`` the first guess of beta
    (zeros). B = ``xB`` x climatological covariance as in
    :class:`~hybrida.assimilation.variational.threedvar.ThreeDVar`.
    """

    kind = "deterministic"
    needs_climatology = True

    def __init__(
        self,
        climatology: tuple[Tensor, Tensor],
        predictors: BiasPredictors,
        xB: float = 1.0,
        beta_std: float | Tensor = 0.1,
        beta0: Tensor | None = None,
        max_iter: int = 100,
        max_outer: int = 10,
        tol: float = 1e-10,
    ):
        self.xB = check_positive("VarBC3D: xB", xB)
        self.tol = check_positive("VarBC3D: tol", tol)
        if int(max_iter) < 1 or int(max_outer) < 1:
            raise ValueError(f"VarBC3D: max_iter and max_outer must be >= 1, got {max_iter}, {max_outer}")
        self.max_iter, self.max_outer = int(max_iter), int(max_outer)
        _, cov = check_climatology(climatology, "VarBC3D")
        self.n = cov.shape[0]
        self.B = self.xB * cov
        self.B_sqrt = psd_sqrt(self.B)
        self.predictors = predictors
        self.m = predictors.n_coefficients
        std = torch.as_tensor(beta_std, dtype=cov.dtype).expand(self.m).clone()
        if not bool(torch.isfinite(std).all()) or bool((std <= 0).any()):
            raise ValueError(f"VarBC3D: beta_std must be finite and > 0, got {beta_std}")
        self.beta_std = std
        self.beta0 = torch.zeros(self.m, dtype=cov.dtype) if beta0 is None else torch.as_tensor(beta0).to(cov)
        if self.beta0.shape != (self.m,):
            raise ValueError(f"VarBC3D: beta0 must have shape ({self.m},), got {tuple(self.beta0.shape)}")
        self._diag: dict[str, float] = {}

    def initial_state(
        self, mean: Tensor, std: Tensor | float, generator: torch.Generator | None = None
    ) -> State:
        """[mean, beta0]."""
        return torch.cat((mean.clone(), self.beta0.to(mean)))

    def forecast(self, model: Model, state: State, n_steps: int, t0: float = 0.0) -> State:
        """Forecast x; the coefficients persist (beta_b of the next cycle = beta_a)."""
        x, beta = state[..., : self.n], state[..., self.n :]
        return torch.cat((model.forecast(x, n_steps, t0), beta), -1)

    def bias_model(self, state: Tensor) -> LinearBias:
        """The linear bias model with the coefficients of ``state``."""
        return LinearBias(self.predictors, state[self.n :].detach())

    def analyse(
        self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> State:
        """Minimise J(v, w) from (0, 0); return [x_a, beta_a]."""
        if not isinstance(prior, Tensor) or prior.shape != (self.n + self.m,):
            raise ValueError(f"VarBC3D: prior must be an augmented state of shape ({self.n + self.m},)")
        obs = obs.valid()
        if obs.p == 0:
            self._diag = {"n_obs": 0.0}
            return prior
        z = prior.detach()
        xb, beta_b = z[: self.n], z[self.n :]
        S, sb = self.B_sqrt.to(xb), self.beta_std.to(xb)
        y, err = obs.y.to(xb), obs.error
        P = self.predictors.design(obs, obs.H(xb)).detach()
        n = self.n

        def residual(u: Tensor) -> Tensor:
            return err.whiten(y - obs.H(xb + S @ u[:n]) - P @ (beta_b + sb * u[n:]))

        jac = None
        if obs.matrix is not None:  # affine residual: its Jacobian -R^{-1/2} [H B^{1/2}, P B_beta^{1/2}]
            jac = -err.whiten(torch.cat((obs.matrix.to(xb) @ S, P * sb), -1).mT).mT
        res = gauss_newton(
            residual,
            z.new_zeros(n + self.m),
            max_outer=1 if jac is not None else self.max_outer,
            max_inner=self.max_iter,
            tol=self.tol,
            jacobian=jac,
        )
        beta_a = beta_b + sb * res.v[n:]
        self._diag = {
            "cost_initial": res.costs[0],
            "cost_final": res.costs[-1],
            "n_inner": float(res.n_inner),
            "n_obs": float(obs.p),
            **{f"beta_{i}": float(b) for i, b in enumerate(beta_a)},
        }
        return torch.cat((xb + S @ res.v[:n], beta_a))

    def diagnostics(self) -> dict[str, float]:
        """Costs, iteration count, n_obs and the analysed coefficients ``beta_i``."""
        return dict(self._diag)
