"""A^{-1/2} and A^{-1} of SPD matrices with a backward that stays finite at repeated eigenvalues.

``torch.linalg.eigh``'s backward divides by λ_i − λ_j, so it is infinite where
eigenvalues coincide — and in an ensemble filter they do: C = I + S Sᵀ has the
eigenvalue 1 repeated N − p times when fewer observations than members are seen
(every LETKF point far from its observations). Matrix functions need no
eigenvectors' derivative: with A = V Λ Vᵀ the Fréchet derivative of f(A) is
(Daleckii & Krein 1965; Higham 2008, Thm. 3.11)

    L_f(A, E) = V (D ∘ (Vᵀ E V)) Vᵀ,   D_ij = (f(λ_i) − f(λ_j)) / (λ_i − λ_j)  (f'(λ_i) if equal),

which is self-adjoint, so it is also the backward. For f = λ^{-1/2} and f = λ^{-1}
the divided differences have closed forms without cancellation,
−1 / (√λ_i √λ_j (√λ_i + √λ_j)) and −1 / (λ_i λ_j), valid for equal λ too.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _divided_differences(lam: Tensor) -> tuple[Tensor, Tensor]:
    """D for f = λ^{-1/2} and for f = λ^{-1}, ``(..., N, N)``, exact at λ_i = λ_j."""
    r = lam.sqrt()
    ri, rj = r.unsqueeze(-1), r.unsqueeze(-2)
    d_inv_sqrt = -1.0 / (ri * rj * (ri + rj))
    d_inv = -1.0 / (lam.unsqueeze(-1) * lam.unsqueeze(-2))
    return d_inv_sqrt, d_inv


class _InvSqrtAndInv(torch.autograd.Function):
    """(A^{-1/2}, A^{-1}) of symmetric positive-definite A from one ``eigh``; Daleckii–Krein backward."""

    @staticmethod
    def forward(A: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        lam, V = torch.linalg.eigh(A)
        inv_sqrt = (V * lam.rsqrt().unsqueeze(-2)) @ V.mT
        inv = (V * lam.reciprocal().unsqueeze(-2)) @ V.mT
        return inv_sqrt, inv, lam, V

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, _, lam, V = output
        ctx.save_for_backward(lam, V)
        ctx.mark_non_differentiable(lam, V)

    @staticmethod
    def backward(ctx, g_inv_sqrt: Tensor, g_inv: Tensor, _g_lam, _g_V):
        lam, V = ctx.saved_tensors
        d_inv_sqrt, d_inv = _divided_differences(lam)
        inner = torch.zeros_like(V)
        if g_inv_sqrt is not None:
            inner = inner + d_inv_sqrt * (V.mT @ g_inv_sqrt @ V)
        if g_inv is not None:
            inner = inner + d_inv * (V.mT @ g_inv @ V)
        grad = V @ inner @ V.mT
        return 0.5 * (grad + grad.mT)


def inv_sqrt_and_inv(A: Tensor) -> tuple[Tensor, Tensor]:
    """A^{-1/2} and A^{-1} of symmetric positive-definite ``A`` ``(..., N, N)``.

    One eigendecomposition; gradients by the Daleckii–Krein formula, finite for
    repeated eigenvalues (where ``eigh``'s own backward is not). ``A`` is treated as
    symmetric: its gradient is symmetric.
    """
    inv_sqrt, inv, _, _ = _InvSqrtAndInv.apply(A)
    return inv_sqrt, inv
