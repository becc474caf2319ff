"""Observation-error models R: diagonal and correlated Gaussian."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor


class ErrorModel(ABC):
    """Gaussian observation error e ~ N(0, R)."""

    @property
    @abstractmethod
    def cov(self) -> Tensor:
        """The full covariance matrix R (p, p)."""

    @property
    @abstractmethod
    def variance(self) -> Tensor:
        """The diagonal of R (p,)."""

    @abstractmethod
    def whiten(self, d: Tensor) -> Tensor:
        """R^{-1/2} d over the last dimension."""

    @abstractmethod
    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
        """Draw errors of shape ``(*shape, p)``."""

    @abstractmethod
    def subset(self, idx: Tensor) -> ErrorModel:
        """The error model of the observations ``idx`` only."""

    def logpdf(self, d: Tensor) -> Tensor:
        """log N(d; 0, R) over the last dimension."""
        p = d.shape[-1]
        w = self.whiten(d)
        return -0.5 * (w * w).sum(-1) - 0.5 * self.logdet() - 0.5 * p * math.log(2 * math.pi)

    @abstractmethod
    def logdet(self) -> Tensor:
        """log det R."""

    @property
    def p(self) -> int:
        """Number of observations."""
        return self.variance.shape[-1]

    def to_device(self, device: torch.device | str) -> ErrorModel:
        """This error model with its tensors on ``device`` (itself when they are there already)."""
        return self

    @property
    def std(self) -> Tensor:
        """Observation-error standard deviations sqrt(diag R) (p,)."""
        return self.variance.sqrt()


def _draw(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """N(0, 1) draws on the generator's device (a CPU generator on a GPU run), moved to ``like``'s device.

    Drawing where the generator lives keeps the numbers the same on every device.
    """
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=device).to(like.device)


class DiagonalError(ErrorModel):
    """Uncorrelated errors: R = diag(variance)."""

    def __init__(self, variance: Tensor):
        variance = torch.as_tensor(variance)
        if variance.ndim != 1:
            raise ValueError(f"DiagonalError: variance must be 1-D (p,), got shape {tuple(variance.shape)}")
        if not bool(torch.isfinite(variance).all()) or bool((variance <= 0).any()):
            raise ValueError("DiagonalError: observation-error variances must be finite and > 0")
        self._var = variance

    @property
    def cov(self) -> Tensor:
        return torch.diag(self._var)

    @property
    def variance(self) -> Tensor:
        return self._var

    def whiten(self, d: Tensor) -> Tensor:
        return d / self._var.to(d).sqrt()

    def sample(self, shape, generator=None):
        z = _draw((*shape, self.p), generator, self._var)
        return z * self._var.sqrt()

    def to_device(self, device):
        device = torch.device(device)
        if self._var.device == device:
            return self
        moved = object.__new__(DiagonalError)  # checked already: no second validation (a GPU sync)
        moved._var = self._var.to(device)
        return moved

    def subset(self, idx):
        return DiagonalError(self._var[idx])

    def logdet(self):
        return torch.log(self._var).sum()


class CorrelatedError(ErrorModel):
    """Correlated errors with a full symmetric positive-definite R."""

    def __init__(self, cov: Tensor):
        cov = torch.as_tensor(cov)
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
            raise ValueError(f"CorrelatedError: R must be square (p, p), got shape {tuple(cov.shape)}")
        if not bool(torch.isfinite(cov).all()):
            raise ValueError("CorrelatedError: R contains NaN or inf")
        scale = float(cov.abs().max()) if cov.numel() else 1.0
        if not torch.allclose(cov, cov.mT, atol=1e-10 * scale):
            raise ValueError("CorrelatedError: R must be symmetric")
        chol, info = torch.linalg.cholesky_ex(cov)
        if int(info) != 0:
            raise ValueError("CorrelatedError: R must be positive definite (Cholesky failed)")
        self._cov = cov
        self._chol = chol

    @property
    def cov(self) -> Tensor:
        return self._cov

    @property
    def variance(self) -> Tensor:
        return torch.diagonal(self._cov)

    def whiten(self, d: Tensor) -> Tensor:
        L = self._chol.to(d)
        return torch.linalg.solve_triangular(L, d.unsqueeze(-1), upper=False).squeeze(-1)

    def sample(self, shape, generator=None):
        z = _draw((*shape, self.p), generator, self._cov)
        return z @ self._chol.mT

    def to_device(self, device):
        device = torch.device(device)
        if self._cov.device == device:
            return self
        moved = object.__new__(CorrelatedError)  # the Cholesky factor moves with R, not recomputed
        moved._cov, moved._chol = self._cov.to(device), self._chol.to(device)
        return moved

    def subset(self, idx):
        return CorrelatedError(self._cov[idx][:, idx])

    def logdet(self):
        return 2.0 * torch.log(torch.diagonal(self._chol)).sum()
