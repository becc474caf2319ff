"""Online learning of a model-error correction, cycle by cycle, together with the state.

(a) :class:`OnlineCorrectionEnsemble`: an ensemble filter on the augmented state
    z = [x, theta] where theta are the weights of a small translation-invariant
    correction (:class:`~hybrida.learn.correction.PolyConv`); each member runs the
    hybrid model with its own weights and the inner ETKF updates x and theta
    through their sampled cross-covariance (Bocquet, Farchi & Malartic 2021;
    Brajard et al. 2021 discuss the same augmented approach), with parameter
    inflation to keep the weights adaptable (Ruiz, Pulido & Miyoshi 2013).
(b) :func:`weak4dvar_online`: weak-constraint 4D-Var over consecutive windows
    with the correction weights in the control vector (Farchi et al. 2023), the
    weights' analysis of one window being the background of the next.

Both can start from an offline-trained correction (transfer learning).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hybrida.assimilation.base import State
from hybrida.assimilation.ensemble.augmented import AugmentedEnsemble
from hybrida.models.base import Model
from hybrida.models.corrected import KINDS, CorrectedModel
from hybrida.nn import PolyConv
from hybrida.observations.base import Observation

__all__ = ["OnlineCorrectionEnsemble", "OnlineVarResult", "weak4dvar_online"]


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"OnlineCorrectionEnsemble: {name} must be a finite number > 0, got {value}")
    return value


class OnlineCorrectionEnsemble(AugmentedEnsemble):
    """Augmented-state ensemble filter estimating the state and the weights of a PolyConv correction.

    The forecast model given to :meth:`forecast` is the physics M; member j
    runs the hybrid CorrectedModel(M, PolyConv, ``kind``) with its weights
    theta_j (``in_mean``, ``in_std``, ``out_std`` normalise as in
    :class:`~hybrida.learn.correction.CorrectedModel`; ``in_mean``/``in_std``
    None = the spatial mean and std of the state given to
    :meth:`initial_state`, so the polynomial sees O(1) inputs). Prior weights
    N(``theta_mean``, ``theta_std``^2 I) (``theta_mean`` None = zeros, i.e.
    the physics; or the weights of an offline correction, transfer
    learning). The analysis, the parameter inflation (``param_infl``,
    ``param_noise``) and ``inner``/``inner_params`` are those of
    :class:`~hybrida.assimilation.ensemble.augmented.AugmentedEnsemble`.
    Diagnostics: the inner ones plus ``theta_norm`` (norm of the mean
    weights) and ``theta_spread`` (mean ensemble std of the weights);
    :attr:`theta` holds the mean weights.
    """

    def __init__(
        self,
        correction: str = "tendency",
        degree: int = 3,
        kernel_size: int = 3,
        in_mean: float | None = None,
        in_std: float | None = None,
        out_std: float = 1.0,
        theta_mean: Sequence[float] | Tensor | None = None,
        theta_std: float = 0.1,
        inner: str = "etkf",
        inner_params: dict[str, Any] | None = None,
        param_infl: float = 1.0,
        param_noise: float = 0.0,
    ):
        if correction not in KINDS:
            raise ValueError(f"OnlineCorrectionEnsemble: correction must be one of {', '.join(KINDS)}, got {correction!r}")
        self.net = PolyConv(degree, kernel_size)
        self.correction = correction
        self.in_mean = None if in_mean is None else float(in_mean)
        self.in_std = None if in_std is None else _positive("in_std", in_std)
        self.out_std = _positive("out_std", out_std)
        P = self.net.n_weights
        mean = torch.zeros(P, dtype=torch.float64) if theta_mean is None else torch.as_tensor(theta_mean, dtype=torch.float64).flatten()
        if mean.shape != (P,) or not bool(torch.isfinite(mean).all()):
            raise ValueError(f"OnlineCorrectionEnsemble: theta_mean must hold {P} finite weights, got shape {tuple(mean.shape)}")
        self.theta_mean = mean
        self.theta_std = _positive("theta_std", theta_std)
        self._set_filter(inner, inner_params, param_infl, param_noise)
        self.theta = mean.clone()
        self._hybrid: tuple[int, CorrectedModel] | None = None

    @property
    def n_params(self) -> int:
        return self.net.n_weights

    def _normalisation(self) -> tuple[float, float]:
        if self.in_mean is None or self.in_std is None:
            raise ValueError(
                "OnlineCorrectionEnsemble: in_mean/in_std unknown; pass them or call initial_state first"
            )
        return self.in_mean, self.in_std

    def initial_state(self, mean: Tensor, std: Tensor | float, generator: torch.Generator | None = None) -> State:
        """As :meth:`AugmentedEnsemble.initial_state`; first fills unset ``in_mean``/``in_std`` from ``mean``."""
        if self.in_mean is None:
            self.in_mean = float(mean.mean())
        if self.in_std is None:
            sd = float(mean.std()) if mean.numel() > 1 else 0.0
            self.in_std = sd if math.isfinite(sd) and sd > 0 else 1.0
        return super().initial_state(mean, std, generator)

    def hybrid(self, physics: Model) -> CorrectedModel:
        """The hybrid model on ``physics`` (weights supplied per member at each step)."""
        if self._hybrid is None or self._hybrid[0] != id(physics):
            self._hybrid = (
                id(physics),
                CorrectedModel(physics, self.net, self.correction, *self._normalisation(), self.out_std),
            )
        return self._hybrid[1]

    def corrected_model(self, physics: Model) -> CorrectedModel:
        """A stand-alone hybrid model with the current mean weights (e.g. for forecasts)."""
        net = PolyConv(self.net.degree, self.net.kernel_size)
        with torch.no_grad():
            net.theta.copy_(self.theta)
        return CorrectedModel(physics, net, self.correction, *self._normalisation(), self.out_std)

    def prior_parameters(self, dtype: torch.dtype, generator: torch.Generator | None) -> Tensor:
        """``(N, P)`` weights drawn from N(theta_mean, theta_std^2 I)."""
        z = torch.randn(self.N, self.n_params, generator=generator, dtype=dtype)
        return self.theta_mean.to(dtype) + self.theta_std * z.to(self.theta_mean.device)

    def forecast(self, model: Model, state: State, n_steps: int, t0: float = 0.0) -> State:
        """Each member advanced by the hybrid model with its own weights; weights persist."""
        if not isinstance(state, Tensor) or state.shape[-1] != model.n + self.n_params:
            raise ValueError(f"OnlineCorrectionEnsemble: state must be (N, n + {self.n_params}) for this model")
        hyb = self.hybrid(model)
        x, theta = state[..., : model.n], state[..., model.n :]
        for k in range(n_steps):
            x = hyb.step_with(x, theta, t0 + k * model.dt)
        return torch.cat((x, theta), -1)

    def parameter_diagnostics(self, theta: Tensor) -> dict[str, float]:
        """Keep the mean weights in :attr:`theta`; report their norm and mean spread."""
        self.theta = theta.mean(0).detach().cpu().to(torch.float64)
        return {"theta_norm": float(self.theta.norm()), "theta_spread": float(theta.std(0).mean())}


@dataclass
class OnlineVarResult:
    """Analyses at the end of each window ``(W + 1, n)`` and the weights after each window ``(W + 1, P)``."""

    analyses: Tensor
    theta: Tensor
    cost: list[float] = field(default_factory=list)


def _window_cost(
    hybrid: CorrectedModel,
    v: Tensor,
    eta: Tensor,
    u: Tensor,
    xb: Tensor,
    theta_b: Tensor,
    obs: Sequence[Observation],
    steps_per_cycle: int,
    b: float,
    q: float,
    p: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Weak-constraint 4D-Var cost in the preconditioned control (v, eta, u); returns (J, states, theta).

    x_0 = x_b + b v, x_k = M_theta^s(x_{k-1}) + q eta_k, theta = theta_b + p u, and
    J = |v|^2/2 + sum_k |eta_k|^2/2 + |u|^2/2 + sum_k |R^{-1/2}(y_k - H x_k)|^2 / 2
    (model-error forcing formulation, Tremolet 2006; weights in the control, Farchi et al. 2023).
    """
    theta = theta_b + p * u
    x = xb + b * v
    states = [x]
    J = 0.5 * ((v**2).sum() + (eta**2).sum() + (u**2).sum())
    for k, o in enumerate(obs):
        for _ in range(steps_per_cycle):
            x = hybrid.step_with(x, theta)
        x = x + q * eta[k]
        states.append(x)
        d = o.error.whiten(o.y - o.operator(x))
        J = J + 0.5 * (d**2).sum()
    return J, torch.stack(states), theta


def weak4dvar_online(
    hybrid: CorrectedModel,
    observations: Sequence[Observation],
    first: Tensor,
    *,
    lag: int = 4,
    steps_per_cycle: int = 1,
    b: float = 0.3,
    q: float = 0.05,
    p: float = 0.05,
    theta0: Tensor | None = None,
    max_iter: int = 60,
) -> OnlineVarResult:
    """Online weak-constraint 4D-Var over consecutive windows of ``lag`` cycles, weights in the control.

    Control of window w: the initial state, the model-error forcings of its
    cycles and the weights theta of the hybrid's parametric net
    (``hybrid.net.apply_weights``), preconditioned by their std-devs.
    Background: x_b = the previous window's last analysis (state of the
    first cycle of the window, which is the last cycle of the previous one),
    theta_b = the previous weights (``theta0`` or the net's own at start);
    ``b``, ``q``, ``p`` are the background, model-error and weight-update
    standard deviations (diagonal covariances). ``p`` plays the role of the
    parameter inflation: it bounds the weight change per window. Minimised
    with L-BFGS (strong Wolfe line search, at most ``max_iter`` iterations).
    Returns the window-end analyses and the weights after each window.
    """
    if isinstance(lag, bool) or int(lag) != lag or lag < 1:
        raise ValueError(f"weak4dvar_online: lag must be an integer >= 1, got {lag}")
    for name, v in (("b", b), ("q", q), ("p", p)):
        if not (math.isfinite(float(v)) and float(v) > 0):
            raise ValueError(f"weak4dvar_online: {name} must be a finite number > 0, got {v}")
    if not callable(getattr(hybrid.net, "apply_weights", None)):
        raise ValueError("weak4dvar_online: the hybrid's net needs apply_weights(theta, z), e.g. PolyConv")  # noqa: TRY004
    dtype = first.dtype
    theta_b = (theta0 if theta0 is not None else hybrid.net.theta).detach().to(dtype).clone()
    xb = first.detach().clone()
    analyses, thetas, costs = [xb.clone()], [theta_b.clone()], []
    K = len(observations)
    for a in range(0, K - lag + 1, lag):
        obs = [o.valid() for o in observations[a : a + lag]]
        v = torch.zeros_like(xb, requires_grad=True)
        eta = torch.zeros(lag, xb.shape[-1], dtype=dtype, requires_grad=True)
        u = torch.zeros_like(theta_b, requires_grad=True)
        opt = torch.optim.LBFGS([v, eta, u], max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure(opt=opt, v=v, eta=eta, u=u, xb=xb, theta_b=theta_b, obs=obs) -> Tensor:
            opt.zero_grad()
            J = _window_cost(hybrid, v, eta, u, xb, theta_b, obs, steps_per_cycle, b, q, p)[0]
            J.backward()
            return J

        opt.step(closure)
        with torch.no_grad():
            J, xs, theta = _window_cost(hybrid, v, eta, u, xb, theta_b, obs, steps_per_cycle, b, q, p)
        costs.append(float(J))
        theta_b = theta.detach().clone()
        xb = xs[-1].detach().clone()
        analyses.append(xb.clone())
        thetas.append(theta_b.clone())
    return OnlineVarResult(torch.stack(analyses), torch.stack(thetas), costs)
