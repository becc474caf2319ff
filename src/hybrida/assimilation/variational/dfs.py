"""Degrees of freedom for signal (DFS): how much the analysis draws from the observations.

With the whitened Jacobian G = R^{-1/2} H B^{1/2} (H the generalised
observation operator, over a whole 4D-Var window: H_i ∘ M_{0->i}), the
influence matrix of the (linearised) analysis is

    S = R^{-1/2} H K R^{1/2} = G (I + G^T G)^{-1} G^T = U diag(s^2 / (1 + s^2)) U^T,

with G = U diag(s) V^T, so DFS = tr(HK) = tr(S) = sum_i s_i^2 / (1 + s_i^2)
(Rodgers 2000; Cardinali, Pezzulli & Andersson 2004). The partial trace of S
over a block of observations whose errors are uncorrelated with the others
(one :class:`~hybrida.observations.base.Observation`, or a group of them)
equals the partial trace of HK over that block: the per-group DFS. For
control spaces too large to form G, :func:`dfs_randomized` estimates the
traces with Rademacher probes (Hutchinson 1989). Pure functions: reusable by
3D-Var, 4D-Var and EnVar.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch
from torch import Tensor

from hybrida.assimilation.variational.minimize import conjugate_gradient

__all__ = [
    "dfs_by_group",
    "dfs_from_gain",
    "dfs_from_jacobian",
    "dfs_from_singular_values",
    "dfs_per_observation",
    "dfs_randomized",
    "group_sums",
]

MatVec = Callable[[Tensor], Tensor]


def dfs_from_singular_values(s: Tensor) -> float:
    """DFS = sum_i s_i^2 / (1 + s_i^2) from the singular values of the whitened Jacobian."""
    s2 = s * s
    return float((s2 / (1.0 + s2)).sum())


def dfs_from_jacobian(G: Tensor) -> float:
    """DFS = tr(G (I + G^T G)^{-1} G^T) of the whitened Jacobian G (m, n) (exact, via its SVD)."""
    if G.numel() == 0:
        return 0.0
    return dfs_from_singular_values(torch.linalg.svdvals(G))


def dfs_per_observation(G: Tensor) -> Tensor:
    """Diagonal (m,) of the whitened influence matrix S = G (I + G^T G)^{-1} G^T; sums to the DFS.

    With diagonal R this is diag(HK), each observation's self-sensitivity
    (Cardinali et al. 2004); with correlated R only block partial traces over
    uncorrelated blocks are invariant (see :func:`dfs_by_group`).
    """
    if G.numel() == 0:
        return G.new_zeros(G.shape[0])
    U, s, _ = torch.linalg.svd(G, full_matrices=False)
    s2 = s * s
    return (U * U) @ (s2 / (1.0 + s2))


def group_sums(values: Tensor, labels: Sequence[Hashable]) -> dict[Hashable, float]:
    """Sum ``values`` (m,) per label (one label per entry), in order of first appearance."""
    if len(labels) != values.shape[-1]:
        raise ValueError(f"group_sums: {len(labels)} labels for {values.shape[-1]} values")
    out: dict[Hashable, float] = {}
    for label, v in zip(labels, values.tolist()):
        out[label] = out.get(label, 0.0) + v
    return out


def dfs_by_group(G: Tensor, labels: Sequence[Hashable]) -> dict[Hashable, float]:
    """Per-group DFS: partial traces of the influence matrix over the rows of G labelled alike.

    Equals the partial trace of HK over the group when the group's errors are
    uncorrelated with the other observations' (R block-diagonal by group).
    """
    return group_sums(dfs_per_observation(G), labels)


def dfs_from_gain(H: Tensor, K: Tensor) -> float:
    """DFS = tr(H K) from the (linearised) observation operator H (p, n) and the gain K (n, p)."""
    return float(torch.trace(H @ K))


def dfs_randomized(
    tl: MatVec,
    adj: MatVec,
    m: int,
    n_probes: int,
    generator: torch.Generator,
    like: Tensor,
    labels: Sequence[Hashable] | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> tuple[float, dict[Hashable, float]]:
    """Hutchinson estimate of DFS = tr(S), S = G (I + G^T G)^{-1} G^T, from G products only.

    Each Rademacher probe z (m,) costs one CG solve with I + G^T G; z * (S z)
    is an unbiased estimate of diag(S), so the same probes give the per-group
    partial traces (``labels``: one per observation). ``like`` fixes dtype
    and device of the control vector; ``tl(w) = G w``, ``adj(u) = G^T u``.
    """
    if n_probes < 1:
        raise ValueError(f"dfs_randomized: n_probes must be >= 1, got {n_probes}")
    diag = torch.zeros(m, dtype=like.dtype, device=like.device)

    def hess(w: Tensor) -> Tensor:
        return w + adj(tl(w))

    for _ in range(n_probes):
        z = (
            torch.randint(0, 2, (m,), generator=generator, device=generator.device).to(like) * 2.0
            - 1.0
        )
        x = conjugate_gradient(hess, adj(z), max_iter=max_iter, tol=tol).x
        diag = diag + z * tl(x)
    diag = diag / n_probes
    groups = group_sums(diag, labels) if labels is not None else {}
    return float(diag.sum()), groups
