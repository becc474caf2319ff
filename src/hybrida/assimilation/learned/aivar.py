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

With ``krylov=k >= 1`` the network also takes the Krylov vectors of the
Gauss-Newton problem at the background in the control variable: the cost's
steepest-descent direction g_1 = -∇_v J(v=0) = B^{1/2} H'(x_b)^T R^{-1} d and
g_{j+1} = A g_j, A = S^T R^{-1} S with S = H'(x_b) B^{1/2} (the Hessian of the
observation term), j < k (:func:`krylov_vectors`), as MLP inputs (each scaled
by its rms) and through a linear path G [g_1..g_k]. The Gauss-Newton increment
(I + A)^{-1} g_1 lies (to a degree) in their span; for a nonlinear H it depends
on x_b through the Jacobian, which the g_j carry and d does not. This costs k
adjoint and k - 1 tangent-linear applications of H per analysis, no iteration.
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

__all__ = ["AIVar", "AIVarNet", "adjoint_innovation", "error_covariance", "innovation", "krylov_vectors",
           "observation_term", "threedvar_cost"]

_ACTIVATIONS = {"tanh": torch.tanh, "gelu": nn.functional.gelu, "silu": nn.functional.silu}


def innovation(y: Tensor, hx: Tensor, mask: Tensor) -> Tensor:
    """Innovation d = y - H(x_b) where ``mask`` is true, 0 elsewhere (NaN-safe)."""
    return torch.where(mask, y - hx, torch.zeros_like(hx))


def _masked_rinv(d: Tensor, mask: Tensor, R: Tensor) -> Tensor:
    """R_mm^{-1} d_m on the observed entries m of each case, 0 elsewhere: ``d``, ``mask`` (..., p)."""
    d = torch.where(mask, d, torch.zeros_like(d))
    if R.ndim == 1:
        return d / R.to(d)
    m = mask.to(d.dtype)
    Rm = R.to(d) * (m.unsqueeze(-1) * m.unsqueeze(-2)) + torch.diag_embed(1.0 - m)
    out = torch.cholesky_solve(d.unsqueeze(-1), torch.linalg.cholesky(Rm)).squeeze(-1)
    return torch.where(mask, out, torch.zeros_like(out))


def adjoint_innovation(
    xb: Tensor, d: Tensor, mask: Tensor, operator, R: Tensor, *, indices: Tensor | None = None,
    matrix: Tensor | None = None,
) -> Tensor:
    """H'(x_b)^T R_mm^{-1} d_m per case (..., n): minus the gradient of J's observation term at x_b.

    ``d``, ``mask`` (..., p) as for :func:`innovation`; ``R`` variances (p,) or
    covariance (p, p). A selection H (``indices``) or a linear H (``matrix``
    (p, n)) is applied directly; otherwise the vector-Jacobian product of
    ``operator`` at ``xb`` comes from autodiff.
    """
    return _linearised(xb, operator, indices, matrix)[1](_masked_rinv(d, mask, R))


def _linearised(xb: Tensor, operator, indices: Tensor | None, matrix: Tensor | None):
    """(tangent-linear u -> H'(x_b) u, adjoint w -> H'(x_b)^T w) at ``xb``, batched like ``xb``."""
    if indices is not None:
        idx = indices.to(xb.device)
        shape = xb.shape
        return (lambda u: u.index_select(-1, idx)), (
            lambda w: torch.zeros(*w.shape[:-1], shape[-1], dtype=w.dtype, device=w.device).index_add(-1, idx, w))
    if matrix is not None:
        M = matrix.to(xb)
        return (lambda u: u @ M.mT), (lambda w: w @ M)
    # one autograd graph of H at x_b serves both: the adjoint is its vector-Jacobian product, and the
    # tangent-linear the vector-Jacobian product of lin(w) = H'^T w with respect to w (linear in w)
    with torch.enable_grad():
        x0 = xb.detach().requires_grad_(True)
        hx = operator(x0)
        w0 = torch.zeros_like(hx, requires_grad=True)
        (lin,) = torch.autograd.grad(hx, x0, w0, create_graph=True, allow_unused=True, materialize_grads=True)

    def tangent(u: Tensor) -> Tensor:
        if not lin.requires_grad:  # H does not depend on x
            return torch.zeros_like(hx.expand(*u.shape[:-1], hx.shape[-1]))
        with torch.enable_grad():
            return torch.autograd.grad(lin, w0, u, retain_graph=True)[0]

    def adjoint(w: Tensor) -> Tensor:
        with torch.enable_grad():
            return torch.autograd.grad(hx, x0, w, retain_graph=True, allow_unused=True, materialize_grads=True)[0]

    return tangent, adjoint


def krylov_vectors(
    xb: Tensor, d: Tensor, mask: Tensor, operator, R: Tensor, B: Tensor, k: int, *,
    indices: Tensor | None = None, matrix: Tensor | None = None,
) -> Tensor:
    """[a_1, ..., a_k] (..., k n): a_1 = H'^T R^{-1} d, a_{j+1} = H'^T R^{-1} H' B a_j (H' at x_b, observed entries).

    With B = S S (S symmetric) the control-variable Krylov vectors of :class:`AIVarNet` are g_j = S a_j:
    g_1 = -∇_v J(0) and g_{j+1} = S^T H'^T R^{-1} H' S g_j. ``k=1`` is :func:`adjoint_innovation`.
    """
    tangent, adjoint = _linearised(xb, operator, indices, matrix)
    a = adjoint(_masked_rinv(d, mask, R))
    out = [a]
    for _ in range(k - 1):
        a = adjoint(_masked_rinv(tangent(a @ B.to(a)), mask, R))
        out.append(a)
    return torch.cat(out, dim=-1)


def error_covariance(error) -> Tensor:
    """R as :func:`observation_term` takes it: the variances of a DiagonalError, else the covariance."""
    from hybrida.observations.errors import DiagonalError

    return error.variance if isinstance(error, DiagonalError) else error.cov


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

    ``krylov=k >= 1``: ``forward(xb, d, mask, adj)`` also takes the x-space
    Krylov vectors adj = [a_1..a_k] ``(B, k n)`` (:func:`krylov_vectors`, with
    this net's B = B_sqrt^2); the network adds G g, g_j = B^{1/2} a_j, and feeds
    g / ``g_scale`` (a buffer (k n,)) to the MLP.
    """

    def __init__(self, n: int, p: int, hidden: int = 256, depth: int = 2, activation: str = "tanh",
                 krylov: int = 0):
        super().__init__()
        if n < 1 or p < 1 or hidden < 1 or depth < 1 or krylov < 0:
            raise ValueError(f"AIVarNet: need n, p, hidden, depth >= 1, krylov >= 0; got {n}, {p}, {hidden}, {depth}, "
                             f"{krylov}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"AIVarNet: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.config: dict[str, Any] = {
            "n": int(n), "p": int(p), "hidden": int(hidden), "depth": int(depth), "activation": activation,
            "krylov": int(krylov),
        }
        self.krylov = int(krylov)
        self.grad_feature = self.krylov > 0
        kn = self.krylov * n
        self.act = _ACTIVATIONS[activation]
        widths = [n + 2 * p + kn] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.head = nn.Linear(hidden, n)
        self.gain = nn.Linear(p, n, bias=False)
        self.grad_gain = nn.Linear(kn, n, bias=False) if self.grad_feature else None
        for lin in (self.head, self.gain, self.grad_gain):  # the untrained analysis is the background
            if lin is not None:
                nn.init.zeros_(lin.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("B_sqrt", torch.eye(n))
        self.register_buffer("x_mean", torch.zeros(n))
        self.register_buffer("x_scale", torch.ones(n))
        self.register_buffer("d_scale", torch.ones(p))
        if self.grad_feature:
            self.register_buffer("g_scale", torch.ones(kn))

    @torch.no_grad()
    def set_statics(self, B_sqrt: Tensor, x_mean: Tensor, x_scale: Tensor, d_scale: Tensor,
                    g_scale: Tensor | None = None) -> None:
        """Set the background-error square root and the input normalisation (not trained).

        ``g_scale`` (k n,), the scale of the g_j = B^{1/2} a_j, is required with ``krylov >= 1`` and refused without.
        """
        n, p = self.config["n"], self.config["p"]
        if (g_scale is not None) != self.grad_feature:
            raise ValueError("AIVarNet.set_statics: g_scale is given exactly when krylov >= 1")
        shapes = {"B_sqrt": (n, n), "x_mean": (n,), "x_scale": (n,), "d_scale": (p,)}
        values = [B_sqrt, x_mean, x_scale, d_scale]
        if g_scale is not None:
            shapes["g_scale"] = (self.krylov * n,)
            values.append(g_scale)
        for name, val in zip(shapes, values):
            val = torch.as_tensor(val)
            if tuple(val.shape) != shapes[name]:
                raise ValueError(f"AIVarNet.set_statics: {name} must have shape {shapes[name]}, got {tuple(val.shape)}")
            if not bool(torch.isfinite(val).all()):
                raise ValueError(f"AIVarNet.set_statics: {name} contains NaN or inf")
            getattr(self, name).copy_(val.to(getattr(self, name)))
        scales = [self.x_scale, self.d_scale] + ([self.g_scale] if self.grad_feature else [])
        if any(bool((s <= 0).any()) for s in scales):
            raise ValueError("AIVarNet.set_statics: x_scale, d_scale and g_scale must be > 0")

    def control(self, xb: Tensor, d: Tensor, mask: Tensor, adj: Tensor | None = None) -> Tensor:
        """Control-variable increment v (B, n) with x_a = x_b + B^{1/2} v."""
        m = mask.to(xb.dtype)
        feats = [(xb - self.x_mean) / self.x_scale, d / self.d_scale, m]
        if self.grad_feature:
            if adj is None:
                raise ValueError("AIVarNet: krylov >= 1; pass adj = the Krylov vectors (krylov_vectors)")
            # g_j = B^{1/2} a_j (B^{1/2} symmetric), row-wise per block
            g = (adj.unflatten(-1, (self.krylov, -1)) @ self.B_sqrt).flatten(-2)
            feats.append(g / self.g_scale)
        h = torch.cat(feats, dim=-1)
        for lin in self.layers:
            h = self.act(lin(h))
        v = self.head(h) + self.gain(d)
        return v + self.grad_gain(g) if self.grad_feature else v

    def forward(self, xb: Tensor, d: Tensor, mask: Tensor, adj: Tensor | None = None) -> Tensor:
        """Analysis x_a (B, n)."""
        return xb + self.control(xb, d, mask, adj) @ self.B_sqrt.mT

    @torch.no_grad()
    def fused(self) -> list[Tensor]:
        """The weights with normalisation and B^{1/2} folded in, for the one-state fast path of :class:`AIVar`.

        Returns [W_1, b_1, ..., W_L, b_L, M, c] with the first layer acting on
        the raw [x_b, d, m] (and adj with ``grad_feature``) and x_a = x_b + c + M [h_L, d] (+ M's last
        n columns times adj).
        """
        n, p = self.config["n"], self.config["p"]
        first = self.layers[0]
        S = self.B_sqrt
        inv = torch.cat((1.0 / self.x_scale, 1.0 / self.d_scale, torch.ones_like(self.d_scale)))
        W1 = first.weight[:, : n + 2 * p] * inv
        k = self.krylov
        Sk = torch.block_diag(*([S] * k)) if k else None  # g = adj Sk, row-wise
        if self.grad_feature:  # the g columns act on g = B^{1/2} adj, blockwise
            W1 = torch.cat((W1, (first.weight[:, n + 2 * p :] / self.g_scale) @ Sk.mT), dim=1)
        b1 = first.bias - first.weight[:, :n] @ (self.x_mean / self.x_scale)
        out = [W1.contiguous(), b1.contiguous()]
        for lin in self.layers[1:]:
            out += [lin.weight.detach().clone(), lin.bias.detach().clone()]
        blocks = [S @ self.head.weight, S @ self.gain.weight]
        if self.grad_feature:
            blocks.append(S @ self.grad_gain.weight @ Sk.mT)
        M = torch.cat(blocks, dim=1)
        out += [M.contiguous(), (S @ self.head.bias).contiguous()]
        assert M.shape == (n, self.config["hidden"] + p + k * n)
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
        self._B = net.B_sqrt @ net.B_sqrt

    def analyse(
        self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> State:
        """x_a = f_θ(x_b, y, m) for one state ``(n,)`` (batched ``(B, n)`` states go through the network)."""
        if not isinstance(prior, Tensor):
            raise ValueError(f"AIVar: prior must be a state tensor of shape ({self.n},)")  # noqa: TRY004
        self.check_inputs(prior, obs)
        # the vector-Jacobian product of the gradient feature needs autograd: no inference mode then
        with torch.no_grad() if self.net.grad_feature else torch.inference_mode():
            mask = torch.isfinite(obs.y)
            d = innovation(obs.y.to(prior), obs.H(prior), mask)
            if prior.ndim != 1:
                d, mask = d.expand(*prior.shape[:-1], self.p), mask.expand(*prior.shape[:-1], self.p)
            adj = None
            if self.net.grad_feature:
                adj = krylov_vectors(prior, d, mask, obs.operator, error_covariance(obs.error), self._B,
                                     self.net.krylov, indices=obs.indices, matrix=obs.stored_matrix)
            if prior.ndim != 1:
                return self.net(prior, d, mask, adj)
            return self._one(prior, d, mask, adj)

    def _one(self, xb: Tensor, d: Tensor, mask: Tensor, adj: Tensor | None = None) -> Tensor:
        """The network on one state with plain matrix-vector products (no module overhead)."""
        f = self._fused
        act = self.net.act
        extra = () if adj is None else (adj,)
        h = torch.cat((xb, d, mask.to(xb.dtype), *extra))
        for k in range(0, len(f) - 2, 2):
            h = act(torch.addmv(f[k + 1], f[k], h))
        return torch.addmv(xb + f[-1], f[-2], torch.cat((h, d, *extra)))

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
        gf = f", krylov={c['krylov']}" if c.get("krylov") else ""
        return f"AIVar(n={self.n}, p={self.p}, hidden={c['hidden']}, depth={c['depth']}{gf})"
