"""Minimisers for variational DA: conjugate gradient and Gauss–Newton with autodiff.

Pure functions acting on a flat control vector ``v``; reusable by 3D-Var,
4D-Var and EnVar. The cost they minimise is the regularised least-squares

    J(v) = 1/2 |v|^2 + 1/2 |r(v)|^2,

with ``r`` the whitened innovation residual, e.g. r(v) = R^{-1/2}(y - H(xb + B^{1/2} v))
(control-variable transform, Bannister 2008). Jacobian products come from
autodiff (``torch.func``), so any differentiable ``r`` works; :func:`linearize`
offers a dense Jacobian (small control spaces) or matrix-free products whose
tangent-linear is a reverse-over-reverse pass (cheaper on CPU than ``jvp``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "CGResult",
    "GNResult",
    "Linearization",
    "conjugate_gradient",
    "gauss_newton",
    "linearize",
    "regularised_cost",
]

MatVec = Callable[[Tensor], Tensor]


@dataclass
class CGResult:
    """Solution of A x = b by CG with its iteration history."""

    x: Tensor
    n_iter: int
    #: |r_j| for j = 0..n_iter (r = b - A x)
    residual_norms: list[float] = field(default_factory=list)
    #: quadratic 1/2 x_j^T A x_j - b^T x_j for j = 0..n_iter (decreasing)
    energies: list[float] = field(default_factory=list)
    converged: bool = False


def conjugate_gradient(
    matvec: MatVec,
    b: Tensor,
    x0: Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> CGResult:
    """Solve A x = b for symmetric positive-definite A given by ``matvec`` (Hestenes & Stiefel 1952).

    Stops when |b - A x| <= tol |b| or after ``max_iter`` iterations. The
    energy 1/2 x^T A x - b^T x = -1/2 x^T (b + r) is recorded each iteration.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - matvec(x) if x0 is not None else b.clone()
    d = r.clone()
    rr = torch.dot(r, r)
    b_norm = float(torch.linalg.vector_norm(b))
    stop = tol * b_norm
    norms = [float(rr.sqrt())]
    energies = [float(-0.5 * torch.dot(x, b + r))]
    if norms[0] <= stop or b_norm == 0.0:
        return CGResult(x, 0, norms, energies, True)
    k = 0
    for k in range(1, max_iter + 1):
        Ad = matvec(d)
        dAd = torch.dot(d, Ad)
        if float(dAd) <= 0:
            raise ValueError("conjugate_gradient: the operator is not positive definite (d^T A d <= 0)")
        alpha = rr / dAd
        x = x + alpha * d
        r = r - alpha * Ad
        rr_new = torch.dot(r, r)
        norms.append(float(rr_new.sqrt()))
        energies.append(float(-0.5 * torch.dot(x, b + r)))
        if norms[-1] <= stop:
            return CGResult(x, k, norms, energies, True)
        d = r + (rr_new / rr) * d
        rr = rr_new
    return CGResult(x, k, norms, energies, False)


def regularised_cost(residual: Callable[[Tensor], Tensor], v: Tensor) -> Tensor:
    """J(v) = 1/2 |v|^2 + 1/2 |r(v)|^2."""
    r = residual(v)
    return 0.5 * (v * v).sum() + 0.5 * (r * r).sum()


@dataclass
class Linearization:
    """A residual linearised at a point: its value r, tangent-linear w -> G w and adjoint u -> G^T u.

    ``matrix`` is the Jacobian G (m, n) when it was formed (dense mode), else None.
    """

    r: Tensor
    tl: MatVec
    adj: MatVec
    matrix: Tensor | None = None


#: modes of :func:`linearize`
LINEARIZE_MODES = ("jvp", "matrix_free", "forward", "reverse")


def linearize(residual: Callable[[Tensor], Tensor], v: Tensor, mode: str = "matrix_free") -> Linearization:
    """Linearise ``residual`` at ``v`` by autodiff: r(v), and the products with G = dr/dv.

    Modes:

    * ``"jvp"``: TL by forward-mode ``torch.func.jvp`` (re-runs the model each product);
    * ``"matrix_free"``: TL as the reverse pass of the (linear) adjoint map u -> G^T u
      ("double vjp"): one extra reverse pass when linearising, then each TL product
      costs about one adjoint, several times cheaper than ``jvp`` for RK4 models on CPU;
    * ``"forward"`` / ``"reverse"``: form G (m, n) once with ``jacfwd`` / ``jacrev``
      (batched passes); products are then matrix products. Best when min(m, n) is small.
    """
    if mode not in LINEARIZE_MODES:
        raise ValueError(f"linearize: mode must be one of {', '.join(LINEARIZE_MODES)}, got {mode!r}")
    if mode in ("forward", "reverse"):
        jac = torch.func.jacfwd if mode == "forward" else torch.func.jacrev

        def with_value(z: Tensor) -> tuple[Tensor, Tensor]:
            r = residual(z)
            return r, r

        G, r = jac(with_value, has_aux=True)(v)
        G = G.reshape(r.numel(), v.numel())
        return Linearization(r.detach(), lambda w: G @ w, lambda u: u @ G, G)
    r, vjp_fn = torch.func.vjp(residual, v)
    r = r.detach()

    def adj(u: Tensor) -> Tensor:
        return vjp_fn(u)[0]

    if mode == "jvp":

        def tl(w: Tensor) -> Tensor:
            return torch.func.jvp(residual, (v,), (w,))[1]

        return Linearization(r, tl, adj)
    # G^T u is linear in u, so its vjp at any u (here 0) with cotangent w is G w
    _, tl_fn = torch.func.vjp(adj, torch.zeros_like(r))
    return Linearization(r, lambda w: tl_fn(w)[0], adj)


@dataclass
class GNResult:
    """Minimiser of J(v) = 1/2 |v|^2 + 1/2 |r(v)|^2 with its history."""

    v: Tensor
    #: J after each accepted step, starting with J(v0); inner CG iterations
    #: record the (Gauss–Newton quadratic) model cost as well, see ``inner_costs``
    costs: list[float]
    inner_costs: list[float]
    grad_norm: float
    n_outer: int
    n_inner: int
    converged: bool
    #: |grad J| at each outer iterate (the points of ``costs``)
    grad_norms: list[float] = field(default_factory=list)
    #: the linearisation at the final iterate (value, TL, adjoint, maybe the Jacobian)
    linearization: Linearization | None = None
    #: J at v0 and after every CG iteration (quadratic-model values), the true J at
    #: each new outer iterate; ``len == n_inner + 1``
    history_costs: list[float] = field(default_factory=list)
    #: |grad J| likewise (inner entries: CG residual = gradient of the quadratic model)
    history_grad_norms: list[float] = field(default_factory=list)


def gauss_newton(
    residual: Callable[[Tensor], Tensor],
    v0: Tensor,
    max_outer: int = 10,
    max_inner: int = 100,
    tol: float = 1e-10,
    max_halvings: int = 20,
    jacobian: Tensor | None = None,
    linearizer: Callable[[Tensor], Linearization] | None = None,
) -> GNResult:
    """Minimise 1/2 |v|^2 + 1/2 |r(v)|^2 by Gauss–Newton with CG inner loops (incremental Var).

    Outer loop k linearises r at v_k (Jacobian J_k by autodiff) and solves
    (I + J_k^T J_k) dv = -(v_k + J_k^T r_k) by CG (Courtier et al. 1994); a
    backtracking step keeps J decreasing when r is nonlinear. With linear r
    one outer loop gives the exact minimiser. Converged when
    |grad J| <= tol * max(1, |grad J(v0)|). When r is affine its constant
    Jacobian may be given as ``jacobian`` (m, n): the Jacobian products are
    then matrix products instead of autodiff passes (much cheaper for small
    systems). Otherwise ``linearizer(v)`` (e.g. ``lambda v: linearize(residual, v,
    "forward")``) supplies the linearisation at each outer iterate; by default
    TL products use ``torch.func.jvp`` and adjoints ``torch.func.vjp``.
    """
    v = v0.clone()
    costs: list[float] = []
    inner_costs: list[float] = []
    n_inner = 0
    g0 = None
    gnorm = float("inf")
    converged = False
    k = 0
    grad_norms: list[float] = []
    lin: Linearization | None = None
    for k in range(max_outer + 1):
        if linearizer is not None:
            lin = linearizer(v)
        elif jacobian is None:
            lin = linearize(residual, v, "jvp")
        else:
            G = jacobian
            lin = Linearization(residual(v), lambda w, G=G: G @ w, lambda u, G=G: u @ G, G)
        r, tl, adj = lin.r, lin.tl, lin.adj

        cost = 0.5 * float((v * v).sum() + (r * r).sum())
        if not costs:
            costs.append(cost)
        grad = v + adj(r)
        gnorm = float(torch.linalg.vector_norm(grad))
        grad_norms.append(gnorm)
        if k == 0:
            hist_c, hist_g = [cost], [gnorm]
        else:  # the last inner iterate became this outer iterate: record its true values
            hist_c[-1], hist_g[-1] = cost, gnorm
        g0 = gnorm if g0 is None else g0
        if gnorm <= tol * max(1.0, g0):
            converged = True
            break
        if k == max_outer:
            break

        def hess(w: Tensor, tl=tl, adj=adj) -> Tensor:
            return w + adj(tl(w))

        cg = conjugate_gradient(hess, -grad, max_iter=max_inner, tol=tol)
        n_inner += cg.n_iter
        inner_costs.extend(cost + e for e in cg.energies[1:])
        hist_c.extend(cost + e for e in cg.energies[1:])
        hist_g.extend(cg.residual_norms[1:])
        if cg.n_iter == 0:
            break  # the quadratic model is already at its minimum
        step = 1.0
        for _ in range(max_halvings + 1):
            v_new = v + step * cg.x
            cost_new = float(regularised_cost(residual, v_new))
            if cost_new <= cost:
                break
            step *= 0.5
        else:
            break  # no decrease along the GN direction: at the minimum to rounding
        v = v_new
        costs.append(cost_new)
    return GNResult(v, costs, inner_costs, gnorm, k, n_inner, converged, grad_norms, lin, hist_c, hist_g)
