"""Observation networks: identity, fixed/regular/random subsets and a radiance-like operator.

Every network is an :class:`ObservationSystem` whose :meth:`network` returns
the :class:`Observation` structure of one cycle (``y`` NaN) with its operator,
error model and locations in grid-index units. Errors are uncorrelated
(``correlation_length=0``) or exponentially correlated in periodic grid
distance, R_ij = s_i s_j exp(-d_ij / L) (a positive-definite kernel on the
circle, Gneiting 2013).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from hybrida.observations.base import Observation
from hybrida.observations.errors import CorrelatedError, DiagonalError, ErrorModel
from hybrida.observations.system import ObservationSystem

__all__ = [
    "EveryKthObs",
    "IdentityObs",
    "RadianceObs",
    "RandomSubsetObs",
    "SubsetObs",
    "exponential_error",
    "periodic_distance",
]


def periodic_distance(a: Tensor, b: Tensor, n: int) -> Tensor:
    """Pairwise distance min(|a_i - b_j|, n - |a_i - b_j|) on a periodic grid of ``n`` points."""
    d = (a.unsqueeze(-1) - b.unsqueeze(-2)).abs().remainder(n)
    return torch.minimum(d, n - d)


def exponential_error(std: Tensor, locations: Tensor, n: int, length: float) -> ErrorModel:
    """Error model with R_ij = std_i std_j exp(-d_ij / length), or diag(std^2) when length = 0."""
    if length == 0.0:
        return DiagonalError(std * std)
    corr = torch.exp(-periodic_distance(locations, locations, n) / length)
    return CorrelatedError(std.unsqueeze(-1) * corr * std.unsqueeze(-2))


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


class _Network(ObservationSystem):
    """Shared keyword arguments and validation of all networks."""

    def __init__(
        self,
        n: int,
        std: float | Sequence[float] | Tensor = 1.0,
        correlation_length: float = 0.0,
        every: int = 1,
        dtype: torch.dtype = torch.float64,
    ):
        self.n = _check_int(f"{type(self).__name__}: n", n, 1)
        self.every = _check_int(f"{type(self).__name__}: every", every, 1)
        L = float(correlation_length)
        if not math.isfinite(L) or L < 0:
            raise ValueError(
                f"{type(self).__name__}: correlation_length must be finite and >= 0, got {correlation_length}"
            )
        self.correlation_length = L
        self.dtype = dtype
        s = torch.as_tensor(std, dtype=dtype)
        if s.ndim > 1:
            raise ValueError(f"{type(self).__name__}: std must be a scalar or 1-D sequence, got shape {tuple(s.shape)}")
        if not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
            raise ValueError(f"{type(self).__name__}: std must be finite and > 0 (got {std})")
        self.std = s

    def _std_for(self, p: int, idx: Tensor | None = None) -> Tensor:
        """Per-observation std of the ``p`` observations (optionally the state indices ``idx``)."""
        s = self.std
        if s.ndim == 0:
            return s.expand(p).clone()
        if s.shape[0] == p:
            return s.clone()
        if idx is not None and s.shape[0] == self.n:
            return s[idx]
        raise ValueError(
            f"{type(self).__name__}: std has {s.shape[0]} values but there are {p} observations; "
            "give a scalar or one std per observation"
        )

    def _index_observation(self, idx: Tensor, cycle: int, std: Tensor | None = None) -> Observation:
        """Observation of the state components ``idx`` (H x = x[..., idx])."""
        p = idx.shape[0]
        std = self._std_for(p) if std is None else std
        locations = idx.to(self.dtype)

        def operator(x: Tensor) -> Tensor:
            return x.index_select(-1, idx.to(x.device))

        return Observation(
            y=torch.full((p,), float("nan"), dtype=self.dtype),
            operator=operator,
            error=exponential_error(std, locations, self.n, self.correlation_length),
            locations=locations,
            meta={"cycle": cycle, "network": type(self).__name__},
            indices=idx,
            n=self.n,
        )


class _FixedIndexNetwork(_Network):
    """A network observing the same state components ``self.indices`` every cycle."""

    indices: Tensor

    def _set_indices(self, indices: Sequence[int] | Tensor) -> None:
        idx = torch.as_tensor(indices)
        name = type(self).__name__
        if idx.ndim != 1 or idx.numel() == 0:
            raise ValueError(f"{name}: indices must be a non-empty 1-D sequence of integers")
        if idx.is_floating_point() or idx.dtype == torch.bool:
            raise ValueError(f"{name}: indices must be integers, got dtype {idx.dtype}")
        idx = idx.long()
        if bool((idx < 0).any()) or bool((idx >= self.n).any()):
            raise ValueError(f"{name}: indices must lie in [0, {self.n - 1}], got {idx.tolist()}")
        if torch.unique(idx).numel() != idx.numel():
            raise ValueError(f"{name}: indices must not repeat, got {idx.tolist()}")
        self.indices = idx
        self._std_for(idx.numel())  # fail at construction, not at the first cycle

    @property
    def p(self) -> int:
        """Number of observations per cycle."""
        return int(self.indices.numel())

    def network(self, cycle: int, generator: torch.Generator | None = None) -> Observation:
        """The fixed index network (``y`` NaN); ``generator`` is unused."""
        return self._index_observation(self.indices, cycle)


class IdentityObs(_FixedIndexNetwork):
    """Observe every state variable: H = I."""

    def __init__(self, n: int, std: float | Sequence[float] | Tensor = 1.0, **kwargs):
        super().__init__(n, std, **kwargs)
        self._set_indices(torch.arange(self.n))


class SubsetObs(_FixedIndexNetwork):
    """Observe a fixed subset ``indices`` of the state variables (kept in the given order)."""

    def __init__(
        self, n: int, indices: Sequence[int] | Tensor, std: float | Sequence[float] | Tensor = 1.0, **kwargs
    ):
        super().__init__(n, std, **kwargs)
        self._set_indices(indices)


class EveryKthObs(_FixedIndexNetwork):
    """Observe every ``k``-th variable starting at ``offset``: indices offset, offset+k, ..."""

    def __init__(
        self, n: int, k: int, offset: int = 0, std: float | Sequence[float] | Tensor = 1.0, **kwargs
    ):
        super().__init__(n, std, **kwargs)
        self.k = _check_int("EveryKthObs: k", k, 1)
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < n:
            raise ValueError(f"EveryKthObs: offset must be an integer in [0, {n - 1}], got {offset!r}")
        self.offset = offset
        self._set_indices(torch.arange(offset, self.n, self.k))


class RandomSubsetObs(_Network):
    """Observe ``p`` variables drawn anew each cycle without replacement (Brajard et al. 2020).

    ``p`` is a count (int, 1..n) or a fraction (float in (0, 1), rounded to
    the nearest count, at least 1). Indices are sorted and drawn with the
    ``generator`` passed to :meth:`network`, so a seeded generator makes the
    sequence of networks reproducible. ``std`` may be a scalar, one value per
    observation (length p) or one value per state variable (length n).
    """

    def __init__(self, n: int, p: float, std: float | Sequence[float] | Tensor = 1.0, **kwargs):
        super().__init__(n, std, **kwargs)
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise ValueError(f"RandomSubsetObs: p must be an int count or a float fraction, got {p!r}")  # noqa: TRY004
        if isinstance(p, float):
            if not 0.0 < p < 1.0:
                raise ValueError(f"RandomSubsetObs: a fractional p must lie in (0, 1), got {p}")
            count = max(1, round(p * self.n))
        else:
            if not 1 <= p <= self.n:
                raise ValueError(f"RandomSubsetObs: p must lie in [1, n={self.n}], got {p}")
            count = p
        self.p = count
        if self.std.ndim == 1 and self.std.shape[0] not in (self.p, self.n):
            raise ValueError(
                f"RandomSubsetObs: std has {self.std.shape[0]} values; give a scalar, p={self.p} or n={self.n} values"
            )

    def network(self, cycle: int, generator: torch.Generator | None = None) -> Observation:
        """A fresh random subset of ``p`` sorted indices drawn with ``generator``."""
        device = generator.device if generator is not None else None  # None: torch's default device
        idx = torch.randperm(self.n, generator=generator, device=device)[: self.p].sort().values.cpu()
        return self._index_observation(idx, cycle, self._std_for(self.p, idx))


_NONLINEARITIES = ("tanh", "square", "exp", "linear")


class RadianceObs(_Network):
    """Radiance-like smooth nonlinear observations: y_c = sum_i w_ci g(x_i).

    Channel ``c`` has a Gaussian weighting function over the periodic grid,
    w_ci ∝ exp(-d(i, x_c)^2 / (2 width^2)) normalised to sum 1, centred at
    x_c = c n / n_channels (its location). The pointwise nonlinearity with
    amplitude ``scale`` (a typical magnitude of the state) is

    * ``"tanh"``:   g(x) = scale tanh(x / scale) (saturating; ~x for |x| << scale)
    * ``"square"``: g(x) = x^2 / scale
    * ``"exp"``:    g(x) = scale (exp(x / scale) - 1) (~x for |x| << scale)
    * ``"linear"``: g(x) = x (then H is linear and ``matrix`` is set).

    The operator is made of differentiable torch ops, so TL/adjoint (and
    Jacobians for EKF/OI/3D-Var) come from autodiff.
    """

    def __init__(
        self,
        n: int,
        n_channels: int,
        width: float,
        nonlinearity: str = "tanh",
        *,
        scale: float = 5.0,
        std: float | Sequence[float] | Tensor = 1.0,
        **kwargs,
    ):
        super().__init__(n, std, **kwargs)
        self.n_channels = _check_int("RadianceObs: n_channels", n_channels, 1)
        if self.n_channels > self.n:
            raise ValueError(f"RadianceObs: n_channels={n_channels} must be <= n={self.n}")
        if not math.isfinite(width) or width <= 0:
            raise ValueError(f"RadianceObs: width must be finite and > 0 grid points, got {width}")
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(
                f"RadianceObs: unknown nonlinearity {nonlinearity!r}; choose one of: {', '.join(_NONLINEARITIES)}"
            )
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"RadianceObs: scale must be finite and > 0, got {scale}")
        self.width = float(width)
        self.nonlinearity = nonlinearity
        self.scale = float(scale)
        self.centres = torch.arange(self.n_channels, dtype=self.dtype) * (self.n / self.n_channels)
        grid = torch.arange(self.n, dtype=self.dtype)
        d = periodic_distance(self.centres, grid, self.n)
        w = torch.exp(-0.5 * (d / self.width) ** 2)
        self.weights = w / w.sum(-1, keepdim=True)
        self._std_for(self.n_channels)

    def g(self, x: Tensor) -> Tensor:
        """The pointwise nonlinearity applied before the channel weighting."""
        s = self.scale
        if self.nonlinearity == "tanh":
            return s * torch.tanh(x / s)
        if self.nonlinearity == "square":
            return x * x / s
        if self.nonlinearity == "exp":
            return s * torch.expm1(x / s)
        return x

    def operator(self, x: Tensor) -> Tensor:
        """H(x) = g(x) W^T over the last dimension: (..., n) -> (..., n_channels)."""
        if x.shape[-1] != self.n:
            raise ValueError(f"RadianceObs: state has last dimension {x.shape[-1]}, expected n={self.n}")
        return self.g(x) @ self.weights.to(x).mT

    def network(self, cycle: int, generator: torch.Generator | None = None) -> Observation:
        """The channel network (``y`` NaN); ``generator`` is unused."""
        p = self.n_channels
        std = self._std_for(p)
        return Observation(
            y=torch.full((p,), float("nan"), dtype=self.dtype),
            operator=self.operator,
            error=exponential_error(std, self.centres, self.n, self.correlation_length),
            locations=self.centres.clone(),
            matrix=self.weights.clone() if self.nonlinearity == "linear" else None,
            meta={"cycle": cycle, "network": "RadianceObs", "nonlinearity": self.nonlinearity},
        )
