"""Robust observation norms for variational quality control (VarQC): Huber and Gaussian-plus-flat.

The observation term of 3D-Var/4D-Var is 1/2 |r|^2 for the whitened residual
r = R^{-1/2}(y - H(x)). VarQC replaces each 1/2 r_i^2 by a robust penalty
phi(r_i). To keep the Gauss–Newton least-squares form J = 1/2|v|^2 + 1/2|rho(r)|^2
the norm acts through the residual transform

    rho(r) = sign(r) sqrt(2 phi(r)),   so that 1/2 rho(r)^2 = phi(r),

and ``weight(r)`` is the VarQC weight psi(r)/r (psi = phi'), the factor by
which the observation's quadratic weight is scaled at the analysis: 1 for a
fully used observation, -> 0 for a rejected one. Observations with final
weight < 0.5 are flagged QC_VARQC (4).

* :class:`Huber`: phi = r^2/2 for |r| <= c, c|r| - c^2/2 beyond (Huber 1964;
  Tavolato & Isaksen 2015); convex, bounded influence psi = c sign(r).
* :class:`GaussianFlat`: the negative log of a Gaussian-plus-flat mixture,
  p(r) ∝ (1 - A) N(r; 0, 1) + A / (2 d) on |r| < d (Lorenc & Hammon 1988;
  Andersson & Järvinen 1999): phi = -log[(gamma + exp(-r^2/2)) / (gamma + 1)],
  gamma = A sqrt(2 pi) / ((1 - A) 2 d); weight = exp(-r^2/2) / (gamma + exp(-r^2/2)),
  the posterior probability that the observation is good. Non-convex: a
  gross error is rejected entirely (zero influence), not just bounded.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = ["GaussianFlat", "Huber", "RobustNorm", "as_robust_norm", "varqc_flags"]


class RobustNorm(ABC):
    """A per-observation robust penalty phi(r) on whitened residuals, used through rho(r)."""

    @abstractmethod
    def penalty(self, r: Tensor) -> Tensor:
        """phi(r), elementwise (phi(r) ~ r^2/2 near 0)."""

    @abstractmethod
    def weight(self, r: Tensor) -> Tensor:
        """VarQC weight psi(r)/r in (0, 1], elementwise."""

    def transform(self, r: Tensor) -> Tensor:
        """rho(r) = sign(r) sqrt(2 phi(r)); 1/2 rho^2 = phi. Override where a stabler form exists."""
        return torch.sign(r) * (2.0 * self.penalty(r)).clamp_min(0).sqrt()

    def __call__(self, r: Tensor) -> Tensor:
        return self.transform(r)


class Huber(RobustNorm):
    """Huber norm with threshold ``c`` (in units of the observation-error std).

    rho(r) = r for |r| <= c, sign(r) sqrt(2 c |r| - c^2) beyond: continuous
    with a continuous derivative at |r| = c. With c larger than every |r| it
    is the identity, so the analysis equals the quadratic one.
    """

    def __init__(self, c: float = 2.0):
        if not (math.isfinite(c) and c > 0):
            raise ValueError(f"Huber: threshold c must be finite and > 0, got {c}")
        self.c = float(c)

    def penalty(self, r: Tensor) -> Tensor:
        a = r.abs()
        return torch.where(a <= self.c, 0.5 * r * r, self.c * a - 0.5 * self.c**2)

    def transform(self, r: Tensor) -> Tensor:
        a = r.abs()
        # the clamp keeps the unused branch (and its gradient) finite for |r| <= c
        outer = torch.sign(r) * (2.0 * self.c * a - self.c**2).clamp_min(self.c**2).sqrt()
        return torch.where(a <= self.c, r, outer)

    def weight(self, r: Tensor) -> Tensor:
        return torch.clamp(self.c / r.abs().clamp_min(1e-300), max=1.0)


class GaussianFlat(RobustNorm):
    """Gaussian-plus-flat mixture with gross-error prior probability ``A`` and flat half-width ``d`` (in sigma_o).

    phi(r) = -log[(gamma + exp(-r^2/2)) / (gamma + 1)], gamma = A sqrt(2 pi) / ((1 - A) 2 d)
    (Andersson & Järvinen 1999, eqs. 3-6). rho(r) = r g(r^2) with
    g(u) = sqrt(2 phi / u), which tends to 1/sqrt(1 + gamma) at u = 0.
    """

    def __init__(self, A: float = 0.05, d: float = 15.0):
        if not (0.0 < A < 1.0):
            raise ValueError(f"GaussianFlat: A must lie in (0, 1), got {A}")
        if not (math.isfinite(d) and d > 0):
            raise ValueError(f"GaussianFlat: d must be finite and > 0, got {d}")
        self.A, self.d = float(A), float(d)
        self.gamma = self.A * math.sqrt(2.0 * math.pi) / ((1.0 - self.A) * 2.0 * self.d)

    def penalty(self, r: Tensor) -> Tensor:
        g = self.gamma
        return math.log1p(g) - torch.logaddexp(torch.full_like(r, math.log(g)), -0.5 * r * r)

    def transform(self, r: Tensor) -> Tensor:
        u = r * r
        small = u < 1e-8
        u_safe = torch.where(small, torch.ones_like(u), u)
        g = torch.sqrt(2.0 * self.penalty(torch.sqrt(u_safe)) / u_safe)
        return r * torch.where(small, torch.full_like(u, 1.0 / math.sqrt(1.0 + self.gamma)), g)

    def weight(self, r: Tensor) -> Tensor:
        e = -0.5 * r * r
        return torch.exp(e - torch.logaddexp(torch.full_like(r, math.log(self.gamma)), e))


#: names a config uses for the norms: ``robust: {name: huber, c: 1.5}``
NORMS: dict[str, type[RobustNorm]] = {"huber": Huber, "gaussian_flat": GaussianFlat}


def as_robust_norm(spec: RobustNorm | dict | None, who: str = "robust") -> RobustNorm | None:
    """A norm from itself, None, or a config mapping ``{"name": "huber" | "gaussian_flat", **params}``."""
    if spec is None or isinstance(spec, RobustNorm):
        return spec
    if not isinstance(spec, dict) or spec.get("name") not in NORMS:
        raise ValueError(
            f"{who}: give a RobustNorm or a mapping with name one of {', '.join(NORMS)} and its "
            f"parameters (e.g. {{name: huber, c: 1.5}}), got {spec!r}"
        )
    params = {k: v for k, v in spec.items() if k != "name"}
    try:
        return NORMS[spec["name"]](**params)
    except TypeError as err:
        raise ValueError(f"{who}: {err}") from None


def varqc_flags(weights: Tensor, valid: Tensor, threshold: float = 0.5) -> Tensor:
    """int8 flags ``(p,)`` of all observations from the VarQC weights of the valid ones.

    0 good, 1 missing (``valid`` False), 4 (QC_VARQC) where the final weight < ``threshold``.
    """
    flags = torch.where(valid, 0, 1).to(torch.int8)
    bad = torch.zeros_like(valid)
    bad[valid] = weights.to(valid.device) < threshold
    return torch.where(bad, torch.tensor(4, dtype=torch.int8, device=flags.device), flags)
