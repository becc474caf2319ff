"""A homogeneous background covariance on a doubly periodic grid, applied by FFT instead of as a dense matrix.

For fields that are statistically invariant under translations, B is a
convolution: with the orthonormal 2-D Fourier transform F, B = F⁻¹ S F where
S(k) is an L x L Hermitian matrix per wavenumber k (L fields, e.g. the layers of
a quasi-geostrophic model), the spectral density (Gaspari & Cohn 1999, sec. 2;
Berre 2000, the spectral B of limited-area models). B^{1/2} = F⁻¹ S(k)^{1/2} F
is symmetric and costs two FFTs per application, so 4D-Var's control-variable
transform x = x_b + B^{1/2} v needs no n x n matrix and no n x n
eigendecomposition.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["HomogeneousB", "translation_average"]


def _grid(shape: tuple[int, int, int] | list[int], n: int, owner: str) -> tuple[int, int, int]:
    if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"{owner}: grid must be three positive integers (fields, ny, nx), got {shape!r}")
    L, ny, nx = shape
    if L * ny * nx != n:
        raise ValueError(f"{owner}: grid {L} x {ny} x {nx} = {L * ny * nx} does not match the state size n={n}")
    return L, ny, nx


def translation_average(cov: Tensor, grid: tuple[int, int, int]) -> Tensor:
    """c_ij(δ) = mean over x of cov(field i at x, field j at x + δ), shape (L, L, ny, nx).

    The covariance of the homogeneous field closest to ``cov``: its circulant
    projection (the average of ``cov`` over all periodic translations).
    """
    L, ny, nx = grid
    C = cov.reshape(L, ny, nx, L, ny, nx)
    y = torch.arange(ny, device=cov.device)
    x = torch.arange(nx, device=cov.device)
    ys = (y[:, None] + y[None, :]) % ny  # [y, dy] -> y + dy
    xs = (x[:, None] + x[None, :]) % nx
    # shifted[i, y, x, j, dy, dx] = C[i, y, x, j, y + dy, x + dx]
    shifted = C[:, y[:, None, None, None], x[None, :, None, None], :, ys[:, None, :, None], xs[None, :, None, :]]
    # advanced indexing moved the broadcast dims (y, x, dy, dx) first: (y, x, dy, dx, i, j)
    return shifted.mean(dim=(0, 1)).permute(2, 3, 0, 1).contiguous()


def _hermitian_sqrt(S: Tensor) -> Tensor:
    """S^{1/2} of Hermitian positive semi-definite blocks ``(..., L, L)``; negative round-off eigenvalues set to 0."""
    S = 0.5 * (S + S.conj().transpose(-1, -2))
    lam, U = torch.linalg.eigh(S)
    return (U * lam.clamp_min(0).sqrt().unsqueeze(-2).to(U.dtype)) @ U.conj().transpose(-1, -2)


class HomogeneousB:
    """B^{1/2} of a homogeneous covariance on ``grid`` = (fields L, ny, nx), applied with ``@`` like a matrix.

    ``sqrt_spectrum`` is S(k)^{1/2}, shape (ny, nx // 2 + 1, L, L) (complex,
    Hermitian per k), for the real FFT's half plane of wavenumbers. The state
    is laid out field-major: x = [field 0 (ny, nx) row-major, field 1, ...].
    """

    def __init__(self, sqrt_spectrum: Tensor, grid: tuple[int, int, int]):
        L, ny, nx = grid
        if sqrt_spectrum.shape != (ny, nx // 2 + 1, L, L):
            raise ValueError(
                f"HomogeneousB: sqrt_spectrum must have shape {(ny, nx // 2 + 1, L, L)}, got {tuple(sqrt_spectrum.shape)}"
            )
        self.sqrt_spectrum, self.grid, self.n = sqrt_spectrum, (L, ny, nx), L * ny * nx

    @classmethod
    def from_covariance(cls, cov: Tensor, grid: tuple[int, int, int] | list[int], scale: float = 1.0) -> HomogeneousB:
        """The homogeneous B closest to ``scale`` x ``cov`` (its translation average), factored per wavenumber.

        (B v)_i(x) = Σ_j Σ_δ c_ij(δ) v_j(x + δ), so S_ij(k) = Σ_δ c_ij(δ) e^{+i k·δ}
        (the conjugate of the forward DFT of the real c); S(k)^{1/2} by an
        eigendecomposition of each L x L block, negative round-off eigenvalues set to 0.
        """
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
            raise ValueError(f"HomogeneousB: cov must be a square matrix, got shape {tuple(cov.shape)}")
        if not torch.isfinite(cov).all():
            raise ValueError("HomogeneousB: cov has NaN or infinite entries")
        if not scale > 0:
            raise ValueError(f"HomogeneousB: scale must be > 0, got {scale}")
        grid = _grid(tuple(grid), cov.shape[0], "HomogeneousB")
        c = translation_average(scale * cov, grid)  # (L, L, ny, nx)
        S = torch.fft.rfft2(c).conj().permute(2, 3, 0, 1)  # (ny, nx//2+1, L, L)
        return cls(_hermitian_sqrt(S), grid)

    @classmethod
    def from_anomalies(
        cls, anomalies: Tensor, grid: tuple[int, int, int] | list[int], scale: float = 1.0
    ) -> HomogeneousB:
        """The same B as :meth:`from_covariance` of the anomalies' sample covariance, without forming it.

        With â_t = DFT(a_t) per field, S_ij(k) = Σ_t â_t,i(k) conj(â_t,j(k)) / ((T - 1) ny nx):
        the translation-averaged covariance's spectrum is the mean cross-periodogram
        (Wiener–Khinchin), so memory is O(T n), not O(n²) (n = 32 768 at 128×128×2).
        """
        if anomalies.ndim != 2 or anomalies.shape[0] < 2:
            raise ValueError(f"HomogeneousB: anomalies must be (T >= 2, n), got shape {tuple(anomalies.shape)}")
        if not torch.isfinite(anomalies).all():
            raise ValueError("HomogeneousB: anomalies have NaN or infinite entries")
        if not scale > 0:
            raise ValueError(f"HomogeneousB: scale must be > 0, got {scale}")
        T, n = anomalies.shape
        L, ny, nx = _grid(tuple(grid), n, "HomogeneousB")
        A = torch.fft.rfft2(anomalies.reshape(T, L, ny, nx))  # (T, L, ny, nxh)
        S = torch.einsum("tiyx,tjyx->yxij", A, A.conj()) * (scale / ((T - 1) * ny * nx))
        return cls(_hermitian_sqrt(S), (L, ny, nx))

    def to(self, like: Tensor) -> HomogeneousB:
        """The same operator with its spectrum on ``like``'s device and matching complex dtype."""
        ctype = torch.complex128 if like.dtype == torch.float64 else torch.complex64
        return HomogeneousB(self.sqrt_spectrum.to(device=like.device, dtype=ctype), self.grid)

    def __matmul__(self, v: Tensor) -> Tensor:
        """B^{1/2} v for ``v`` of shape (..., n): F⁻¹ S(k)^{1/2} F v, differentiable."""
        L, ny, nx = self.grid
        if v.shape[-1] != self.n:
            raise ValueError(f"HomogeneousB: vector has last dimension {v.shape[-1]}, expected n={self.n}")
        V = torch.fft.rfft2(v.reshape(*v.shape[:-1], L, ny, nx), norm="ortho")
        W = torch.einsum("yxij,...jyx->...iyx", self.sqrt_spectrum.to(V.dtype), V)
        return torch.fft.irfft2(W, s=(ny, nx), norm="ortho").reshape(v.shape)

    def dense_sqrt(self) -> Tensor:
        """B^{1/2} as an n x n matrix (small grids: tests and diagnostics)."""
        real = torch.float64 if self.sqrt_spectrum.dtype == torch.complex128 else torch.float32
        eye = torch.eye(self.n, dtype=real, device=self.sqrt_spectrum.device)
        return (self @ eye).T

    def variance(self) -> Tensor:
        """The diagonal of B per field (constant in space), shape (L,)."""
        _, ny, nx = self.grid
        S = self.sqrt_spectrum @ self.sqrt_spectrum.conj().transpose(-1, -2)
        # mean of S(k) over the full plane of wavenumbers; the half plane counts the mirrored columns twice
        weight = torch.full((nx // 2 + 1,), 2.0, dtype=torch.float64)
        weight[0] = 1.0
        if nx % 2 == 0:
            weight[-1] = 1.0
        diag = torch.diagonal(S, dim1=-2, dim2=-1).real  # (ny, nxh, L)
        return (diag * weight[None, :, None].to(diag)).sum(dim=(0, 1)) / (ny * nx)

    def __repr__(self) -> str:
        L, ny, nx = self.grid
        return f"HomogeneousB(grid={L}x{ny}x{nx})"
