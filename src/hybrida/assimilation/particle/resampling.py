"""Resampling schemes and weight utilities of particle filters (log-domain, batched).

Every scheme maps normalised weights ``(..., N)`` to ``M`` (default N)
sorted particle indices ``(..., M)`` such that particle i is selected N_i
times with E[N_i] = M w_i (Douc, Cappé & Moulines 2005; Doucet & Johansen
2009). Leading dimensions are independent weight vectors (e.g. one per grid
point in a local particle filter). Cumulative sums are formed in float64 and
all randomness comes from the explicit ``generator``.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: accepted resampling scheme names
SCHEMES = ("systematic", "stratified", "multinomial", "residual")


def _work_dtype(t: Tensor) -> torch.dtype:
    return t.dtype if t.device.type == "mps" else torch.float64


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """U(0, 1) draws of ``shape`` from ``generator`` (on its device), moved to ``like``'s device."""
    device = generator.device if generator is not None else like.device
    u = torch.rand(shape, generator=generator, dtype=_work_dtype(like), device=device)
    return u.to(like.device)


def normalise_log_weights(logw: Tensor) -> tuple[Tensor, Tensor]:
    """Normalised weights w_i = exp(l_i - logsumexp(l)) and log Σ exp(l_i) over the last dim.

    NaN log-weights count as -inf (impossible particles). Where every entry is
    -inf the weights are uniform and the log-normaliser is -inf, so the result
    never holds NaN.
    """
    logw = torch.nan_to_num(logw, nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf)
    log_norm = torch.logsumexp(logw, -1, keepdim=True)
    dead = ~torch.isfinite(log_norm)
    w = torch.exp(logw - torch.where(dead, torch.zeros_like(log_norm), log_norm))
    w = torch.where(dead, torch.full_like(w, 1.0 / w.shape[-1]), w)
    # the exp of a finite logsumexp-shifted vector sums to 1 up to rounding; renormalise it away
    w = w / w.sum(-1, keepdim=True)
    return w, log_norm.squeeze(-1)


def ess(weights: Tensor) -> Tensor:
    """Effective sample size 1 / Σ w_i² of normalised weights over the last dim (Kong et al. 1994)."""
    return 1.0 / (weights * weights).sum(-1)


def _cdf(weights: Tensor) -> Tensor:
    w = weights.to(_work_dtype(weights)).clamp_min(0)
    c = torch.cumsum(w, -1)
    return c / c[..., -1:]


def _last_positive(weights: Tensor) -> Tensor:
    """Index of the last particle with positive weight (guards cdf rounding at the top)."""
    N = weights.shape[-1]
    flipped = torch.flip(weights > 0, (-1,)).to(torch.uint8)
    return (N - 1 - flipped.argmax(-1, keepdim=True)).clamp_min(0)


def _invert(weights: Tensor, positions: Tensor) -> Tensor:
    """Indices i with C_{i-1} <= position < C_i for sorted positions in [0, 1)."""
    idx = torch.searchsorted(_cdf(weights), positions.contiguous(), right=True)
    return torch.minimum(idx, _last_positive(weights))


def _check(weights: Tensor, M: int | None) -> int:
    if weights.ndim < 1 or weights.shape[-1] < 1:
        raise ValueError(
            f"weights must have shape (..., N) with N >= 1, got {tuple(weights.shape)}"
        )
    M = weights.shape[-1] if M is None else M
    if isinstance(M, bool) or not isinstance(M, int) or M < 1:
        raise ValueError(f"n_out must be an integer >= 1, got {M!r}")
    return M


def systematic(
    weights: Tensor,
    generator: torch.Generator | None = None,
    n_out: int | None = None,
    u: Tensor | None = None,
) -> Tensor:
    """Systematic resampling: positions (u + k) / M, k = 0..M-1, one u ~ U(0, 1) per vector.

    Each particle is selected ⌊M w_i⌋ or ⌈M w_i⌉ times (Kitagawa 1996;
    Carpenter, Clifford & Fearnhead 1999). ``u`` (shape broadcastable to the
    leading dims, e.g. a scalar shared by all grid points of a local filter)
    overrides the draw.
    """
    M = _check(weights, n_out)
    lead = weights.shape[:-1]
    if u is None:
        u = uniform((*lead, 1), generator, weights)
    else:
        u = torch.as_tensor(u).to(device=weights.device, dtype=_work_dtype(weights))
        u = u.reshape(*u.shape, 1).expand(*lead, 1)
    k = torch.arange(M, device=weights.device, dtype=u.dtype)
    return _invert(weights, (u + k) / M)


def stratified(
    weights: Tensor, generator: torch.Generator | None = None, n_out: int | None = None
) -> Tensor:
    """Stratified resampling: positions (k + u_k) / M with independent u_k ~ U(0, 1) (Kitagawa 1996)."""
    M = _check(weights, n_out)
    u = uniform((*weights.shape[:-1], M), generator, weights)
    k = torch.arange(M, device=weights.device, dtype=u.dtype)
    return _invert(weights, (k + u) / M)


def multinomial(
    weights: Tensor, generator: torch.Generator | None = None, n_out: int | None = None
) -> Tensor:
    """Multinomial resampling: M i.i.d. draws from the weights (Gordon, Salmond & Smith 1993); sorted."""
    M = _check(weights, n_out)
    u, _ = torch.sort(uniform((*weights.shape[:-1], M), generator, weights), -1)
    return _invert(weights, u)


def counts_to_indices(counts: Tensor, M: int) -> Tensor:
    """Sorted indices ``(..., M)`` in which particle i appears ``counts[..., i]`` times (Σ counts = M)."""
    edges = torch.cumsum(counts, -1)
    k = torch.arange(M, device=counts.device, dtype=edges.dtype).expand(*counts.shape[:-1], M)
    return torch.searchsorted(edges, k.contiguous(), right=True)


def residual(
    weights: Tensor, generator: torch.Generator | None = None, n_out: int | None = None
) -> Tensor:
    """Residual resampling: ⌊M w_i⌋ copies, then the remaining R multinomially from M w_i - ⌊M w_i⌋.

    (Liu & Chen 1998.) The R residual draws use the first R of M sorted
    uniforms per weight vector so that the call stays batched.
    """
    M = _check(weights, n_out)
    w = weights.to(_work_dtype(weights)).clamp_min(0)
    w = w / w.sum(-1, keepdim=True)
    scaled = M * w
    base = torch.floor(scaled)
    rest = (M - base.sum(-1, keepdim=True)).long()  # (..., 1) residual draws
    frac = (scaled - base).clamp_min(0)
    frac_w = torch.where(
        frac.sum(-1, keepdim=True) > 0, frac, torch.ones_like(frac)
    )  # only used where rest > 0, when frac sums to rest > 0
    u = uniform((*weights.shape[:-1], M), generator, weights)
    drawn = _invert(frac_w, u)
    use = torch.arange(M, device=weights.device) < rest
    extra = torch.zeros_like(base).scatter_add_(-1, drawn, use.to(base.dtype))
    return counts_to_indices((base + extra).long(), M)


_SCHEMES = {
    "systematic": systematic,
    "stratified": stratified,
    "multinomial": multinomial,
    "residual": residual,
}


def resample(
    weights: Tensor,
    generator: torch.Generator | None = None,
    scheme: str = "systematic",
    n_out: int | None = None,
) -> Tensor:
    """Sorted indices ``(..., M)`` drawn from normalised ``weights`` by the named ``scheme``."""
    if scheme not in _SCHEMES:
        raise ValueError(
            f"unknown resampling scheme '{scheme}'; choose one of: {', '.join(SCHEMES)}"
        )
    return _SCHEMES[scheme](weights, generator, n_out)


def duplicated(idx: Tensor) -> Tensor:
    """Mask of the entries of sorted indices ``(..., M)`` whose particle was selected more than once."""
    same_prev = torch.zeros_like(idx, dtype=torch.bool)
    same_prev[..., 1:] = idx[..., 1:] == idx[..., :-1]
    same_next = torch.zeros_like(same_prev)
    same_next[..., :-1] = same_prev[..., 1:]
    return same_prev | same_next
