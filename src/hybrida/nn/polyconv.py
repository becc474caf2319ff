"""A small translation-invariant polynomial network, linear in its weights (Bocquet et al. 2019).

Its weights can also be passed in (``apply_weights(theta, z)``), one vector per ensemble
member, which is what online learning of a correction by an augmented-state filter needs.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from hybrida.nn.common import seeded


def monomials(degree: int, kernel_size: int) -> list[tuple[int, ...]]:
    """Offsets (sorted tuples in -r..r, r = kernel_size // 2) of the monomials of degree 1..``degree`` on the stencil."""
    r = kernel_size // 2
    offs = range(-r, r + 1)
    return [m for d in range(1, degree + 1) for m in itertools.combinations_with_replacement(offs, d)]


def polyconv_features(z: Tensor, degree: int, kernel_size: int) -> Tensor:
    """Monomials prod_j z_{i+s_j} of degree 1..``degree`` on the periodic stencil around i: ``(..., n, M)``."""
    r = kernel_size // 2
    shifted = {s: torch.roll(z, -s, -1) for s in range(-r, r + 1)}
    feats, cache = [], {}
    for m in monomials(degree, kernel_size):
        f = shifted[m[0]] if len(m) == 1 else cache[m[:-1]] * shifted[m[-1]]
        cache[m] = f
        feats.append(f)
    return torch.stack(feats, -1)


def polyconv_apply(theta: Tensor, z: Tensor, degree: int, kernel_size: int) -> Tensor:
    """g_i(z) = b + sum_m w_m prod_{s in m} z_{i+s} with theta = [w (M monomials), b], batched.

    A translation-invariant polynomial of the state on a periodic stencil (the
    local polynomial regression of Bocquet et al. 2019 for L96), linear in the
    weights; ``theta`` ``(..., P)`` broadcasts against the leading dimensions
    of ``z`` ``(..., n)`` (one weight vector per member).
    """
    feats = polyconv_features(z, degree, kernel_size)
    w, b = theta[..., :-1], theta[..., -1:]
    return (feats @ w.unsqueeze(-1)).squeeze(-1) + b


class PolyConv(nn.Module):
    """Small translation-invariant correction: a polynomial of degree <= ``degree`` of z_{i-r}..z_{i+r}.

    M + 1 weights (M monomials; 20 for degree 3 on a width-3 stencil): few
    enough for an augmented-state ensemble filter to estimate them. Starts
    at zero (g = 0) unless ``scale`` > 0 draws small random weights with ``seed``.
    """

    def __init__(self, degree: int = 3, kernel_size: int = 3, seed: int | None = None, scale: float = 0.0):
        super().__init__()
        if isinstance(degree, bool) or int(degree) != degree or degree < 1:
            raise ValueError(f"PolyConv: degree must be an integer >= 1, got {degree}")
        if isinstance(kernel_size, bool) or int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"PolyConv: kernel_size must be an odd integer >= 1, got {kernel_size}")
        self.degree, self.kernel_size = int(degree), int(kernel_size)
        self.config = {"degree": self.degree, "kernel_size": self.kernel_size}
        self._monomials = monomials(self.degree, self.kernel_size)
        theta = torch.zeros(self.n_weights, dtype=torch.float64)
        if scale > 0:
            with seeded(seed):
                theta = scale * torch.randn(self.n_weights, dtype=torch.float64)
        self.theta = nn.Parameter(theta)

    @property
    def n_weights(self) -> int:
        return len(self._monomials) + 1

    def index(self, *offsets: int) -> int:
        """Position in ``theta`` of the monomial prod z_{i+s} over ``offsets`` (no offsets: the bias)."""
        if not offsets:
            return self.n_weights - 1
        key = tuple(sorted(offsets))
        if key not in self._monomials:
            raise ValueError(f"PolyConv: no monomial with offsets {offsets}")
        return self._monomials.index(key)

    def apply_weights(self, theta: Tensor, z: Tensor) -> Tensor:
        """The network with the weights ``theta`` ``(..., P)`` instead of its own."""
        return polyconv_apply(theta.to(z), z, self.degree, self.kernel_size)

    def forward(self, z: Tensor) -> Tensor:
        return self.apply_weights(self.theta, z)
