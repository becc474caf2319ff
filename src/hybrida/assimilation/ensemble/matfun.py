"""Batched SPD matrix functions A^{-1/2}, A^{-1} from batched matmuls (Newton–Schulz).

Small symmetric eigenproblems are slow on CPU when there are many of them
(one LAPACK call per matrix); the coupled Newton–Schulz iteration needs only
batched matrix products (Higham 2008, "Functions of Matrices", §6.7, eq. 6.35).
Matrices that do not converge fall back to ``torch.linalg.eigh``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: default stopping tolerance on ||Z Y - I||_F per dtype (float64, float32)
DEFAULT_TOL = {torch.float64: 1e-12, torch.float32: 1e-5}

#: measured (CPU, 1 thread, torch 2.x) cost of one batched eigh over one batched
#: N×N matmul, for N = 5, 10, 20, 30, 40 (benchmarks/letkf_scaling.py --calibrate)
EIGH_OVER_BMM = ((5, 12.0), (10, 26.0), (20, 24.0), (30, 19.0), (40, 14.0))


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
    if b is None or b.dtype != like.dtype or b.device != like.device or b.numel() < math.prod(shape):
        b = workspace[name] = torch.empty(math.prod(shape), dtype=like.dtype, device=like.device)
    return b.view(-1)[: math.prod(shape)].view(shape)


def _default_tol(dtype: torch.dtype) -> float:
    return DEFAULT_TOL.get(dtype, math.sqrt(torch.finfo(dtype).eps))


def spectral_upper_bound(A: Tensor) -> Tensor:
    """Upper bound on λ_max of symmetric PSD ``A`` ``(..., N, N)``: min(Gershgorin, trace).

    Gershgorin: λ ≤ max_i Σ_j |a_ij|; trace: λ_max ≤ Σ λ = tr A for PSD A.
    """
    gersh = A.abs().sum(-1).amax(-1)
    return torch.minimum(gersh, torch.diagonal(A, dim1=-2, dim2=-1).sum(-1))


def inv_sqrt_eigh(A: Tensor) -> Tensor:
    """A^{-1/2} = V diag(λ^{-1/2}) Vᵀ of symmetric positive-definite ``A`` via ``eigh``."""
    lam, V = torch.linalg.eigh(A)
    return (V * lam.rsqrt().unsqueeze(-2)) @ V.mT


def newton_schulz_matmuls(kappa: float, tol: float, max_iter: int = 50) -> int:
    """Batched matmuls :func:`inv_sqrt_newton_schulz` needs for spectrum in [λ, κλ] (a priori).

    Uses the eigenvalue recurrence r ← (3r² + r³)/4 of the residual r = 1 - zy
    from r₀ = (κ-1)/(κ+1) (midpoint scaling), and the same stopping rule.
    """
    r = (kappa - 1.0) / (kappa + 1.0)
    count = 0
    for k in range(max_iter):
        # residual check costs a matmul except in the first iteration (Z0 = I)
        count += 1 if k > 0 else 0
        if r <= tol:
            return count
        nxt = (3.0 * r * r + r**3) / 4.0
        if nxt <= tol:
            return count + (1 if k > 0 else 0)
        count += 2 if k > 0 else 1
        r = nxt
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

    With s a scale putting spec(A/s) in (0, 2), Y₀ = A/s, Z₀ = I:
    T = (3I - Z Y)/2, Y ← Y T, Z ← T Z; then Y → (A/s)^{1/2}, Z → (A/s)^{-1/2}
    quadratically (Higham 2008, eq. 6.35; stable coupled form). s is the
    midpoint (lower + upper)/2 of the spectral bounds: ``upper`` defaults to
    :func:`spectral_upper_bound`, ``lower`` to 0 (pass e.g. 1 for I + PSD).
    Iterates until every ||Z Y - I||_F < ``tol`` (the last update is skipped
    when the residual recurrence r' = (3r² + r³)/4 already guarantees it);
    matrices not converged after ``max_iter`` (or non-finite) use ``eigh``.
    A⁻¹ is Z Z (see :func:`spd_inverse`). With a ``workspace`` dict the
    buffers (and the returned matrix) are reused between calls.
    """
    if A.shape[-1] != A.shape[-2]:
        raise ValueError(f"inv_sqrt_newton_schulz: A must be square (..., N, N), got {tuple(A.shape)}")
    tol = _default_tol(A.dtype) if tol is None else float(tol)
    N = A.shape[-1]
    if A.numel() == 0:
        return InvSqrtResult(A.clone(), 0, 0)
    hi = spectral_upper_bound(A) if upper is None else torch.as_tensor(upper).to(A)
    lo = torch.zeros((), dtype=A.dtype, device=A.device) if lower is None else torch.as_tensor(lower).to(A)
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
        M.diagonal(dim1=-2, dim2=-1).sub_(1.0)  # M = Z Y - I
        res = torch.linalg.vector_norm(M, dim=(-2, -1))
        done = res <= tol
        if bool(done.all()):
            break
        torch.mul(M, -0.5, out=T)
        T.diagonal(dim1=-2, dim2=-1).add_(1.0)  # T = (3I - Z Y)/2
        if identity:
            Z.copy_(T)
            identity = False
        else:
            torch.bmm(T, Z, out=W)
            Z, W = W, Z
        # r' = (3r² + r³)/4 bounds the next residual (spectral norm <= Frobenius)
        nxt = (3.0 * res * res + res**3) / 4.0
        if bool((nxt <= tol).all()):
            res, done = nxt, torch.ones_like(done)
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


def eigh_over_bmm(N: int) -> float:
    """Measured cost ratio (one eigh : one matmul) per batched N×N matrix, interpolated."""
    pts = EIGH_OVER_BMM
    if N <= pts[0][0]:
        return pts[0][1]
    for (n0, r0), (n1, r1) in zip(pts[:-1], pts[1:]):
        if N <= n1:
            return r0 + (r1 - r0) * (N - n0) / (n1 - n0)
    return pts[-1][1]


def prefer_newton_schulz(N: int, kappa: float, tol: float) -> bool:
    """Whether Newton–Schulz is predicted cheaper than ``eigh`` for N×N matrices with condition ≤ κ.

    Rule: NS if its a-priori matmul count (:func:`newton_schulz_matmuls`) is below
    0.8 × the measured eigh/matmul cost ratio :func:`eigh_over_bmm` (0.8 covers
    the elementwise work between matmuls).
    """
    if not math.isfinite(kappa):
        return False
    return newton_schulz_matmuls(kappa, tol) < 0.8 * eigh_over_bmm(N)
