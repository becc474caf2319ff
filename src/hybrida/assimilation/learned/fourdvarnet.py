"""4DVarNet: a learned prior and a learned gradient solver of a weak-constraint variational cost.

Over a window of T model steps the state x = (x_0 .. x_{T-1}) is the minimiser of

    U(x) = lambda_1 |y - x|^2_Omega + lambda_2 |x - Phi(x)|^2

(Omega: the observed points; Fablet, Chapron, Drumetz, Memin, Pannekoucke & Rousseau 2021,
JAMES, eq. 3), reached by K unrolled iterations x <- x - Gamma(grad U(x)) of a ConvLSTM
Gamma fed with the normalised gradient (their eq. 6-8). Both the prior Phi and the solver are
trained end to end on the reconstruction error (:mod:`hybrida.learn.fourdvarnet`). Priors:

* :class:`ODEPrior` - Phi(x)_t = RK4 step of a learnable quadratic tendency from x_{t-1}
  (the Lorenz-96 ODE written as periodic convolutions, learned from 0);
* :class:`CNNPrior` - a bilinear 2-D CNN over (time, space) that predicts each point from
  its neighbours (the point itself is masked out, so Phi cannot learn the identity).

Everything works on the normalised state (x - mean) / std with one scalar mean and std.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hybrida.assimilation.base import State, WindowState
from hybrida.assimilation.learned.base import LearnedAnalysis, rebuild_network
from hybrida.models.base import Model
from hybrida.nn.convlstm import ConvLSTM2d, PeriodicConv2d
from hybrida.observations.base import Observation

__all__ = [
    "CNNPrior",
    "FourDVarNet",
    "FourDVarNetSolver",
    "ODEPrior",
    "interpolate_window",
    "l96_ode_coefficients",
    "observation_row",
]

PRIORS = ("ode", "cnn")


class ODEPrior(nn.Module):
    """Phi(x)_t = RK4_dt(f)(x_{t-1}), Phi(x)_0 = x_0, with a learnable periodic quadratic tendency.

    f(x)_i = s_i^T Q s_i + w^T s_i + c with the stencil s_i = (x_{i-r} .. x_{i+r})
    (periodic): all products of two neighbours within ``radius`` and all linear terms,
    i.e. quadratic periodic convolutions. Lorenz-96 is Q_{-1,+1} + Q_{+1,-1} = 1,
    Q_{-2,-1} + Q_{-1,-2} = -1, w_0 = -1, c = F (:func:`l96_ode_coefficients`). The step
    runs in physical units x = mean + std z. ``init``: "zero" (all coefficients 0) or
    "random" (N(0, 0.01^2), seeded by ``seed``).
    """

    def __init__(
        self, radius: int = 2, dt: float = 0.05, mean: float = 0.0, std: float = 1.0, init: str = "zero", seed: int = 0
    ) -> None:
        super().__init__()
        if init not in ("zero", "random"):
            raise ValueError(f"ODEPrior: init must be 'zero' or 'random', got {init!r}")
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
            raise ValueError(f"ODEPrior: radius must be an integer >= 1, got {radius!r}")
        self.config = {"radius": radius, "dt": dt, "mean": mean, "std": std, "init": init, "seed": seed}
        w = 2 * radius + 1
        shapes = ((w, w), (w,), ())
        gen = torch.Generator().manual_seed(seed)
        draw = (lambda s: 0.01 * torch.randn(s, generator=gen)) if init == "random" else torch.zeros
        self.quad, self.lin, self.const = (nn.Parameter(draw(s)) for s in shapes)

    def tendency(self, x: Tensor) -> Tensor:
        """f(x) over the last axis (physical units)."""
        r = self.config["radius"]
        n = x.shape[-1]
        xp = torch.cat((x[..., -r:], x, x[..., :r]), dim=-1)
        s = [xp[..., k : k + n] for k in range(2 * r + 1)]  # s[k] = x_{i+k-r}
        q = self.quad.to(x)
        out = self.const.to(x) + sum(self.lin[a] * s[a] for a in range(len(s)))
        for a in range(len(s)):
            out = out + s[a] * sum(q[a, b] * s[b] for b in range(len(s)))
        return out

    def step(self, x: Tensor) -> Tensor:
        """One RK4 step of length dt (physical units)."""
        dt = self.config["dt"]
        k1 = self.tendency(x)
        k2 = self.tendency(x + 0.5 * dt * k1)
        k3 = self.tendency(x + 0.5 * dt * k2)
        k4 = self.tendency(x + dt * k3)
        return x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)

    def forward(self, z: Tensor) -> Tensor:
        """Phi(z) for normalised windows z (B, T, n)."""
        m, s = self.config["mean"], self.config["std"]
        nxt = (self.step(m + s * z[:, :-1]) - m) / s
        return torch.cat((z[:, :1], nxt), dim=1)


def l96_ode_coefficients(prior: ODEPrior, F: float = 8.0) -> dict[str, Tensor]:
    """The coefficients (quad, lin, const) that make ``prior`` the exact Lorenz-96 tendency."""
    r = prior.config["radius"]
    quad = torch.zeros_like(prior.quad)
    lin = torch.zeros_like(prior.lin)
    quad[r - 1, r + 1] = 1.0  # x_{i-1} x_{i+1}
    quad[r - 2, r - 1] = -1.0  # x_{i-2} x_{i-1}
    lin[r] = -1.0
    return {"quad": quad, "lin": lin, "const": torch.full_like(prior.const, F)}


class CNNPrior(nn.Module):
    """Phi(z) = a bilinear CNN of z over (time, space) that cannot see the point it predicts.

    h = conv(z) with width (kernel_time, kernel_space), periodic in space, whose centre tap
    is held at zero; u = [h, a(h) * b(h)] (1x1 convolutions: the bilinear unit of Fablet et
    al. 2018); Phi = out(relu(mid(u))) + lin(u). Input and output (B, T, n).
    """

    def __init__(self, channels: int = 16, kernel_time: int = 5, kernel_space: int = 5, seed: int = 0) -> None:
        super().__init__()
        self.config = {"channels": channels, "kernel_time": kernel_time, "kernel_space": kernel_space, "seed": seed}
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            self.conv = PeriodicConv2d(1, channels, (kernel_time, kernel_space))
            self.a = nn.Conv2d(channels, channels, 1)
            self.b = nn.Conv2d(channels, channels, 1)
            self.mid = nn.Conv2d(2 * channels, channels, 1)
            self.out = nn.Conv2d(channels, 1, 1)
            self.lin = nn.Conv2d(2 * channels, 1, 1)
        finally:
            torch.random.set_rng_state(gen_state)
        mask = torch.ones(1, 1, kernel_time, kernel_space)
        mask[..., kernel_time // 2, kernel_space // 2] = 0.0
        self.register_buffer("blind", mask)

    def forward(self, z: Tensor) -> Tensor:
        """Phi(z) for normalised windows z (B, T, n)."""
        conv = self.conv
        h = conv._conv_forward(_pad(z.unsqueeze(1), conv.pad_t, conv.pad_s), conv.weight * self.blind, conv.bias)
        u = torch.cat((h, self.a(h) * self.b(h)), dim=1)
        return (self.out(torch.relu(self.mid(u))) + self.lin(u)).squeeze(1)


def _pad(x: Tensor, pad_t: int, pad_s: int) -> Tensor:
    x = torch.cat((x[..., -pad_s:], x, x[..., :pad_s]), dim=-1) if pad_s else x
    return nn.functional.pad(x, (0, 0, pad_t, pad_t)) if pad_t else x


class FourDVarNetSolver(nn.Module):
    """The prior Phi, the weights lambda_1,2 and the ConvLSTM gradient solver of one window.

    ``forward(z0, y, mask)``: K = ``n_iter`` iterations z <- z - out(h_k), with
    (h_k, c_k) = ConvLSTM(g_k / rms(g_k), h_{k-1}, c_{k-1}) and g_k = grad U(z_k) (per
    window RMS normalisation; Fablet et al. 2021, sec. 3.2). z0, y, mask: (B, T, n), y
    normalised and zero where mask is 0. ``prior``: "ode" (:class:`ODEPrior` with
    ``prior_config``) or "cnn" (:class:`CNNPrior`). lambda = exp(log_lambda), learned.
    """

    def __init__(
        self,
        prior: str = "ode",
        prior_config: dict | None = None,
        hidden: int = 16,
        kernel: int = 3,
        n_iter: int = 20,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"FourDVarNetSolver: prior must be one of {', '.join(PRIORS)}, got {prior!r}")
        if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
            raise ValueError(f"FourDVarNetSolver: n_iter must be an integer >= 1, got {n_iter!r}")
        prior_config = dict(prior_config or {})
        self.config = {
            "prior": prior, "prior_config": prior_config, "hidden": hidden, "kernel": kernel, "n_iter": n_iter,
            "seed": seed,
        }
        self.n_iter = n_iter
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            self.prior = ODEPrior(**prior_config) if prior == "ode" else CNNPrior(**prior_config)
            self.lstm = ConvLSTM2d(1, hidden, kernel, kernel)
            self.out = nn.Conv2d(hidden, 1, 1)
        finally:
            torch.random.set_rng_state(gen_state)
        with torch.no_grad():
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()
        self.log_lambda = nn.Parameter(torch.zeros(2))

    def cost(self, z: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        """U(z) per window (B,): lambda_1 sum mask (y - z)^2 + lambda_2 sum (z - Phi(z))^2."""
        lam = self.log_lambda.exp()
        obs = (mask * (y - z) ** 2).sum((-2, -1))
        prior = ((z - self.prior(z)) ** 2).sum((-2, -1))
        return lam[0] * obs + lam[1] * prior

    def gradient(self, z: Tensor, y: Tensor, mask: Tensor, create_graph: bool) -> Tensor:
        """grad_z U(z), differentiable in the parameters when ``create_graph``."""
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.cost(z, y, mask).sum(), z, create_graph=create_graph)
        return g

    def forward(self, z0: Tensor, y: Tensor, mask: Tensor, n_iter: int | None = None) -> Tensor:
        """The reconstruction z_K (B, T, n) after ``n_iter`` (default K) solver iterations."""
        if z0.ndim != 3 or y.shape != z0.shape or mask.shape != z0.shape:
            raise ValueError(
                f"FourDVarNetSolver: z0, y and mask must share a shape (B, T, n); got "
                f"{tuple(z0.shape)}, {tuple(y.shape)}, {tuple(mask.shape)}"
            )
        train = torch.is_grad_enabled()
        z, state = z0, None
        for _ in range(self.n_iter if n_iter is None else n_iter):
            if not train:
                z = z.detach()
            g = self.gradient(z, y, mask, create_graph=train)
            rms = g.pow(2).mean((-2, -1), keepdim=True).add(1e-12).sqrt()
            state = self.lstm((g / rms).unsqueeze(1), state)
            z = z - self.out(state[0]).squeeze(1)
        return z if train else z.detach()


def interpolate_window(y: Tensor, mask: Tensor) -> Tensor:
    """Per-variable linear interpolation in time of the observed points (constant beyond the ends).

    y, mask: (..., T, n); variables never observed in the window get 0.
    """
    T = y.shape[-2]
    t = torch.arange(T, device=y.device).view(-1, 1).expand(y.shape[-2:])
    obs = mask > 0
    big = T + 1
    prev = torch.where(obs, t, torch.full_like(t, -1)).cummax(-2).values
    nxt = torch.where(obs, t, torch.full_like(t, big)).flip(-2).cummin(-2).values.flip(-2)
    has_prev, has_next = prev >= 0, nxt < big
    yp = torch.gather(y, -2, prev.clamp(min=0))
    yn = torch.gather(y, -2, nxt.clamp(max=T - 1))
    w = (t - prev).to(y) / (nxt - prev).clamp(min=1).to(y)
    both = yp + w * (yn - yp)
    out = torch.where(has_prev & has_next, both, torch.where(has_prev, yp, torch.where(has_next, yn, 0.0 * y)))
    return torch.where(obs, y, out)


def window_score(x: Tensor, truth: Tensor, std: float) -> float:
    """Normalised error MSE / std^2 over all points of all windows (Fablet et al. 2021, table 2)."""
    return float(((x - truth) ** 2).mean() / (std * std))


def observation_row(obs: Observation, n: int) -> Tensor:
    """The observations of one time on the state grid: (n,) with NaN at unobserved variables.

    4DVarNet's cost compares the state with y on the observed points, so H must pick
    variables: ``obs.matrix`` with one 1 per row (identity, subset, random subset).
    """
    H = obs.matrix
    if H is None or H.shape[-1] != n:
        raise ValueError(
            "FourDVarNet: needs observations of state variables (a linear H whose matrix selects "
            f"variables, shape (p, {n})); got {'a nonlinear H' if H is None else tuple(H.shape)}"
        )
    ones = (H == 1).sum(-1)
    if not bool(((H == 0) | (H == 1)).all()) or not bool((ones == 1).all()):
        raise ValueError("FourDVarNet: H must select variables (one 1 per row, zeros elsewhere)")
    row = torch.full((n,), math.nan, dtype=obs.y.dtype, device=obs.y.device)
    row[H.argmax(-1)] = obs.y
    return row


class FourDVarNet(LearnedAnalysis):
    """4DVarNet as a cycled analysis: the learned solver's reconstruction of the last ``window`` cycles.

    The state is a :class:`~hybrida.assimilation.base.WindowState` whose ``pending`` keeps
    the observations of the last ``window`` cycles (fewer at the start: the missing ones
    count as unobserved). Each cycle the model forecasts ``current``; every ``shift``
    cycles the solver reconstructs the window (T = window x every steps, observations at
    steps every-1, 2 every-1, ..., T-1, as in training) and ``current`` becomes its last
    step, the analysis at the observation time. Cycles must be ``every`` model steps long
    and H must select variables (:func:`observation_row`). The network runs in its own
    dtype; ``dtype`` is the state dtype the method accepts.
    """

    kind = "deterministic"
    kind_name = "4dvarnet"

    def __init__(
        self,
        solver: FourDVarNetSolver,
        *,
        n: int,
        p: int,
        every: int,
        mean: float,
        std: float,
        window: int = 16,
        shift: int = 1,
        n_iter: int | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        for label, v in (("n", n), ("p", p), ("every", every), ("window", window), ("shift", shift)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"FourDVarNet: {label} must be an integer >= 1, got {v!r}")
        if shift > window:
            raise ValueError(f"FourDVarNet: shift ({shift}) must be <= window ({window})")
        if not (math.isfinite(std) and std > 0 and math.isfinite(mean)):
            raise ValueError(f"FourDVarNet: need a finite mean and std > 0, got {mean}, {std}")
        self.solver = solver.eval()
        self.n, self.p, self.every, self.mean, self.std = n, p, every, float(mean), float(std)
        self.window, self.shift, self.dtype = window, shift, dtype
        self.n_iter = n_iter
        #: the last reconstruction (window x every, n), physical units
        self.last_window: Tensor | None = None
        self._diag: dict[str, float] = {}

    def initial_state(
        self, mean: Tensor, std: Tensor | float, generator: torch.Generator | None = None
    ) -> WindowState:
        """Start from ``mean`` with no observation in the window."""
        return WindowState(current=mean.clone(), start=mean.clone(), t_start=0.0, span=0, pending=[])

    def forecast(self, model: Model, state: State, n_steps: int, t0: float = 0.0) -> WindowState:
        """Forecast the current estimate by one cycle of ``every`` model steps."""
        state = self._check_state(state)
        if n_steps != self.every:
            raise ValueError(
                f"FourDVarNet: trained with observations every {self.every} model steps; cycles have {n_steps}"
            )
        with torch.no_grad():
            current = model.forecast(state.current, n_steps, t0)
        return replace(state, current=current, span=state.span + 1)

    def analyse(
        self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> WindowState:
        """Add ``obs`` to the window; every ``shift`` cycles replace ``current`` by the reconstruction's end."""
        prior = self._check_state(prior)
        self.check_inputs(prior.current, obs)
        pending = [*prior.pending, obs][-self.window :]
        self._diag = {}
        if prior.span < self.shift:
            return replace(prior, pending=pending)
        x = self.reconstruct_window([observation_row(o, self.n) for o in pending])
        self.last_window = x
        self._diag = {"window_obs": float(sum(int(torch.isfinite(o.y).sum()) for o in pending))}
        return WindowState(current=x[-1].to(prior.current), start=x[0].to(prior.current), t_start=t, span=0,
                           pending=pending)

    def reconstruct_window(self, rows: list[Tensor]) -> Tensor:
        """Reconstruction (window x every, n) from the observation rows of the last len(rows) cycles."""
        T = self.window * self.every
        weight = next(self.solver.parameters())  # the window is built where the solver runs
        dtype = weight.dtype
        y = torch.full((T, self.n), math.nan, dtype=dtype, device=weight.device)
        first = self.window - len(rows)
        for i, r in enumerate(rows):
            y[(first + i + 1) * self.every - 1] = r.detach().to(device=weight.device, dtype=dtype)
        z, m = torch.nan_to_num((y - self.mean) / self.std, nan=0.0), torch.isfinite(y).to(dtype)
        z, m = z.unsqueeze(0), m.unsqueeze(0)
        with torch.no_grad():
            zh = self.solver(interpolate_window(z, m), z, m, n_iter=self.n_iter)
        return self.mean + self.std * zh[0]

    def _check_state(self, state: State) -> WindowState:
        if not isinstance(state, WindowState):
            raise TypeError(f"FourDVarNet: state must be a WindowState (use method.initial_state), got {type(state).__name__}")
        return state

    def diagnostics(self) -> dict[str, float]:
        """Number of valid observations in the analysed window (empty on cycles without analysis)."""
        return dict(self._diag)

    def to_payload(self) -> dict[str, Any]:
        """The solver network and the window settings."""
        extra = {"every": self.every, "mean": self.mean, "std": self.std, "window": self.window, "shift": self.shift}
        return self.payload_header(extra, solver=self.solver)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: str | Path | None = None, **params: Any) -> FourDVarNet:
        """Rebuild from :meth:`to_payload`; ``params`` may override ``window``, ``shift``, ``n_iter``."""
        unknown = set(params) - {"window", "shift", "n_iter"}
        if unknown:
            raise ValueError(f"FourDVarNet: unknown parameter(s) {sorted(unknown)}; allowed: window, shift, n_iter")
        solver = rebuild_network(payload["networks"]["solver"], path)
        kw = {k: payload[k] for k in ("window", "shift")}
        kw.update(params)
        return cls(
            solver, n=payload["n"], p=payload["p"], every=payload["every"], mean=payload["mean"], std=payload["std"],
            dtype=getattr(torch, payload["dtype"]), **kw,
        )
