"""ENSO from observed Niño-3 SST: recharge oscillator + augmented EnKF, Desroziers tuning, forecasts, learned correction.

The pipeline (``hybrida run enso/recharge``):

1. assimilate the monthly Niño-3 anomaly (:mod:`hybrida.datasets.enso`) into
   Jin's (1997) recharge oscillator with an augmented ETKF that estimates the
   parameters (R, α, r, R_s) jointly with T and the never-observed h
   (Anderson 2001; stochastic forcing added to every member each month);
2. tune the observation-error variance on the fit period (1950–1990) by
   iterating σ_o² ← mean d_oa·d_ob (Desroziers et al. 2005, eq. 3; Li, Kalnay
   & Miyoshi 2009 iterate it), optionally scaling the stochastic forcing by
   σ_b²(Desroziers)/mean HBHᵀ;
3. cycle the whole record with the tuned values, forecast from every analysis
   at leads 1–12 months and score them against the later observations and
   persistence on 1991–2010 (verify) and 2011–2016 (test);
4. with ``learned``: train a seasonal correction of the tendency on the
   1950–1990 analyses (:mod:`hybrida.experiment.enso_learned`) and cycle the
   hybrid over the whole record in the same way.

Every random draw comes from generators seeded by ``config.seed``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from hybrida.assimilation.ensemble.augmented import AugmentedEnsemble
from hybrida.cycle import run_cycle
from hybrida.experiment.config import ConfigError
from hybrida.experiment.enso_config import DEFAULT_OBS_FILE, SPIN_UP, EnsoConfig
from hybrida.experiment.enso_scores import innovation_checks, period_mask
from hybrida.io.obsfile import ObsFileError, load_observations
from hybrida.models.augmented import AugmentedModel
from hybrida.models.base import Model
from hybrida.models.recharge import RechargeOscillator
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError

__all__ = ["DEFAULT_OBS_FILE", "EnsoConfig", "EnsoRun", "StochasticAugmented", "cycle_enso", "run_enso",
           "tune_observation_error"]

log = logging.getLogger(__name__)


class StochasticAugmented(AugmentedEnsemble):
    """Augmented ensemble whose forecast adds N(0, diag(q²)) forcing to the state part after every step.

    x_{k+1} = M_θ(x_k) + q ⊙ η_k, θ_{k+1} = θ_k, η_k ~ N(0, I) per member from
    ``generator`` (the stochastically forced recharge oscillator of Burgers
    et al. 2005; noise drawn independently of the analysis generator).
    """

    def __init__(self, *args: Any, noise_std: list[float], generator: torch.Generator, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.noise_std = torch.as_tensor(noise_std, dtype=torch.float64)
        self.generator = generator

    def forecast(self, model: Model, state: torch.Tensor, n_steps: int, t0: float = 0.0) -> torch.Tensor:
        aug = AugmentedModel(model, self.names)
        n = model.n
        z = state
        for k in range(n_steps):
            z = aug.step(z, t0 + k * model.dt)
            eta = torch.randn((*z.shape[:-1], n), generator=self.generator, dtype=torch.float64)
            z = torch.cat((z[..., :n] + (self.noise_std * eta).to(z), z[..., n:]), -1)
        return z


@dataclass
class EnsoRun:
    """Series of one cycled run over the file (numpy, one row per month)."""

    times: np.ndarray
    mean_a: np.ndarray  # (K, 2)
    spread_a: np.ndarray  # (K, 2)
    mean_b: np.ndarray  # (K, 2)
    params: dict[str, np.ndarray]  # name -> (K, 2): mean, spread
    omb: np.ndarray
    oma: np.ndarray
    hbh: np.ndarray
    r: np.ndarray
    forecasts: np.ndarray | None  # (K, L, N) T members
    wall_s: float = 0.0


def with_error(observations: list[Observation], sigma_o: float) -> list[Observation]:
    """The observations with every error std replaced by ``sigma_o``."""
    out = []
    for o in observations:
        out.append(Observation(y=o.y, operator=o.operator, error=DiagonalError(torch.full_like(o.y, sigma_o**2)),
                               locations=o.locations, matrix=o.matrix, meta=o.meta))
    return out


def cycle_enso(
    model: RechargeOscillator,
    observations: list[Observation],
    cfg: EnsoConfig,
    noise_std: list[float],
    seed: int,
    max_lead: int = 0,
) -> EnsoRun:
    """Cycle the augmented ETKF over ``observations`` (one per month) and forecast ``max_lead`` months from each analysis."""
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    method = StochasticAugmented(
        {k: list(v) for k, v in cfg.estimate.items()}, inner="etkf",
        inner_params={"N": cfg.members, "infl": cfg.infl}, param_noise=cfg.param_noise,
        noise_std=noise_std, generator=torch.Generator().manual_seed(seed + 1),
    )
    n = model.n
    if len(noise_std) != n:
        raise ConfigError(f"noise_std: give one std per state variable ({n}), got {list(noise_std)}")
    state = method.initial_state(torch.zeros(n, dtype=torch.float64), torch.tensor([0.8, 0.8, 0.1][:n]), gen)
    K = len(observations)
    names = method.names
    mean_a, spread_a, mean_b = np.zeros((K, n)), np.zeros((K, n)), np.zeros((K, n))
    params = {name: np.zeros((K, 2)) for name in names}
    omb, oma, hbh, r = (np.full(K, np.nan) for _ in range(4))
    forecasts = np.zeros((K, max_lead, cfg.members)) if max_lead else None
    posteriors: list[torch.Tensor] = []
    for rec, post in run_cycle(model, method, state, None, observations, 1, generator=gen, innovations=True):
        k = rec.cycle - 1
        mean_a[k] = rec.posterior_mean.numpy()
        mean_b[k] = rec.prior_mean.numpy()
        spread_a[k] = post[:, :n].std(0).numpy()
        for i, name in enumerate(names):
            params[name][k] = (float(post[:, n + i].mean()), float(post[:, n + i].std()))
        inn = rec.innovation
        omb[k], oma[k], hbh[k], r[k] = (float(v[0]) for v in (inn.omb, inn.oma, inn.hbh, inn.r))
        if forecasts is not None:
            posteriors.append(post)
    times = np.array([o.meta["time"] for o in observations])
    if forecasts is not None:
        forecasts = ensemble_forecasts(model, names, torch.stack(posteriors), times, max_lead, noise_std,
                                       torch.Generator().manual_seed(seed + 2))
    return EnsoRun(times, mean_a, spread_a, mean_b, params, omb, oma, hbh, r, forecasts,
                   wall_s=time.perf_counter() - t0)


def ensemble_forecasts(
    model: RechargeOscillator,
    names: tuple[str, ...],
    posteriors: torch.Tensor,
    times: np.ndarray,
    max_lead: int,
    noise_std: list[float],
    generator: torch.Generator,
) -> np.ndarray:
    """T members ``(K, L, N)`` of stochastic forecasts from every analysis ``posteriors`` ``(K, N, n + p)``.

    All K start months run as one batch (t is a ``(K, 1, 1)`` tensor); each
    member keeps its own parameters and draws its own forcing from ``generator``.
    """
    aug = AugmentedModel(model, names)
    n = model.n
    q = torch.as_tensor(noise_std, dtype=torch.float64)
    t = torch.as_tensor(times, dtype=torch.float64).view(-1, 1, 1)
    z = posteriors
    out = np.zeros((z.shape[0], max_lead, z.shape[1]))
    for lead in range(max_lead):
        z = aug.step(z, t + lead * model.dt)
        eta = torch.randn((*z.shape[:-1], n), generator=generator, dtype=torch.float64)
        z = torch.cat((z[..., :n] + (q * eta).to(z), z[..., n:]), -1)
        out[:, lead] = z[..., 0].numpy()
    return out


def years_of(times: np.ndarray) -> np.ndarray:
    """Calendar year of model time t (months, t = 1 is 1950-01)."""
    return 1950 + (np.rint(times).astype(np.int64) - 1) // 12


def tune_observation_error(
    model: RechargeOscillator,
    observations: list[Observation],
    cfg: EnsoConfig,
    progress: Callable[[str], None] | None = None,
) -> tuple[float, list[float], list[dict[str, float]]]:
    """Iterate σ_o² ← mean d_oa·d_ob on the fit period (Desroziers et al. 2005); returns σ_o, q and the history.

    With ``tune_model_noise`` the forcing std q is also scaled by
    sqrt(σ_b²(Desroziers) / mean HBHᵀ), clipped to a factor in [0.5, 2] per
    iteration.
    """
    times = np.array([o.meta["time"] for o in observations])
    fit = period_mask(years_of(times), *cfg.fit)
    n_fit = int(np.flatnonzero(fit)[-1]) + 1
    sigma_o = float(observations[0].error.variance[0].sqrt())
    noise = list(cfg.noise_std)
    history = []
    mask = fit[:n_fit].copy()
    mask[:SPIN_UP] = False
    for it in range(cfg.desroziers_iterations):
        run = cycle_enso(model, with_error(observations[:n_fit], sigma_o), cfg, noise, cfg.seed)
        stats = innovation_checks(run.omb, run.oma, run.hbh, run.r, mask)
        history.append({"iteration": it, "sigma_o": sigma_o, "noise_T": noise[0], "noise_h": noise[1], **stats})
        if progress is not None:
            progress(f"Desroziers {it}: sigma_o {sigma_o:.3f} -> {stats['desroziers_sigma_o']:.3f}, "
                     f"normalised variance {stats['normalised_variance']:.2f}")
        if math.isfinite(stats["desroziers_sigma_o"]) and stats["desroziers_sigma_o"] > 0:
            sigma_o = stats["desroziers_sigma_o"]
        if cfg.tune_model_noise and math.isfinite(stats["desroziers_sigma_b"]) and stats["hbh_rms"] > 0:
            factor = float(np.clip(stats["desroziers_sigma_b"] / stats["hbh_rms"], 0.5, 2.0))
            noise = [q * factor for q in noise]
    return sigma_o, noise, history


def build_physics(cfg: EnsoConfig) -> RechargeOscillator:
    """The oscillator with the prior means of the estimated parameters and the fixed ones."""
    return RechargeOscillator(**{k: float(v[0]) for k, v in cfg.estimate.items()},
                              **{k: float(v) for k, v in cfg.fixed.items()})


def read_extra(path: str | Path) -> dict[str, np.ndarray]:
    """The file's extra columns (nino34, nino4, nino3 observed) when present."""
    out = {}
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        out["nino3"] = ds["obs_value"].values.astype(np.float64)
        for name in ("nino34", "nino4"):
            var = f"{name}_anom"
            out[name] = ds[var].values.astype(np.float64) if var in ds else np.full(ds.sizes["nlocs"], np.nan)
    return out


def load_enso_file(path: str | Path, n: int = 2) -> list[Observation]:
    """Load the file for a model of ``n`` variables (T first), or a one-line ConfigError saying how to write it."""
    if not Path(path).is_file():
        raise ConfigError(f"observation file {path} not found: write it with `hybrida data enso --out {path}` "
                          f"(or pass --obs FILE)")
    try:
        observations = load_observations(path, torch.float64, n_state=2)
    except ObsFileError as err:
        raise ConfigError(str(err)) from None
    times = np.array([o.meta["time"] for o in observations])
    if not np.allclose(times, np.arange(1, times.size + 1)):
        raise ConfigError(f"{path}: time: expected months since 1949-12 (1, 2, 3, ...); write it with "
                          "`hybrida data enso`")
    if n == 2:
        return observations
    pad = torch.zeros(1, n - 2, dtype=torch.float64)  # the forcing ξ is a model variable, not in the file
    return [Observation(y=o.y, operator=o.operator, error=o.error, locations=o.locations,
                        matrix=torch.cat((o.matrix, pad), -1), meta=o.meta) for o in observations]


def run_enso(
    cfg: EnsoConfig,
    obs_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Run the ENSO pipeline of the module docstring; write results into ``out_dir``; return the summary.

    Runs on one intra-op thread (restored afterwards): the matrices are 40 × 6, where
    thread start-up costs more than the work (6x slower on 2 busy cores).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_enso(cfg, obs_path, out_dir, progress, plots)
    finally:
        torch.set_num_threads(threads)


def _run_enso(
    cfg: EnsoConfig,
    obs_path: str | Path | None,
    out_dir: str | Path | None,
    progress: Callable[[str], None] | None,
    plots: bool,
) -> dict[str, Any]:
    from hybrida.experiment.enso_report import summarise, write_outputs

    cfg = cfg.resolved()
    path = Path(obs_path or cfg.obs_file)
    say = progress or (lambda _msg: None)
    physics = build_physics(cfg)
    observations = load_enso_file(path, physics.n)
    years = years_of(np.array([o.meta["time"] for o in observations]))
    observations = observations[: int((years <= cfg.test[1]).sum())]  # nothing after the test period
    t0 = time.perf_counter()
    sigma_o, noise, history = tune_observation_error(physics, observations, cfg, say)
    tuned = with_error(observations, sigma_o)
    say(f"tuned sigma_o {sigma_o:.3f}, forcing std T {noise[0]:.3f} h {noise[1]:.3f}; cycling {len(tuned)} months")
    run = cycle_enso(physics, tuned, cfg, noise, cfg.seed, cfg.max_lead)
    extra = {k: v[: len(observations)] for k, v in read_extra(path).items()}
    runs = {"recharge": run}
    fit_info = None
    if cfg.learned:
        from hybrida.experiment.enso_learned import fit_seasonal_correction

        fit = period_mask(years_of(run.times), *cfg.fit)
        sel = np.flatnonzero(fit)[SPIN_UP:]
        prm = {k: torch.as_tensor(v[sel, :1]) for k, v in run.params.items()}
        result = fit_seasonal_correction(physics, torch.as_tensor(run.mean_a[sel]), torch.as_tensor(run.times[sel]),
                                         prm, hidden=cfg.hidden, epochs=cfg.epochs, rollout=cfg.rollout,
                                         seed=cfg.seed, progress=say)
        fit_info = {"best_epoch": result.best_epoch, "epochs_run": len(result.train_loss),
                    "valid_loss": min(result.valid_loss), "physics_valid_loss": result.physics_valid_loss,
                    "train_loss": result.train_loss[result.best_epoch],
                    "physics_train_loss": result.physics_train_loss}
        say(f"correction trained: valid loss {fit_info['valid_loss']:.4f} vs physics "
            f"{fit_info['physics_valid_loss']:.4f}; cycling the hybrid")
        runs["learned"] = cycle_enso(result.model, tuned, cfg, noise, cfg.seed, cfg.max_lead)
        if out_dir is not None:
            from hybrida.experiment.enso_learned import save_correction

            Path(out_dir).mkdir(parents=True, exist_ok=True)
            save_correction(result.model, Path(out_dir) / "correction.pt")
    summary = summarise(cfg, runs, extra, sigma_o, noise, history, fit_info)
    summary["wall_s"] = time.perf_counter() - t0
    summary["observations_file"] = str(path)
    if out_dir is not None:
        summary["files"] = write_outputs(cfg, runs, extra, summary, Path(out_dir), plots)
    return summary
