"""Score-based data assimilation: posterior sampling of trajectory windows with a diffusion prior.

Diffusion (variance-preserving, cosine schedule of Rozet & Louppe 2023, "Score-based data
assimilation", NeurIPS, sec. 2): a normalised window z = (x - loc) / scale is noised as
z_t = μ(t) z + σ(t) ε, μ(t) = cos(ω t)², σ(t) = √(1 - μ(t)²), ω = arccos √η, t ∈ [0, 1].
A prior gives the noise prediction ε̂(z_t, t) = -σ(t) ∇ log p_t(z_t) (a trained
:class:`~hybrida.nn.score.ScoreNet`, or the closed form of a Gaussian prior for tests).

Guidance (SDA, eq. 12): the likelihood of observations y = A x + e, e ~ N(0, R), given z_t is
approximated by p(y | z_t) ≈ N(y | A x̂(z_t), R + Σ_t), with the Tweedie denoiser
ẑ = (z_t - σ ε̂) / μ, x̂ = loc + scale ẑ, and either Σ_t = γ scale² σ²/μ² I (``cov="sda"``)
or the exact denoising covariance Σ_t = scale² A (σ²/μ) ∂ẑ/∂z_t Aᵀ (``cov="tweedie"``,
Tweedie's second-order formula; exact for Gaussian priors, a dense Jacobian: small windows
only). Its gradient, by autodiff through the denoiser, turns the prior score into the
posterior score: ε̂_y = ε̂ - σ ∇_{z_t} log p(y | z_t), so one trained prior serves any
observation network. Sampler: DDIM steps (Song et al. 2021; ``eta=1`` is ancestral DDPM)
from t=1 to 0, each followed by ``corrections`` Langevin corrector steps (SDA's
predictor-corrector, step δ = τ d / |s|²).

Windows longer than the prior's training length L are scored by composition (SDA sec. 3.2):
overlapping windows with stride L/2, each time taking the noise prediction of the window in
which it is most central.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import torch
from torch import Tensor, nn

__all__ = [
    "DiffusionPrior",
    "GaussianPrior",
    "NetworkPrior",
    "check_window_observations",
    "guided_eps",
    "sample_each",
    "sample_posterior",
    "vp_schedule",
]

ETA = 1e-3


def vp_schedule(t: Tensor, eta: float = ETA) -> tuple[Tensor, Tensor]:
    """(μ(t), σ(t)) of the VP cosine schedule: μ = cos(arccos(√η) t)², σ = √(1 - μ²) (Rozet & Louppe 2023)."""
    mu = torch.cos(math.acos(math.sqrt(eta)) * t) ** 2
    return mu, (1 - mu**2).clamp_min(0).sqrt()


class DiffusionPrior(Protocol):
    """A prior over windows ``(T, n)``: normalisation and the noise prediction ε̂(z_t, t)."""

    loc: float
    scale: float
    n: int

    def eps(self, z: Tensor, t: Tensor) -> Tensor:
        """ε̂ of noised normalised windows ``(B, T, n)`` at times ``(B,)``."""
        ...


class GaussianPrior:
    """Exact ε̂ of a Gaussian prior z ~ N(m, C) over flattened windows (closed form, for oracle tests).

    p_t(z_t) = N(μ m, μ² C + σ² I), so ε̂ = σ (μ² C + σ² I)⁻¹ (z_t - μ m), computed in the
    eigenbasis of C. ``mean`` ``(T, n)``, ``cov`` ``(T n, T n)`` in physical units with
    loc = 0, scale = 1.
    """

    loc = 0.0
    scale = 1.0

    def __init__(self, mean: Tensor, cov: Tensor) -> None:
        if mean.ndim != 2 or cov.shape != (mean.numel(), mean.numel()):
            raise ValueError(f"GaussianPrior: mean must be (T, n) and cov (T n, T n); got {tuple(mean.shape)}, "
                             f"{tuple(cov.shape)}")
        self.mean, self.shape, self.n = mean, tuple(mean.shape), mean.shape[-1]
        self.lam, self.V = torch.linalg.eigh(cov)

    def eps(self, z: Tensor, t: Tensor) -> Tensor:
        mu, sigma = vp_schedule(t.to(z.dtype))
        mu, sigma = mu.view(-1, 1), sigma.view(-1, 1)
        d = (z - mu.unsqueeze(-1) * self.mean).flatten(-2) @ self.V
        out = (sigma * d / (mu**2 * self.lam + sigma**2)) @ self.V.mT
        return out.view(z.shape)


class NetworkPrior(nn.Module):
    """A trained ε-network on windows of ``length`` states, with its normalisation (loc, scale).

    ``spacing`` is the number of model steps between two window states (kept with the prior
    so that a user cycles it at the interval it learned). Longer windows are composed from
    overlapping training-length windows (module docstring).
    """

    def __init__(self, net: nn.Module, length: int, n: int, loc: float, scale: float, spacing: int = 1) -> None:
        super().__init__()
        self.net, self.length, self.n = net, int(length), int(n)
        self.loc, self.scale, self.spacing = float(loc), float(scale), int(spacing)

    def eps(self, z: Tensor, t: Tensor) -> Tensor:
        B, T, n = z.shape
        L = self.length
        if n != self.n or T < L:
            raise ValueError(f"NetworkPrior: windows must be (B, T >= {L}, n={self.n}), got {tuple(z.shape)}")
        dtype = next(self.net.parameters()).dtype
        if T == L:
            return self.net(z.to(dtype), t.to(dtype)).to(z.dtype)
        starts = sorted({*range(0, T - L + 1, max(1, L // 2)), T - L})
        s = torch.tensor(starts, device=z.device)
        idx = s.view(-1, 1) + torch.arange(L, device=z.device)  # (W, L)
        win = z[:, idx].reshape(B * len(starts), L, n)
        e = self.net(win.to(dtype), t.repeat_interleave(len(starts)).to(dtype)).to(z.dtype).view(B, len(starts), L, n)
        centre = s.to(z.dtype) + (L - 1) / 2
        times = torch.arange(T, device=z.device)
        best = (times.to(z.dtype).view(-1, 1) - centre).abs().argmin(-1)  # window per time
        return e[:, best, times - s[best]]


def check_window_observations(y: Tensor, std: Tensor | float, n: int) -> tuple[Tensor, Tensor]:
    """y ``(T, n)`` (NaN unobserved) and σ broadcast to it, or a ValueError saying what to fix."""
    if not isinstance(y, Tensor) or y.ndim != 2 or y.shape[-1] != n:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"score posterior: y must have shape (T, n={n}) with NaN where unobserved, got {shape}")
    std = torch.as_tensor(std, dtype=y.dtype, device=y.device)
    try:
        std = std.expand(y.shape)
    except RuntimeError:
        raise ValueError(f"score posterior: std {tuple(std.shape)} does not broadcast to y {tuple(y.shape)}") from None
    if bool(torch.isinf(y).any()):
        raise ValueError("score posterior: y has infinite values (use NaN for missing observations)")
    obs = torch.isfinite(y)
    if not bool(torch.isfinite(std[obs]).all()) or not bool((std[obs] > 0).all()):
        raise ValueError("score posterior: observation std must be finite and > 0 where y is observed")
    return y, std


def guided_eps(
    prior: DiffusionPrior, z: Tensor, t: Tensor, y: Tensor, std: Tensor, gamma: float = 1e-2,
    cov: Literal["sda", "tweedie"] = "sda",
) -> Tensor:
    """Posterior noise prediction ε̂ - σ ∇_{z_t} log p(y | z_t) of windows ``(B, T, n)`` (module docstring)."""
    mu, sigma = vp_schedule(t.to(z.dtype))
    mu3, s3 = mu.view(-1, 1, 1), sigma.view(-1, 1, 1)
    mask = torch.isfinite(y)
    if not bool(mask.any()):
        with torch.no_grad():
            return prior.eps(z, t)
    y0 = torch.where(mask, y, torch.zeros_like(y))
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        e = prior.eps(z, t)
        x_hat = prior.loc + prior.scale * (z - s3 * e) / mu3
        r = torch.where(mask, y0 - x_hat, torch.zeros_like(x_hat))
        if cov == "sda":
            var = std**2 + gamma * prior.scale**2 * (s3 / mu3) ** 2
            loglik = -0.5 * (r**2 / var).sum()
        elif cov == "tweedie":
            loglik = _tweedie_loglik(prior, z, t, r, mask, std, mu, sigma)
        else:
            raise ValueError(f"guided_eps: cov must be 'sda' or 'tweedie', got {cov!r}")
        (grad,) = torch.autograd.grad(loglik, z)
    return e.detach() - s3 * grad


def _tweedie_loglik(
    prior: DiffusionPrior, z: Tensor, t: Tensor, r: Tensor, mask: Tensor, std: Tensor, mu: Tensor, sigma: Tensor
) -> Tensor:
    """-½ rᵀ (R + A Σ_t Aᵀ)⁻¹ r with the Tweedie covariance Σ_t = scale² (σ²/μ) ∂ẑ/∂z_t (held fixed)."""
    shape = z.shape[1:]

    def denoise(zi: Tensor, ti: Tensor) -> Tensor:
        m, s = vp_schedule(ti)
        return ((zi - s * prior.eps(zi.unsqueeze(0), ti.view(1))[0]) / m).flatten()

    J = torch.func.vmap(torch.func.jacrev(denoise))(z.detach(), t.to(z.dtype))  # (B, d, d)
    J = J.reshape(z.shape[0], -1, math.prod(shape))
    idx = mask.flatten().nonzero().squeeze(-1)
    cov = (prior.scale**2 * (sigma**2 / mu).view(-1, 1, 1)) * J[:, idx][:, :, idx]
    cov = 0.5 * (cov + cov.mT) + torch.diag_embed(std.flatten()[idx] ** 2).expand_as(cov)
    ro = r.flatten(1)[:, idx]
    sol = torch.linalg.solve(cov.detach(), ro.unsqueeze(-1)).squeeze(-1)
    return -0.5 * (ro * sol).sum()


def sample_posterior(
    prior: DiffusionPrior,
    y: Tensor,
    std: Tensor | float,
    samples: int,
    *,
    steps: int = 64,
    corrections: int = 1,
    tau: float = 0.25,
    gamma: float = 1e-2,
    eta: float = 1.0,
    cov: Literal["sda", "tweedie"] = "sda",
    clip: float | None = 6.0,
    batch: int = 64,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``samples`` windows ``(samples, T, n)`` (physical units) from p(x | y), y ``(T, n)`` NaN = unobserved.

    DDIM predictor from t=1 to t=0 in ``steps`` steps (``eta`` 0: deterministic, 1:
    ancestral), each followed by ``corrections`` Langevin steps of size τ d / |ŝ|²
    (Rozet & Louppe 2023, app. C); ``gamma``, ``cov``: the likelihood approximation of
    :func:`guided_eps`. ``clip`` bounds the denoised ẑ (normalised units) inside the DDIM
    step: near t=1, μ ≈ η and ẑ = (z - σ ε̂)/μ magnifies the network's errors a
    thousandfold (the thresholding of Saharia et al. 2022; None for exact priors). With y all
    NaN it samples the prior. Draws from ``generator``.
    """
    for name, value, low in (("samples", samples, 1), ("steps", steps, 1), ("corrections", corrections, 0),
                             ("batch", batch, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"sample_posterior: {name} must be an integer >= {low}, got {value!r}")
    if not (0.0 <= eta <= 1.0 and tau > 0 and gamma >= 0):
        raise ValueError(f"sample_posterior: need 0 <= eta <= 1, tau > 0, gamma >= 0; got {eta}, {tau}, {gamma}")
    y, std = check_window_observations(y, std, prior.n)
    out = []
    for b0 in range(0, samples, batch):
        B = min(batch, samples - b0)
        z = torch.randn((B, *y.shape), generator=generator, dtype=y.dtype).to(y.device)
        out.append(_sample(prior, z, y, std, steps, corrections, tau, gamma, eta, cov, clip, generator))
    return prior.loc + prior.scale * torch.cat(out)


def sample_each(
    prior: DiffusionPrior,
    y: Tensor,
    std: Tensor | float,
    *,
    steps: int = 32,
    gamma: float = 1e-2,
    eta: float = 1.0,
    clip: float | None = 6.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One posterior sample per observation window: y ``(B, T, n)`` (NaN unobserved) -> ``(B, T, n)``.

    The batched form of :func:`sample_posterior` (no corrector) for windows that each have their own
    observations, e.g. the past states of every ensemble member (GenCast-like forecasts).
    """
    if not isinstance(y, Tensor) or y.ndim != 3:
        raise ValueError(f"sample_each: y must have shape (B, T, n), got {tuple(y.shape) if isinstance(y, Tensor) else y}")
    std = torch.as_tensor(std, dtype=y.dtype, device=y.device).expand(y.shape)
    for k in range(y.shape[0]):
        check_window_observations(y[k], std[k], prior.n)
    z = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
    return prior.loc + prior.scale * _sample(prior, z, y, std, steps, 0, 1.0, gamma, eta, "sda", clip, generator)


def _sample(
    prior: DiffusionPrior, z: Tensor, y: Tensor, std: Tensor, steps: int, corrections: int, tau: float,
    gamma: float, eta: float, cov: Literal["sda", "tweedie"], clip: float | None, generator: torch.Generator | None,
) -> Tensor:
    B, d = z.shape[0], z[0].numel()
    grid = torch.linspace(1.0, 0.0, steps + 1, dtype=z.dtype, device=z.device)
    for i in range(steps):
        t, s = grid[i].expand(B), grid[i + 1].expand(B)
        (mu_t, sig_t), (mu_s, sig_s) = vp_schedule(grid[i]), vp_schedule(grid[i + 1])
        e = guided_eps(prior, z, t, y, std, gamma, cov)
        z0 = (z - sig_t * e) / mu_t
        if clip is not None:
            z0 = z0.clamp(-clip, clip)
            e = (z - mu_t * z0) / sig_t
        if i == steps - 1:
            return z0.detach()
        c = eta * (sig_s / sig_t) * (1 - (mu_t / mu_s) ** 2).clamp_min(0).sqrt()
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
        z = mu_s * z0 + (sig_s**2 - c**2).clamp_min(0).sqrt() * e + c * noise
        for _ in range(corrections):
            score = -guided_eps(prior, z, s, y, std, gamma, cov) / sig_s
            delta = tau * d / score.flatten(1).pow(2).sum(-1).clamp_min(1e-12).view(-1, 1, 1)
            noise = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
            z = z + delta * score + (2 * delta).sqrt() * noise
        z = z.detach()
    return z
