"""Hybrid models: a physical model plus a learned correction of its resolvent or its tendency.

Two forms (Farchi et al. 2021, J. Comput. Sci.; Bocquet, Farchi & Malartic 2021):

- ``kind="resolvent"``: x_{k+1} = M(x_k) + s g((x_k - mu) / sigma), the correction
  is added after each step of the physical model M;
- ``kind="tendency"``: dx/dt = f(x) + s g((x - mu) / sigma), integrated with one RK4
  step of the physical model's ``dt`` (Brajard et al. 2021 learn the unresolved-scale
  forcing this way).

g is any ``nn.Module`` mapping (B, n) to (B, n). Networks that also expose
``apply_weights(theta, z)`` with a flat weight vector ``theta`` (:class:`PolyConv`) can be
run with per-member weights (online learning, :mod:`hybrida.learn.online`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hybrida.learn.surrogate import seeded
from hybrida.learn.train import FitResult, fit
from hybrida.models.base import Model
from hybrida.models.integrators import rk4_step

__all__ = ["KINDS", "CorrectedModel", "PolyConv", "correction_targets", "fit_correction", "monomials", "polyconv_apply"]

KINDS = ("resolvent", "tendency")


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


def _stat(v: Tensor | float, name: str) -> Tensor:
    t = torch.as_tensor(v, dtype=torch.float64).detach().clone()
    if t.ndim > 1 or not bool(torch.isfinite(t).all()):
        raise ValueError(f"CorrectedModel: {name} must be a finite scalar or 1-D tensor")
    return t


class CorrectedModel(nn.Module, Model):
    """Physics plus learned correction, x_{k+1} = M(x_k) + s g(z_k) or RK4 of f(x) + s g(z), z = (x - mu)/sigma.

    ``physics``: any :class:`~hybrida.models.base.Model` (with a ``tendency``
    for ``kind="tendency"``); ``net``: (B, n) -> (B, n). ``in_mean`` (mu),
    ``in_std`` (sigma) and ``out_std`` (s) are float64 buffers (scalars or
    (n,)). dtype and device follow the state: weights in another dtype are
    cast differentiably on the fly. ``t`` is passed to the physics.
    With g = 0 the model equals the physics exactly.
    """

    def __init__(
        self,
        physics: Model,
        net: nn.Module,
        kind: str = "resolvent",
        in_mean: Tensor | float = 0.0,
        in_std: Tensor | float = 1.0,
        out_std: Tensor | float = 1.0,
    ) -> None:
        nn.Module.__init__(self)
        if not isinstance(physics, Model):
            raise TypeError(f"CorrectedModel: physics must be a Model, got {type(physics).__name__}")
        if not isinstance(net, nn.Module):
            raise TypeError(f"CorrectedModel: net must be a torch.nn.Module, got {type(net).__name__}")
        if kind not in KINDS:
            raise ValueError(f"CorrectedModel: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if kind == "tendency" and not callable(getattr(physics, "tendency", None)):
            raise ValueError("CorrectedModel: kind='tendency' needs a physics model with a tendency(x, t)")
        self.physics = physics
        self.net = net
        self.kind = kind
        self.n = physics.n
        self.dt = physics.dt
        self.register_buffer("in_mean", _stat(in_mean, "in_mean"))
        self.register_buffer("in_std", _stat(in_std, "in_std"))
        self.register_buffer("out_std", _stat(out_std, "out_std"))
        if bool((self.in_std <= 0).any()) or bool((self.out_std <= 0).any()):
            raise ValueError("CorrectedModel: in_std and out_std must be > 0")

    # -- the correction -------------------------------------------------------------
    def _net(self, z: Tensor, theta: Tensor | None) -> Tensor:
        if theta is not None:
            if not callable(getattr(self.net, "apply_weights", None)):
                raise ValueError("CorrectedModel: per-member weights need a net with apply_weights(theta, z), e.g. PolyConv")
            return self.net.apply_weights(theta, z)
        shape = z.shape
        z2 = z.reshape(-1, shape[-1])
        p = next(self.net.parameters(), None)
        if p is None or (p.dtype == z.dtype and p.device == z.device):
            g = self.net(z2)
        else:
            tensors = {k: v.to(z) for k, v in self.net.named_parameters()}
            tensors.update({k: v.to(z) for k, v in self.net.named_buffers()})
            g = torch.func.functional_call(self.net, tensors, (z2,))
        return g.reshape(shape)

    def correction(self, x: Tensor, theta: Tensor | None = None) -> Tensor:
        """s g((x - mu) / sigma): the resolvent increment or the tendency correction at ``x``."""
        z = (x - self.in_mean.to(x)) / self.in_std.to(x)
        return self.out_std.to(x) * self._net(z, theta)

    def step_with(self, x: Tensor, theta: Tensor | None = None, t: float = 0.0) -> Tensor:
        """One hybrid step; ``theta`` ``(..., P)`` gives each leading index its own correction weights."""
        self.check_state(x)
        if not x.is_floating_point():
            raise ValueError(f"CorrectedModel: state must be a floating-point tensor, got {x.dtype}")
        if self.kind == "resolvent":
            return self.physics.step(x, t) + self.correction(x, theta)
        phys = self.physics.tendency  # type: ignore[attr-defined]
        return rk4_step(lambda v, s: phys(v, s) + self.correction(v, theta), x, t, self.dt)

    def step(self, x: Tensor, t: float = 0.0) -> Tensor:
        """One hybrid step of length ``dt`` over any leading dimensions."""
        return self.step_with(x, None, t)

    def forward(self, x: Tensor) -> Tensor:
        return self.step(x)

    def initial_state(self, *args, **kwargs) -> Tensor:
        """The physics model's initial state."""
        return self.physics.initial_state(*args, **kwargs)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"CorrectedModel({self.physics!r}, net={type(self.net).__name__}, kind={self.kind!r})"


def correction_targets(physics: Model, analyses: Tensor, steps_between: int = 1) -> Tensor:
    """Analysis increments of the physics, x^a_{k+1} - M^s(x^a_k): what a resolvent correction must learn, ``(K, n)``."""
    with torch.no_grad():
        return analyses[1:] - physics.forecast(analyses[:-1], steps_between)


def fit_correction(
    physics: Model,
    net: nn.Module,
    analyses: Tensor | Sequence[Tensor],
    *,
    kind: str = "resolvent",
    steps_between: int = 1,
    valid_fraction: float = 0.2,
    rollout: int = 1,
    in_mean: float | None = None,
    in_std: float | None = None,
    out_std: float | None = None,
    **fit_kwargs,
) -> tuple[CorrectedModel, FitResult]:
    """Train a correction on analysis pairs (x^a_k, x^a_{k+s}) and return the hybrid model and history.

    The loss is the rollout loss of :func:`hybrida.learn.train.fit`, i.e.
    |M_hyb^s(x^a_k) - x^a_{k+s}|^2 (Farchi et al. 2021 offline learning on
    analysis-forecast pairs; Brajard et al. 2021). Normalisation: mu and sigma
    pooled over the analyses, s = std of the one-cycle residuals
    x^a_{k+1} - M^s(x^a_k) (divided by s dt for a tendency). The last
    ``valid_fraction`` of each archive validates (early stopping).
    ``in_mean``/``in_std``/``out_std`` override the estimated normalisation
    (e.g. to match an online learner's, for transfer learning).
    """
    archives = [analyses] if isinstance(analyses, Tensor) else list(analyses)
    if not archives or any(a.ndim != 2 or a.shape[0] < 3 for a in archives):
        raise ValueError("fit_correction: analyses must be (T >= 3, n) tensors")
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"fit_correction: valid_fraction must be in [0, 1), got {valid_fraction}")
    allx = torch.cat(archives).to(torch.float64)
    resid = torch.cat([correction_targets(physics, a.to(torch.float64), steps_between) for a in archives])
    if out_std is None:
        out_std = float(resid.std())
        if kind == "tendency":
            out_std /= steps_between * physics.dt
        if not math.isfinite(out_std) or out_std <= 0:
            raise ValueError("fit_correction: the analyses have no residual with respect to the physics")
    mu = float(allx.mean()) if in_mean is None else in_mean
    sd = float(allx.std()) if in_std is None else in_std
    model = CorrectedModel(physics, net, kind, mu, sd, out_std)
    train, valid = [], []
    for a in archives:
        cut = a.shape[0] - round(valid_fraction * a.shape[0]) if valid_fraction > 0 else a.shape[0]
        train.append(a[:cut])
        if valid_fraction > 0:
            valid.append(a[cut:])
    result = fit(model, train, valid or None, rollout=rollout, steps_between=steps_between, **fit_kwargs)
    return model, result
