"""Local ETKF with R-localization, vectorised over all grid points (Hunt et al. 2007)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hybrida.assimilation.ensemble.base import EnsembleMethod
from hybrida.assimilation.ensemble.localization import (
    Neighbours,
    Neighbours2D,
    Taper,
    check_grid,
    check_taper,
)
from hybrida.assimilation.ensemble.matfun import (
    DEFAULT_TOL,
    buffer,
    inv_sqrt_eigh,
    inv_sqrt_newton_schulz,
    newton_schulz_min_batch,
    prefer_newton_schulz,
    spectral_upper_bound,
)
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError

#: GC half-width per unit of ``loc_rad`` (REFERENCES.md convention, as in DAPPER)
GC_HALF_WIDTH_FACTOR = 1.82
#: elements per block of local problems (bounds the memory of the batched local matrices)
BLOCK_ELEMENTS = 2**22
#: local tables up to this many (point, observation) entries are cached between analyses
TABLE_CACHE_ELEMENTS = 2**25
#: accepted values of ``LETKF(solver=...)``
SOLVERS = ("auto", "eigh", "newton_schulz")


def _diagonal_variance(obs: Observation) -> Tensor:
    """The diagonal of R, or a clear error when R is correlated (R-localization needs diagonal R)."""
    err = obs.error
    if isinstance(err, DiagonalError):
        return err.variance
    R = err.cov
    if bool((R - torch.diag(torch.diagonal(R))).abs().max() > 0):
        raise ValueError(
            "LETKF: R-localization needs a diagonal R; got correlated observation errors"
        )
    return torch.diagonal(R)


def local_matrices(
    X: Tensor, index: Tensor, sqrt_weight: Tensor, workspace: dict[str, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """Local C = I + Sᵀ ρ S ``(B, c, N, N)`` and b = Sᵀ ρ d ``(B, c, N)`` from one batched product.

    ``X`` ``(B, p, N+1)`` holds [S | d] per observation: the scaled whitened
    observed anomalies R^{-1/2} Y / sqrt(N-1) and the whitened innovation;
    ``index`` / ``sqrt_weight`` ``(c, m)`` the local table and √ρ. With
    G = √ρ [S | d] gathered once, Gᵀ_{:N} G = [Sᵀ ρ S | Sᵀ ρ d] (Hunt et al. 2007).
    ``workspace`` (optional dict) reuses the large buffers between calls
    (not differentiable); without it the function is plain autograd-able torch.
    """
    B, _, N1 = X.shape
    N = N1 - 1
    c, m = index.shape
    if workspace is None:  # plain out-of-place ops: differentiable
        G = X[:, index] * sqrt_weight.unsqueeze(-1)  # (B, c, m, N+1)
        K = G.mT[..., :N, :] @ G
        C = K[..., :N] + torch.eye(N, dtype=X.dtype, device=X.device)
        return C, K[..., N]
    G = torch.index_select(X, 1, index.reshape(-1), out=buffer(workspace, "g", (B, c * m, N1), X))
    G = G.view(B * c, m, N1)
    G.mul_(sqrt_weight.reshape(1, c, m, 1).expand(B, c, m, 1).reshape(B * c, m, 1))
    K = torch.bmm(G.mT[:, :N, :], G, out=buffer(workspace, "k", (B * c, N, N1), X))
    C = buffer(workspace, "c", (B, c, N, N), X)
    C.view(B * c, N, N).copy_(K[..., :N])
    C.diagonal(dim1=-2, dim2=-1).add_(1.0)
    return C, K[..., N].view(B, c, N)


def apply_exact(xm: Tensor, a: Tensor, Z: Tensor, b: Tensor) -> Tensor:
    """Posterior members ``(B, c, N)`` at c points from the local C^{-1/2} ``Z`` and b.

    With z = Z a and u = Z b: member values x̄ + zᵀu / sqrt(N-1) + z, i.e.
    mean weights w = C⁻¹ b (aᵀ w = zᵀ u) and the symmetric transform C^{-1/2}
    (Hunt et al. 2007, eqs. 21-24); ``xm`` ``(B, c)``, ``a`` ``(B, c, N)``.
    """
    N = a.shape[-1]
    if N <= 16:  # two matrix-vector products beat one with two columns for small N (measured)
        z, u = (Z @ a.unsqueeze(-1)).squeeze(-1), (Z @ b.unsqueeze(-1)).squeeze(-1)
    else:
        zu = Z @ torch.stack((a, b), -1)  # (B, c, N, 2)
        z, u = zu[..., 0], zu[..., 1]
    mean = xm + (z * u).sum(-1) / math.sqrt(N - 1)
    return mean.unsqueeze(-1) + z


def weight_matrices(Z: Tensor, b: Tensor) -> Tensor:
    """LETKF weight matrices W = C^{-1/2} + w 1ᵀ / sqrt(N-1), w = C⁻¹ b (member = x̄ + Aᵀ W)."""
    N = b.shape[-1]
    w = (Z @ (Z @ b.unsqueeze(-1))).squeeze(-1)
    return Z + w.unsqueeze(-1) / math.sqrt(N - 1)


def apply_interpolated(xm: Tensor, a: Tensor, W: Tensor, q: Tensor) -> Tensor:
    """Members ``(B, P, N)`` at grid points q₀..q_L-1 from weights W at q linearly interpolated.

    ``W`` ``(B, L+1, N, N)`` are the weights at the analysed points ``q``
    ``(L+1,)``; point i in [q_j, q_j+1) gets (1-α) W_j + α W_j+1 with
    α = (i - q_j) / (q_j+1 - q_j) (Yang et al. 2009). ``xm`` ``(B, P)``,
    ``a`` ``(B, P, N)`` with P = q_L - q_0.
    """
    B, P, N = a.shape
    L = W.shape[1] - 1
    k = int((q[1:] - q[:-1]).max())
    pos = q[:-1, None] + torch.arange(k, device=q.device)  # (L, k) grid points
    alpha = (pos - q[:-1, None]).to(a.dtype) / (q[1:] - q[:-1])[:, None].to(a.dtype)
    a_blk = torch.nn.functional.pad(a, (0, 0, 0, L * k - P)).reshape(B, L, k, N)
    U0 = a_blk @ W[:, :-1]
    U1 = a_blk @ W[:, 1:]
    U = torch.lerp(U0, U1, alpha.unsqueeze(-1)).reshape(B, L * k, N)[:, :P]
    return xm.unsqueeze(-1) + U


class LETKF(EnsembleMethod):
    """Local ETKF: an ETKF per grid point with tapered R⁻¹ (Hunt et al. 2007).

    Grid point i (coordinate i on a periodic domain of length n) sees the
    observations within the taper support; their R⁻¹ entries are multiplied
    by GC(d / c) with c = 1.82 · ``loc_rad`` (support 2c). ``taper="none"``
    gives weight 1 inside the support (with a huge ``loc_rad``: the global
    ETKF); a callable ``taper`` f gives f(d / c) (a learned taper plugs in here). Local tables are cached per observation layout; grid points are
    processed in blocks of batched N×N problems, no loop over points.

    ``solver`` computes the local C^{-1/2}: ``"eigh"`` (LAPACK per matrix),
    ``"newton_schulz"`` (batched matmuls, :mod:`.matfun`, eigh fallback) or
    ``"auto"``: per block, Newton–Schulz when its a-priori matmul count for the
    bound κ ≤ min(Gershgorin, trace) of C (λ_min ≥ 1) is below 0.8 × the
    measured eigh/matmul cost ratio for N and the block holds enough points to
    amortise its per-op overhead (:func:`.matfun.prefer_newton_schulz`).
    ``interp_every=k`` > 1 solves only at every k-th grid point and linearly
    interpolates the weight matrices in between (Yang et al. 2009); 1 is exact.
    The object keeps reusable work buffers (a few blocks' worth, ~10-100 MB for
    large n), so one instance should not analyse from two threads at once.
    Under autograd (prior or observations requiring grad) the plain
    differentiable path with ``eigh`` is used.

    2-D grids: when ``obs.meta["grid"] = (ny, nx)`` the state is layers of a
    doubly periodic ny × nx grid (layer-major, row-major), ``obs.locations``
    are ``(p, 2)`` (row, column) in grid units, and d is the Euclidean
    distance on the torus (:class:`.Neighbours2D`; no vertical localization).
    """

    def __init__(
        self,
        N: int,
        loc_rad: float,
        infl: float = 1.0,
        rtps: float = 0.0,
        rtpp: float = 0.0,
        adaptive: bool = False,
        taper: Taper | None = "gaspari_cohn",
        solver: str = "auto",
        interp_every: int = 1,
        rot: bool = False,
    ):
        super().__init__(N, infl=infl, rtps=rtps, rtpp=rtpp, adaptive=adaptive, rot=rot)
        loc_rad = float(loc_rad)
        if math.isnan(loc_rad) or loc_rad <= 0:
            raise ValueError(f"LETKF: loc_rad must be > 0, got {loc_rad}")
        taper = check_taper(taper, "LETKF")
        if solver not in SOLVERS:
            raise ValueError(
                f"LETKF: unknown solver '{solver}'; choose one of: {', '.join(SOLVERS)}"
            )
        if isinstance(interp_every, bool) or not isinstance(interp_every, int) or interp_every < 1:
            raise ValueError(f"LETKF: interp_every must be an integer >= 1, got {interp_every!r}")
        self.loc_rad = loc_rad
        self.taper = taper
        self.solver = solver
        self.interp_every = interp_every
        self._neighbours: Neighbours | None = None
        self._plan: list | None = None
        self._plan_key: tuple | None = None
        # reused large buffers (see matfun.buffer); at most a few blocks' worth of memory
        self._workspace: dict[str, Tensor] = {}

    @property
    def half_width(self) -> float:
        """GC half-width c = 1.82 · loc_rad (grid points)."""
        return GC_HALF_WIDTH_FACTOR * self.loc_rad

    def _blocks(
        self, locations: Tensor, n: int, B: int, like: Tensor, grid: tuple[int, int] | None = None
    ) -> list:
        """Cached ``[(q, lo, hi, (index, √weight) | None)]`` blocks for this observation layout.

        ``q`` are the analysed grid points of the block (with k > 1 also the
        next analysed point, n standing for 0); ``lo:hi`` the grid points written.
        ``grid`` (ny, nx): 2-D locations on the torus (:class:`.Neighbours2D`).
        """
        nb = self._neighbours
        if (
            nb is None
            or getattr(nb, "grid", None) != grid
            or not nb.matches(locations, n, self.half_width, self.taper)
        ):
            nb = self._neighbours = (
                Neighbours(locations, n, self.half_width, self.taper)
                if grid is None
                else Neighbours2D(locations, n, self.half_width, self.taper, grid)
            )
            self._plan = None
        k, N = self.interp_every, self.N
        key = (n, B, k, like.dtype, like.device)
        if self._plan is not None and self._plan_key == key:
            return self._plan
        per_point = B * (max(nb.m_max, 1) * (N + 1) + 6 * N * N + (4 * k * N if k > 1 else 0))
        block = max(1, BLOCK_ELEMENTS // per_point)
        device = locations.device
        if k == 1:
            bounds = [(s, min(s + block, n)) for s in range(0, n, block)]
            qs = [torch.arange(s, e, device=device) for s, e in bounds]
        else:
            J = -(-n // k)
            q_all = torch.cat(
                [torch.arange(J, device=device) * k, torch.tensor([n], device=device)]
            )
            qs = [q_all[j : min(j + block, J) + 1] for j in range(0, J, block)]
            bounds = [(int(q[0]), int(q[-1])) for q in qs]
        keep = sum(len(q) for q in qs) * nb.m_max <= TABLE_CACHE_ELEMENTS
        plan = []
        for q, (lo, hi) in zip(qs, bounds):
            plan.append((q, lo, hi, self._table(nb, q, like) if keep else None))
        self._plan, self._plan_key = plan, key
        return plan

    @staticmethod
    def _table(nb: Neighbours, q: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        tab = nb.table_at(q)
        return tab.index.to(like.device), tab.weight.sqrt().to(like)

    def _inv_sqrt(self, C: Tensor, grad: bool) -> Tensor:
        """Local C^{-1/2} by the configured solver (C = I + PSD, so λ_min ≥ 1)."""
        if self.solver == "eigh" or grad:
            return inv_sqrt_eigh(C)
        batch = C.numel() // (self.N * self.N)
        if self.solver == "auto" and batch < newton_schulz_min_batch(self.N):
            return inv_sqrt_eigh(C)  # too few points to amortise NS overhead: skip the bound
        tol = DEFAULT_TOL.get(C.dtype, 1e-5)
        upper = spectral_upper_bound(C, lower=1.0)
        if self.solver == "auto" and not prefer_newton_schulz(
            self.N, float(upper.max()), tol, batch
        ):
            return inv_sqrt_eigh(C)
        res = inv_sqrt_newton_schulz(C, lower=1.0, upper=upper, tol=tol, workspace=self._workspace)
        self._diag["ns_fallback"] = self._diag.get("ns_fallback", 0.0) + res.n_fallback
        return res.inv_sqrt

    def _update(self, E: Tensor, obs: Observation, generator: torch.Generator | None) -> Tensor:
        if obs.locations is None:
            raise ValueError("LETKF: observations have no locations (obs.locations is None)")
        var = _diagonal_variance(obs).to(E)
        loc = obs.locations
        batch = E.shape[:-2]
        N, n = E.shape[-2], E.shape[-1]
        grid = obs.meta.get("grid")
        if grid is None:
            if loc.shape != (obs.p,):
                raise ValueError(
                    f"LETKF: obs.locations must have shape ({obs.p},), got {tuple(loc.shape)}"
                )
        else:  # 2-D: (row, column) locations on the torus obs.meta["grid"] = (ny, nx)
            grid = check_grid(grid, n, "LETKF: obs.meta['grid']")
            if loc.shape != (obs.p, 2):
                raise ValueError(
                    f"LETKF: with obs.meta['grid'] the locations must have shape ({obs.p}, 2), "
                    f"got {tuple(loc.shape)}"
                )
            if self.interp_every != 1:
                raise ValueError("LETKF: interp_every > 1 is 1-D only; use interp_every=1 on a 2-D grid")
        Eb = E.reshape(-1, N, n)
        B = Eb.shape[0]
        HE = obs.H(Eb)
        if HE.shape != (B, N, obs.p):
            raise ValueError(
                f"LETKF: observation operator returned shape {tuple(HE.shape)}, expected {(B, N, obs.p)}"
            )
        xm = Eb.mean(-2)
        A = Eb - xm.unsqueeze(-2)
        ym = HE.mean(-2)
        sig = var.sqrt()
        # X = [S | d] observation-major: (B, p, N+1)
        X = torch.cat(
            (
                ((HE - ym.unsqueeze(-2)) / (sig * math.sqrt(N - 1))).mT,
                ((obs.y.to(E) - ym) / sig).unsqueeze(-1),
            ),
            -1,
        )
        # under autograd: out-of-place gathers and eigh (the buffered NS is not differentiable)
        grad = torch.is_grad_enabled() and (X.requires_grad or A.requires_grad)
        ws = None if grad else self._workspace
        parts: list[Tensor] = []  # under autograd: blocks concatenated, no in-place writes
        out = None if grad else torch.empty(B, n, N, dtype=E.dtype, device=E.device)
        At = A.mT  # (B, n, N)
        for q, lo, hi, tab in self._blocks(loc.to(E.device), n, B, E, grid):
            index, sw = tab if tab is not None else self._table(self._neighbours, q, E)
            C, b = local_matrices(X, index, sw, ws)
            Z = self._inv_sqrt(C, grad)
            if self.interp_every == 1:
                res = apply_exact(xm[:, lo:hi], At[:, lo:hi], Z, b)
            else:
                res = apply_interpolated(xm[:, lo:hi], At[:, lo:hi], weight_matrices(Z, b), q)
            if out is None:
                parts.append(res)
            else:
                out[:, lo:hi] = res
        if out is None:
            out = torch.cat(parts, 1)
        return out.mT.reshape(*batch, N, n)

    def __repr__(self) -> str:
        return (
            f"LETKF(N={self.N}, loc_rad={self.loc_rad}, infl={self.infl}, rtps={self.rtps}, "
            f"rtpp={self.rtpp}, adaptive={self.adaptive}, taper='{self.taper}', "
            f"solver='{self.solver}', interp_every={self.interp_every}, rot={self.rot})"
        )
