"""Batched SPD matrix functions A^{-1/2}, A^{-1} from batched matmuls (Newton–Schulz).

Small symmetric eigenproblems are slow on CPU when there are many of them
(one LAPACK call per matrix); the coupled Newton–Schulz iteration needs only
batched matrix products (Higham 2008, "Functions of Matrices", ch. 6).
Matrices that do not converge fall back to ``torch.linalg.eigh``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: default stopping tolerance on ||Z Y - I||_F per dtype (float64, float32)
DEFAULT_TOL = {torch.float64: 1e-12, torch.float32: 1e-5}

#: measured (CPU, 1 thread, torch 2.x; benchmarks/scaling/letkf_scaling.py --calibrate):
#: (N, cost of one batched eigh / one batched N×N matmul, smallest batch where
#: Newton–Schulz's fixed per-op overhead (~0.2 ms) is amortised)
EIGH_OVER_BMM = ((5, 8.0, 512), (10, 26.0, 64), (20, 24.0, 32), (30, 19.0, 16), (40, 14.0, 16))


@dataclass
class InvSqrtResult:
    """A^{-1/2} with the number of Newton–Schulz iterations and of eigh fallbacks."""

    inv_sqrt: Tensor
    iterations: int
    n_fallback: int


def buffer(workspace: dict[str, Tensor] | None, name: str, shape: tuple, like: Tensor) -> Tensor:
    """An uninitialised tensor of ``shape`` like ``like``, reused from ``workspace`` when it fits.

    Reusing buffers avoids the page faults of fresh multi-MB allocations, which
    on CPU can cost as much as the small batched matmuls themselves.
    """
    shape = tuple(shape)
    if workspace is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    b = workspace.get(name)
    if (
        b is None
        or b.dtype != like.dtype
        or b.device != like.device
        or b.numel() < math.prod(shape)
    ):
        b = workspace[name] = torch.empty(math.prod(shape), dtype=like.dtype, device=like.device)
    return b.view(-1)[: math.prod(shape)].view(shape)


def _default_tol(dtype: torch.dtype) -> float:
    return DEFAULT_TOL.get(dtype, math.sqrt(torch.finfo(dtype).eps))


def spectral_upper_bound(A: Tensor, lower: float = 0.0) -> Tensor:
    """Upper bound on λ_max of symmetric ``A`` ``(..., N, N)`` with all λ ≥ ``lower``.

    The least of three: Gershgorin max_i Σ_j |a_ij|; tr A - (N-1)·lower (the other
    N-1 eigenvalues contribute at least ``lower`` each to the trace); and
    lower + ||A - lower·I||_F, since A - lower·I is positive semi-definite and its
    Frobenius norm sqrt(Σ (λ_i - lower)²) bounds its largest eigenvalue. For
    LETKF matrices I + YᵀR⁻¹Y the last is often the tightest (within ~15% of λ_max),
    which saves Newton–Schulz iterations.
    """
    T = A.abs()
    gersh = T.sum(-1).amax(-1)
    trace = torch.diagonal(A, dim1=-2, dim2=-1).sum(-1) - (A.shape[-1] - 1) * lower
    T.copy_(A).diagonal(dim1=-2, dim2=-1).sub_(lower)  # reuse the buffer: A - lower·I
    frob = torch.linalg.vector_norm(T, dim=(-2, -1)) + lower
    return torch.minimum(torch.minimum(gersh, trace), frob)


def inv_sqrt_eigh(A: Tensor) -> Tensor:
    """A^{-1/2} = V diag(λ^{-1/2}) Vᵀ of symmetric positive-definite ``A`` via ``eigh``."""
    lam, V = torch.linalg.eigh(A)
    return (V * lam.rsqrt().unsqueeze(-2)) @ V.mT


def _next_residual(r: float, order: int) -> float:
    """Bound on the residual after one step of order 2 or 3 from residual r (commuting case)."""
    if order == 2:
        return (3.0 * r * r + r**3) / 4.0
    return 5.0 * r**3 / 8.0 + 15.0 * r**4 / 64.0 + 9.0 * r**5 / 64.0


def _plan_step(r: float, tol: float) -> tuple[int, bool]:
    """(order, final) of the next step: the cheapest step that reaches ``tol``, else order 3."""
    if _next_residual(r, 2) <= tol:
        return 2, True
    return 3, _next_residual(r, 3) <= tol


def newton_schulz_matmuls(kappa: float, tol: float, max_iter: int = 50) -> int:
    """Batched matmuls :func:`inv_sqrt_newton_schulz` needs for spectrum in [λ, κλ] (a priori).

    Follows the residual r = ||ZY - I|| from r₀ = (κ-1)/(κ+1) (midpoint scaling)
    through the same step choices as the iteration.
    """
    r = (kappa - 1.0) / (kappa + 1.0)
    count = 0
    for k in range(max_iter):
        count += 1 if k > 0 else 0  # the residual Z Y (free while Z = I)
        if r <= tol:
            return count
        order, final = _plan_step(r, tol)
        count += (1 if order == 3 else 0) + (1 if k > 0 else 0)  # D², then P Z
        if final:
            return count
        count += 1  # Y P
        r = _next_residual(r, order)
    return count


def inv_sqrt_newton_schulz(
    A: Tensor,
    lower: float | Tensor | None = None,
    upper: Tensor | None = None,
    tol: float | None = None,
    max_iter: int = 30,
    workspace: dict[str, Tensor] | None = None,
) -> InvSqrtResult:
    """A^{-1/2} of a batch of SPD matrices by the coupled Newton–Schulz iteration.

    With s a scale putting spec(A/s) in (0, 2), Y₀ = A/s, Z₀ = I and
    D = Z Y - I: P = I - D/2 (+ 3D²/8), Y ← Y P, Z ← P Z; then Y → (A/s)^{1/2},
    Z → (A/s)^{-1/2} with order 2 (3) — the truncated binomial series of
    (I + D)^{-1/2} (Higham 2008, ch. 6: Newton–Schulz, stable coupled form). The
    order-3 step is used unless an order-2 step already reaches ``tol``. s is the
    midpoint (lower + upper)/2 of the spectral bounds: ``upper`` defaults to
    :func:`spectral_upper_bound`, ``lower`` to 0 (pass e.g. 1 for I + PSD).
    Iterates until every ||Z Y - I||_F < ``tol`` (the final check is skipped
    when the residual recurrence, r' = (3r² + r³)/4 for order 2 and
    5r³/8 + 15r⁴/64 + 9r⁵/64 for order 3, already guarantees it);
    matrices not converged after ``max_iter`` (or non-finite) use ``eigh``.
    A⁻¹ is Z Z (see :func:`spd_inverse`). With a ``workspace`` dict the
    buffers (and the returned matrix) are reused between calls.
    """
    if A.shape[-1] != A.shape[-2]:
        raise ValueError(
            f"inv_sqrt_newton_schulz: A must be square (..., N, N), got {tuple(A.shape)}"
        )
    tol = _default_tol(A.dtype) if tol is None else float(tol)
    N = A.shape[-1]
    if A.numel() == 0:
        return InvSqrtResult(A.clone(), 0, 0)
    lo_f = 0.0 if lower is None or isinstance(lower, Tensor) else float(lower)
    hi = spectral_upper_bound(A, lo_f) if upper is None else torch.as_tensor(upper).to(A)
    lo = (
        torch.zeros((), dtype=A.dtype, device=A.device)
        if lower is None
        else torch.as_tensor(lower).to(A)
    )
    s = (0.5 * (lo + hi)).expand(A.shape[:-2]).reshape(-1, 1, 1)
    A3 = A.reshape(-1, N, N)
    # preallocated buffers and out= products: fresh multi-MB tensors per step
    # cost page faults comparable to the small matmuls themselves
    Y = torch.div(A3, s, out=buffer(workspace, "ns_y", A3.shape, A))
    M, T, Z, W = (buffer(workspace, f"ns_{k}", A3.shape, A) for k in "mtzw")
    res = torch.full(Y.shape[:1], math.inf, dtype=A.dtype, device=A.device)
    done = torch.zeros(Y.shape[:1], dtype=torch.bool, device=A.device)
    identity = True  # Z₀ = I, kept implicit
    it = 0
    for it in range(1, max_iter + 1):
        if identity:
            M.copy_(Y)
        else:
            torch.bmm(Z, Y, out=M)
        M.diagonal(dim1=-2, dim2=-1).sub_(1.0)  # D = Z Y - I
        res = torch.linalg.vector_norm(M, dim=(-2, -1))
        done = res <= tol
        if bool(done.all()):
            break
        order, final = _plan_step(float(res.max()), tol)
        if order == 2:
            torch.mul(M, -0.5, out=T)  # P = I - D/2 = (3I - Z Y)/2
        else:
            torch.bmm(M, M, out=T)
            T.mul_(0.375).sub_(M, alpha=0.5)  # P = I - D/2 + 3D²/8
        T.diagonal(dim1=-2, dim2=-1).add_(1.0)
        if identity:
            Z.copy_(T)
            identity = False
        else:
            torch.bmm(T, Z, out=W)
            Z, W = W, Z
        if final:
            res, done = (
                torch.full_like(res, _next_residual(float(res.max()), order)),
                torch.ones_like(done),
            )
            break
        torch.bmm(Y, T, out=M)
        Y, M = M, Y
    if identity:
        Z.copy_(torch.eye(N, dtype=A.dtype, device=A.device).expand_as(Y))
    Z.div_(s.sqrt())
    Z = Z.reshape(A.shape)
    bad = ~(done & torch.isfinite(res)).reshape(A.shape[:-2])
    n_bad = int(bad.sum())
    if n_bad:
        Z[bad] = inv_sqrt_eigh(A[bad])
    return InvSqrtResult(Z, it, n_bad)


def spd_inverse(A: Tensor, lower: float | Tensor | None = None, tol: float | None = None) -> Tensor:
    """A⁻¹ = Z Z with Z = A^{-1/2} from :func:`inv_sqrt_newton_schulz` (symmetric by construction)."""
    Z = inv_sqrt_newton_schulz(A, lower=lower, tol=tol).inv_sqrt
    return Z @ Z


def _interp_table(N: int, col: int) -> float:
    pts = EIGH_OVER_BMM
    if N <= pts[0][0]:
        return float(pts[0][col])
    for p0, p1 in itertools.pairwise(pts):
        if N <= p1[0]:
            return p0[col] + (p1[col] - p0[col]) * (N - p0[0]) / (p1[0] - p0[0])
    return float(pts[-1][col])


def newton_schulz_min_batch(N: int) -> float:
    """Smallest batch of N×N matrices for which Newton–Schulz can beat ``eigh`` (measured)."""
    return _interp_table(N, 2)


def eigh_over_bmm(N: int) -> float:
    """Measured cost ratio (one eigh : one matmul) per batched N×N matrix, interpolated in N."""
    return _interp_table(N, 1)


def prefer_newton_schulz(N: int, kappa: float, tol: float, batch: int | None = None) -> bool:
    """Whether Newton–Schulz is predicted cheaper than ``eigh`` for N×N matrices with condition ≤ κ.

    Rule (measured, see ``EIGH_OVER_BMM``): NS if its a-priori matmul count
    (:func:`newton_schulz_matmuls`) is below 0.8 × the eigh/matmul cost ratio
    for N (0.8 covers the elementwise work between matmuls) and, when given,
    the batch is large enough to amortise NS's fixed per-operation overhead.
    """
    if not math.isfinite(kappa):
        return False
    if batch is not None and batch < newton_schulz_min_batch(N):
        return False
    return newton_schulz_matmuls(kappa, tol) < 0.8 * eigh_over_bmm(N)
