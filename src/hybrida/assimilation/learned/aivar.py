"""AI-Var: a network that maps (background, observations, mask) to the 3D-Var analysis, learned from the cost alone.

Keller & Potthast (2024, "AI-based data assimilation: learning the functional
of analysis estimation", arXiv:2406.00390): instead of minimising the
variational cost per analysis, a network x_a = f_θ(x_b, y, mask) is trained
to minimise the cost itself averaged over many cases,

    L(θ) = mean_k J_k(f_θ(x_b,k, y_k, m_k)),
    J(x) = 1/2 |x - x_b|^2_{B^-1} + 1/2 |y - H(x)|^2_{R^-1}  (observed entries only),

so neither truth nor analyses serve as targets. Once trained, one analysis is
one network evaluation instead of an iterative minimisation.

Our network (:class:`AIVarNet`) works in the 3D-Var control variable
(x = x_b + B^{1/2} v, Lorenc 1986), which makes the background term 1/2|v|^2
and the cost well conditioned for the optimiser, and has a linear path on
the innovation d = y - H(x_b) (0 where missing):

    v = A d + MLP([(x_b - mu)/sigma, d/s, m]),   x_a = x_b + B^{1/2} v.

For a linear H and a fixed mask the minimiser of J is affine in (x_b, y),
x_a = x_b + B H^T (H B H^T + R)^{-1} d, which the linear path represents
exactly; the MLP carries the dependence on the mask and a nonlinear H. Head
and linear path start at zero, so the untrained network returns the background.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hybrida.assimilation.base import State
from hybrida.assimilation.learned.base import LearnedAnalysis, rebuild_network
from hybrida.observations.base import Observation

__all__ = ["AIVar", "AIVarNet", "innovation", "observation_term", "threedvar_cost"]

_ACTIVATIONS = {"tanh": torch.tanh, "gelu": nn.functional.gelu, "silu": nn.functional.silu}


def innovation(y: Tensor, hx: Tensor, mask: Tensor) -> Tensor:
    """Innovation d = y - H(x_b) where ``mask`` is true, 0 elsewhere (NaN-safe)."""
    return torch.where(mask, y - hx, torch.zeros_like(hx))


def observation_term(r: Tensor, mask: Tensor, R: Tensor) -> Tensor:
    """1/2 r_m^T R_mm^{-1} r_m over the observed entries m of each case: ``r``, ``mask`` (..., p) -> (...).

    ``R`` is the variances ``(p,)`` (uncorrelated errors) or the covariance
    ``(p, p)``; for a full R the masked covariance M R M + (I - M) is factored
    per case, which leaves the observed block's inverse and drops the rest.
    """
    r = torch.where(mask, r, torch.zeros_like(r))
    if R.ndim == 1:
        return 0.5 * (r * r / R.to(r)).sum(-1)
    m = mask.to(r.dtype)
    Rm = R.to(r) * (m.unsqueeze(-1) * m.unsqueeze(-2)) + torch.diag_embed(1.0 - m)
    L = torch.linalg.cholesky(Rm)
    w = torch.linalg.solve_triangular(L, r.unsqueeze(-1), upper=False).squeeze(-1)
    return 0.5 * (w * w).sum(-1)


def threedvar_cost(
    x: Tensor, xb: Tensor, y: Tensor, mask: Tensor, operator, B_inv_sqrt: Tensor, R: Tensor
) -> Tensor:
    """3D-Var cost J(x) = 1/2|B^{-1/2}(x - x_b)|^2 + 1/2|y - H(x)|^2_{R^-1} (observed entries) per case.

    ``x``, ``xb`` (..., n); ``y`` (..., p) with anything (NaN) where ``mask``
    is false; ``operator`` H: (..., n) -> (..., p); ``B_inv_sqrt`` (n, n)
    symmetric; ``R`` variances (p,) or covariance (p, p). Returns (...).
    """
    v = (x - xb) @ B_inv_sqrt.to(x).mT
    return 0.5 * (v * v).sum(-1) + observation_term(y - operator(x), mask, R)


class AIVarNet(nn.Module):
    """Analysis x_a = x_b + B^{1/2} (A d + MLP([(x_b - mu)/sigma, d/s, m])): the AI-Var network.

    ``forward(xb, d, mask)`` takes ``(B, n)``, ``(B, p)``, ``(B, p)`` (d = 0 and
    mask = 0 where missing) and returns ``(B, n)``. The buffers ``B_sqrt``
    (n, n), ``x_mean``/``x_scale`` (n,) and ``d_scale`` (p,) are set by
    :meth:`set_statics` before training and saved with the weights.
    """

    def __init__(self, n: int, p: int, hidden: int = 256, depth: int = 2, activation: str = "tanh"):
        super().__init__()
        if n < 1 or p < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"AIVarNet: need n, p, hidden, depth >= 1; got {n}, {p}, {hidden}, {depth}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"AIVarNet: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.config: dict[str, Any] = {
            "n": int(n), "p": int(p), "hidden": int(hidden), "depth": int(depth), "activation": activation,
        }
        self.act = _ACTIVATIONS[activation]
        widths = [n + 2 * p] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.head = nn.Linear(hidden, n)
        self.gain = nn.Linear(p, n, bias=False)
        for lin in (self.head, self.gain):  # the untrained analysis is the background
            nn.init.zeros_(lin.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("B_sqrt", torch.eye(n))
        self.register_buffer("x_mean", torch.zeros(n))
        self.register_buffer("x_scale", torch.ones(n))
        self.register_buffer("d_scale", torch.ones(p))

    @torch.no_grad()
    def set_statics(self, B_sqrt: Tensor, x_mean: Tensor, x_scale: Tensor, d_scale: Tensor) -> None:
        """Set the background-error square root and the input normalisation (not trained)."""
        n, p = self.config["n"], self.config["p"]
        shapes = {"B_sqrt": (n, n), "x_mean": (n,), "x_scale": (n,), "d_scale": (p,)}
        for name, val in zip(shapes, (B_sqrt, x_mean, x_scale, d_scale)):
            val = torch.as_tensor(val)
            if tuple(val.shape) != shapes[name]:
                raise ValueError(f"AIVarNet.set_statics: {name} must have shape {shapes[name]}, got {tuple(val.shape)}")
            if not bool(torch.isfinite(val).all()):
                raise ValueError(f"AIVarNet.set_statics: {name} contains NaN or inf")
            getattr(self, name).copy_(val.to(getattr(self, name)))
        if bool((self.x_scale <= 0).any()) or bool((self.d_scale <= 0).any()):
            raise ValueError("AIVarNet.set_statics: x_scale and d_scale must be > 0")

    def control(self, xb: Tensor, d: Tensor, mask: Tensor) -> Tensor:
        """Control-variable increment v (B, n) with x_a = x_b + B^{1/2} v."""
        m = mask.to(xb.dtype)
        h = torch.cat(((xb - self.x_mean) / self.x_scale, d / self.d_scale, m), dim=-1)
        for lin in self.layers:
            h = self.act(lin(h))
        return self.head(h) + self.gain(d)

    def forward(self, xb: Tensor, d: Tensor, mask: Tensor) -> Tensor:
        """Analysis x_a (B, n)."""
        return xb + self.control(xb, d, mask) @ self.B_sqrt.mT

    @torch.no_grad()
    def fused(self) -> list[Tensor]:
        """The weights with normalisation and B^{1/2} folded in, for the one-state fast path of :class:`AIVar`.

        Returns [W_1, b_1, ..., W_L, b_L, M, c] with the first layer acting on
        the raw [x_b, d, m] and x_a = x_b + c + M [h_L, d].
        """
        n, p = self.config["n"], self.config["p"]
        first = self.layers[0]
        inv = torch.cat((1.0 / self.x_scale, 1.0 / self.d_scale, torch.ones_like(self.d_scale)))
        W1 = first.weight * inv
        b1 = first.bias - first.weight[:, :n] @ (self.x_mean / self.x_scale)
        out = [W1.contiguous(), b1.contiguous()]
        for lin in self.layers[1:]:
            out += [lin.weight.detach().clone(), lin.bias.detach().clone()]
        S = self.B_sqrt
        M = torch.cat((S @ self.head.weight, S @ self.gain.weight), dim=1)
        out += [M.contiguous(), (S @ self.head.bias).contiguous()]
        assert M.shape == (n, self.config["hidden"] + p)
        return out


class AIVar(LearnedAnalysis):
    """AI-Var analysis: one evaluation of a trained :class:`AIVarNet` on (x_b, y, isfinite(y)).

    Deterministic: cycles a single state ``(n,)`` like 3D-Var. Missing
    observations (NaN) enter through the mask; the network must have been
    trained for this state size, number of observations and dtype
    (:meth:`~hybrida.assimilation.learned.base.LearnedAnalysis.check_inputs`).
    ``info`` keeps how it was trained (xB, the preset, ...) for the payload.
    """

    kind = "deterministic"
    kind_name = "aivar"

    def __init__(self, net: AIVarNet, info: dict[str, Any] | None = None):
        if not isinstance(net, AIVarNet):
            raise TypeError(f"AIVar: expected an AIVarNet, got {type(net).__name__}")
        self.net = net.eval()
        self.n = int(net.config["n"])
        self.p = int(net.config["p"])
        self.dtype = net.B_sqrt.dtype
        self.info = dict(info or {})
        self._fused = net.fused()

    def analyse(
        self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> State:
        """x_a = f_θ(x_b, y, m) for one state ``(n,)`` (batched ``(B, n)`` states go through the network)."""
        if not isinstance(prior, Tensor):
            raise ValueError(f"AIVar: prior must be a state tensor of shape ({self.n},)")  # noqa: TRY004
        self.check_inputs(prior, obs)
        with torch.inference_mode():
            mask = torch.isfinite(obs.y)
            d = innovation(obs.y.to(prior), obs.H(prior), mask)
            if prior.ndim != 1:
                return self.net(prior, d.expand(*prior.shape[:-1], self.p), mask.expand_as(d))
            return self._one(prior, d, mask)

    def _one(self, xb: Tensor, d: Tensor, mask: Tensor) -> Tensor:
        """The network on one state with plain matrix-vector products (no module overhead)."""
        f = self._fused
        act = self.net.act
        h = torch.cat((xb, d, mask.to(xb.dtype)))
        for k in range(0, len(f) - 2, 2):
            h = act(torch.addmv(f[k + 1], f[k], h))
        return torch.addmv(xb + f[-1], f[-2], torch.cat((h, d)))

    def to_payload(self) -> dict[str, Any]:
        """Kind, signature (n, p, dtype), the network and the training info."""
        return self.payload_header(extra={"info": self.info}, net=self.net)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: str | Path | None = None, **params: Any) -> AIVar:
        """Rebuild from :meth:`to_payload`'s dict; AI-Var has no run-time settings to override."""
        if params:
            raise ValueError(f"AIVar: unknown method.params {sorted(params)} (AI-Var takes only 'path')")
        where = f"{path}: " if path is not None else ""
        try:
            net = rebuild_network(payload["networks"]["net"], path)
        except KeyError as err:
            raise ValueError(f"{where}AI-Var file lacks {err}") from None
        if not isinstance(net, AIVarNet):
            raise ValueError(f"{where}network is {type(net).__name__}, not AIVarNet")  # noqa: TRY004
        return cls(net, info=payload.get("info"))

    def __repr__(self) -> str:
        c = self.net.config
        return f"AIVar(n={self.n}, p={self.p}, hidden={c['hidden']}, depth={c['depth']})"
