"""``hybrida learn filter bach2025_l96``: a learned LETKF against the grid-searched LETKF on the Bach et al. (2025) L96 twin.

Lorenz-96 d=40, F=8, x₁, x₅, …, x₃₇ observed every 0.15 with σ_y (default 1). Per ensemble
size N the LETKF is grid-searched over inflation × radius on separate trajectories; the
learned filter (:class:`~hybrida.assimilation.ensemble.learned_filter.LearnedFilterNet`:
a taper as a function of distance, rescaled per grid point, and an inflation field, both
from a deep-sets network of the forecast ensemble) starts at the tuned LETKF of ``train_N``
and is trained by truncated BPTT (a) on the truth and (b) truth-free on the next
observations, stopped early on validation R-RMSE. Both are cycled beside the tuned LETKF
and the LETKF with adaptive prior inflation (the tuned radius) on the same test
trajectories at every N (the network trained at ``train_N``, fine-tuned at
``finetune_sizes``, and networks of their own trained at ``at_N_sizes`` from the tuned LETKF
of that N). Score: R-RMSE = mean ‖x̄ᵃ − x‖₂ / ‖x‖₂. With ``resume`` the grid
search (per N), the trainings and fine-tunings (checkpoints) and the test scores (per
filter, in ``test_scores.json``) already made with the same settings are reused.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybrida.assimilation.ensemble.learned_filter import LearnedFilterNet, LearnedLETKF
from hybrida.assimilation.learned import save_learned_analysis
from hybrida.experiment.filter_bach_config import FilterBachConfig, make_config
from hybrida.experiment.filter_bach_plots import PAPER_LETKF, fields_vs_spread, plot_outputs
from hybrida.experiment.learned_analysis import write_json
from hybrida.learn.filter_bach import (
    BachSetup,
    TwinData,
    adaptive_letkf_analysis,
    cycle_r_rmse,
    fit_filter,
    grid_search,
    initial_ensemble,
    learned_analysis,
    letkf_analysis,
    make_data,
)

DESCRIPTION = (
    "Learned LETKF localisation/inflation (Bach et al. 2025): L96 d=40, 10 of 40 observed every 0.15, sigma_y=1 "
    "(--set sigma=0.7); truth-trained (fine-tuned at N=40-100, trained at N=60, 100 too) and truth-free vs the "
    "grid-searched and the adaptive-inflation LETKF per N (bars -10% at N=10, 20, -15% at N=60, 100; truth-free -5% at N=20)"
)

def _seeds(seed: int) -> dict[str, int]:
    names = ("grid", "train", "valid", "test", "fit", "init", "test_ens", "grid_ens")
    states = np.random.SeedSequence([seed, 13]).generate_state(len(names), dtype=np.uint64)
    return {k: int(s) >> 1 for k, s in zip(names, states, strict=True)}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _data(setup: BachSetup, config: FilterBachConfig, seeds: dict[str, int]) -> dict[str, TwinData]:
    return {
        "grid": make_data(setup, config.grid_trajectories, config.grid_cycles, _gen(seeds["grid"])),
        "train": make_data(setup, config.train_trajectories, config.train_cycles, _gen(seeds["train"])),
        "valid": make_data(setup, config.valid_trajectories, config.valid_cycles, _gen(seeds["valid"])),
        "test": make_data(setup, config.test_trajectories, config.test_cycles, _gen(seeds["test"])),
    }


def _radii(config: FilterBachConfig, N: int) -> list[float]:
    """Radii of the grid search at N."""
    return [*config.radii, *config.large_radii] if N >= config.large_from else list(config.radii)


def _grid_key(config: FilterBachConfig, seed: int, N: int) -> str:
    return (f"seed {seed}, sigma {config.sigma}, infls {config.infls}, radii {_radii(config, N)}, "
            f"{config.grid_trajectories}x{config.grid_cycles}, burn-in {config.burn_in}")


def _grids(setup: BachSetup, config: FilterBachConfig, data: TwinData, seeds: dict[str, int], out: Path,
           resume: bool, say: Callable[[str], None], seed: int) -> dict[int, dict]:
    """The grid search per N; with ``resume`` the sizes in ``grid.json`` made with the same settings are reused."""
    path = out / "grid.json"
    grids: dict[int, dict] = {}
    if resume and path.is_file():  # entries written before the key was stored are taken as they are
        grids = {int(k): v for k, v in json.loads(path.read_text()).items()
                 if v.get("key", _grid_key(config, seed, int(k))) == _grid_key(config, seed, int(k))}
        if grids:
            say(f"grid search reloaded from grid.json for N={sorted(grids)}")
    for N in config.sizes:
        if N in grids:
            continue
        radii = _radii(config, N)
        say(f"grid search LETKF N={N}: {len(config.infls)} inflations x {len(radii)} radii")
        burn = min(config.burn_in, config.grid_cycles // 2)
        grids[N] = grid_search(setup, N, data, config.infls, radii, _gen(seeds["grid_ens"] + N), burn)
        grids[N]["key"] = _grid_key(config, seed, N)
        say(f"  best infl {grids[N]['infl']}, radius {grids[N]['loc_rad']}: R-RMSE {grids[N]['r_rmse']:.4f}")
        write_json(path, {str(k): v for k, v in sorted(grids.items())})
    return grids


def _train(setup: BachSetup, config: FilterBachConfig, data: dict[str, TwinData], grid: dict, loss: str,
           seeds: dict[str, int], out: Path, resume: bool, say: Callable[[str], None],
           N: int | None = None) -> tuple[LearnedFilterNet, dict]:
    """A network trained at ``N`` (default ``train_N``) from the tuned LETKF ``grid`` of that N.

    The same seeds at every N: the network trained here at N (learning rate ``at_N_lr``) is the
    one a run with ``train_N=N`` and ``lr=at_N_lr`` trains.
    """
    at = config.train_N if N is None else N
    own = at != config.train_N  # a network of its own at another N: its own checkpoint and learning rate
    lr = (config.at_N_lr or config.lr) if own else config.lr
    lr_final = config.at_N_lr_final if own else config.lr_final
    tag = f"_N{at}_lr{lr:g}" + (f"_to{lr_final:g}" if lr_final else "")
    patience = config.epochs if own and lr_final else config.patience  # a decaying rate: the whole schedule
    torch.manual_seed(seeds["init"])
    field = {"hidden": config.hidden, "width": config.width} if config.field else None
    correction = ({"hidden": config.correction_hidden, "width": config.width}
                  | ({"particles": True} if config.correction_particles else {})) if config.correction else None
    net = LearnedFilterNet(setup.n, loc_rad=config.init_loc_rad or grid["loc_rad"],
                           infl=config.init_infl or max(grid["infl"], 1.005), field=field, sites=config.sites,
                           correction=correction)
    if config.epochs == 0:
        return net, {"history": [], "best_valid": math.nan, "cpu_s": 0.0, "wall_s": 0.0, "stopped_early": False}
    fit = fit_filter(setup, net, at, data["train"], data["valid"], generator=_gen(seeds["fit"]),
                     loss=loss, epochs=config.epochs, lr=lr, window=config.window, patience=patience,
                     burn_in=config.burn_in, checkpoint=out / f"checkpoint_{loss}{tag if own else ''}.pt",
                     resume=resume, progress=say, lr_final=lr_final,
                     fresh_data=config.fresh_data, max_seconds=60.0 * config.max_minutes)
    return net, {"history": fit.history, "best_valid": fit.best_valid, "cpu_s": fit.cpu_s, "wall_s": fit.wall_s,
                 "stopped_early": fit.stopped_early}


def _finetune(setup: BachSetup, config: FilterBachConfig, data: dict[str, TwinData], net: LearnedFilterNet, N: int,
              seeds: dict[str, int], out: Path, resume: bool,
              say: Callable[[str], None]) -> tuple[LearnedFilterNet | None, dict]:
    """The truth-trained network trained on at N (truth loss, ``finetune_lr``); None if it diverged."""
    tuned = copy.deepcopy(net)
    lr = _finetune_lr(config)
    try:
        fit = fit_filter(setup, tuned, N, data["train"], data["valid"], generator=_gen(seeds["fit"] + N),
                         loss="truth", epochs=config.finetune_epochs, lr=lr, window=config.window,
                         patience=config.patience, burn_in=config.burn_in,
                         checkpoint=out / f"checkpoint_finetune_N{N}_lr{lr:g}.pt", resume=resume, progress=say,
                         fresh_data=config.fresh_data, max_seconds=60.0 * config.finetune_max_minutes)
    except RuntimeError as err:  # a diverging filter: reported, the unchanged network stands
        say(f"fine-tuning at N={N} failed: {err}")
        return None, {"failed": str(err)}
    return tuned, {"cpu_s": fit.cpu_s, "wall_s": fit.wall_s, "best_valid": fit.best_valid,
                   "epochs": len(fit.history) - 1, "stopped_early": fit.stopped_early}


def _finetune_lr(config: FilterBachConfig) -> float:
    return config.lr if config.finetune_lr is None else config.finetune_lr


def _mean(v: torch.Tensor, keep: torch.Tensor) -> float:
    return float(v[keep].mean()) if bool(keep.any()) else math.inf


def _fingerprint(net: LearnedFilterNet) -> str:
    """A hash of the weights (test scores are cached per network)."""
    h = hashlib.sha1(usedforsecurity=False)
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class _ScoreCache:
    """Per-trajectory test R-RMSEs by filter, kept in ``out/test_scores.json`` (read only with ``resume``)."""

    def __init__(self, path: Path, data_key: str, resume: bool):
        self.path, self.data_key = path, data_key
        saved = json.loads(path.read_text()) if resume and path.is_file() else {}
        self.scores: dict[str, list[float]] = saved.get("scores", {}) if saved.get("data") == data_key else {}

    def get(self, key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key not in self.scores:
            self.scores[key] = compute().tolist()
            write_json(self.path, {"data": self.data_key, "scores": self.scores})
        return torch.tensor(self.scores[key], dtype=torch.float64)


def run(
    out: Path,
    *,
    seed: int = 1,
    quick: bool = False,
    overrides: list[str] | None = None,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Grid-search, train, test and compare; returns the summary written to ``out/summary.json``."""
    config = make_config(quick, list(overrides or []))
    say = progress or (lambda _msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    setup = BachSetup(sigma=config.sigma)
    seeds = _seeds(seed)
    data = _data(setup, config, seeds)
    grids = _grids(setup, config, data["grid"], seeds, out, resume, say, seed)
    nets, training = {}, {}
    for loss in ("truth", "observations") if config.truth_free else ("truth",):
        say(f"training the learned filter at N={config.train_N} with the {loss} loss")
        nets[loss], training[loss] = _train(setup, config, data, grids[config.train_N], loss, seeds, out, resume, say)
        name = "filter.pt" if loss == "truth" else "filter_truth_free.pt"
        info = {"config": config.model_dump(), "seed": seed, "loss": loss, "train_N": config.train_N,
                "best_valid_r_rmse": training[loss]["best_valid"]}
        save_learned_analysis(LearnedLETKF(nets[loss], p=len(setup.obs_index), N=config.train_N, info=info),
                              out / name)
    results: dict[int, dict[str, float]] = {}
    common: dict[int, dict[str, float]] = {}
    diverged: dict[str, dict[str, int]] = {}
    vs_adaptive: dict[int, dict[str, float]] = {}
    finetune: dict[str, dict] = {}
    at_N: dict[str, dict] = {}
    test = data["test"]
    burn = min(config.burn_in, config.test_cycles // 2)
    cache = _ScoreCache(out / "test_scores.json", f"seed {seed}, sigma {config.sigma}, {config.test_trajectories}x"
                        f"{config.test_cycles}, burn-in {burn}", resume)
    tune_at = [N for N in config.sizes if N != config.train_N] if config.finetune_sizes is None else \
        [N for N in config.finetune_sizes if N in config.sizes and N != config.train_N]
    for N in config.sizes:
        g = grids[N]
        E0 = initial_ensemble(test, N, _gen(seeds["test_ens"] + N))

        def score(key: str, analyse: Callable[[], Any], E0: torch.Tensor = E0, N: int = N) -> torch.Tensor:
            return cache.get(f"N{N} {key}", lambda: cycle_r_rmse(setup, analyse(), E0, test, burn,
                                                                  per_trajectory=True))

        per = {"letkf": score(f"letkf {g['infl']} {g['loc_rad']}", lambda g=g: letkf_analysis(setup, g["infl"],
                                                                                                g["loc_rad"]))}
        if config.adaptive:
            per["adaptive"] = score(f"adaptive {g['loc_rad']}", lambda g=g: adaptive_letkf_analysis(setup, g["loc_rad"]))
        for loss, net in nets.items():
            per[loss] = score(f"{loss} {_fingerprint(net)}", lambda net=net: learned_analysis(setup, net))
        if config.finetune_epochs and N in tune_at:
            say(f"fine-tuning the truth-trained filter at N={N} ({config.finetune_epochs} epochs at most)")
            tuned, finetune[str(N)] = _finetune(setup, config, data, nets["truth"], N, seeds, out, resume, say)
            if tuned is not None:
                info = {"config": config.model_dump(), "seed": seed, "loss": "truth", "train_N": config.train_N,
                        "finetuned_N": N, "best_valid_r_rmse": finetune[str(N)]["best_valid"]}
                save_learned_analysis(LearnedLETKF(tuned, p=len(setup.obs_index), N=N, info=info),
                                      out / f"filter_finetuned_N{N}.pt")
                per["finetuned"] = score(f"finetuned {_fingerprint(tuned)}",
                                         lambda tuned=tuned: learned_analysis(setup, tuned))
        if N in config.at_N_sizes and N != config.train_N:
            say(f"training a learned filter at N={N} from the tuned LETKF there (truth loss)")
            try:
                own, at_N[str(N)] = _train(setup, config, data, g, "truth", seeds, out, resume, say, N=N)
            except RuntimeError as err:  # a diverging filter: reported, no column entry
                say(f"training at N={N} failed: {err}")
                at_N[str(N)] = {"failed": str(err)}
            else:
                at_N[str(N)].pop("history")
                info = {"config": config.model_dump(), "seed": seed, "loss": "truth", "train_N": N,
                        "best_valid_r_rmse": at_N[str(N)]["best_valid"]}
                save_learned_analysis(LearnedLETKF(own, p=len(setup.obs_index), N=N, info=info),
                                      out / f"filter_N{N}.pt")
                per["at_N"] = score(f"at_N {_fingerprint(own)}", lambda own=own: learned_analysis(setup, own))
        # trajectories no filter lost (the adaptive baseline aside: it is compared on its own kept subset of them)
        ok = torch.stack([torch.isfinite(v) for k, v in per.items() if k != "adaptive"]).all(0)
        results[N] = {k: float(v.mean()) for k, v in per.items()}
        common[N] = {k: _mean(v, ok) for k, v in per.items() if k != "adaptive"}
        common[N]["trajectories"] = int(ok.sum())
        if "adaptive" in per:
            kept = ok & torch.isfinite(per["adaptive"])
            vs_adaptive[N] = {k: _mean(v, kept) for k, v in per.items()} | {"trajectories": int(kept.sum())}
            common[N]["adaptive"] = vs_adaptive[N]["adaptive"]
        lost = {k: int((~torch.isfinite(v)).sum()) for k, v in per.items()}
        if any(lost.values()):
            diverged[str(N)] = lost
        say(f"N={N}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[N].items())
            + (f"; diverged trajectories {lost}, on the {int(ok.sum())} common ones: "
               + ", ".join(f"{k} {common[N][k]:.4f}" for k in per) if any(lost.values()) else ""))
    # gains on the trajectories every filter kept; a learned filter losing more trajectories than the LETKF fails
    gain = {N: {k: 1.0 - v / c["letkf"] for k, v in c.items() if k not in ("letkf", "trajectories", "adaptive")}
            for N, c in common.items()}
    for N, c in vs_adaptive.items():
        gain[N]["adaptive"] = 1.0 - c["adaptive"] / c["letkf"]

    def passes(N: int, key: str, bar: float, base: str = "letkf") -> bool:
        lost, c = diverged.get(str(N), {}), (vs_adaptive if base == "adaptive" else common).get(N, {})
        return (key in c and base in c and 1.0 - c[key] / c[base] >= bar
                and lost.get(key, 0) <= lost.get(base, 0))

    checks = {f"truth_N{N}": passes(N, "truth", config.bar_truth) or passes(N, "finetuned", config.bar_truth)
              for N in config.bar_sizes}
    checks |= {f"large_N{N}": any(passes(N, k, config.bar_large) for k in ("truth", "finetuned", "at_N"))
               for N in config.bar_large_sizes if N in common}
    if config.truth_free:
        checks[f"truth_free_N{config.train_N}"] = passes(config.train_N, "observations", config.bar_truth_free)
    if config.adaptive and config.bar_adaptive:
        checks |= {f"beats_adaptive_N{N}": passes(N, "truth", 0.0, "adaptive") for N in config.bar_sizes}
    finetune_cpu = sum(v.get("cpu_s", 0.0) for v in finetune.values()) + sum(v.get("cpu_s", 0.0) for v in at_N.values())
    fields = fields_vs_spread(setup, nets["truth"], test, config.train_N, seeds["test_ens"])
    plot_outputs(out, setup, nets, grids[config.train_N], common, fields)
    train_cpu = sum(t["cpu_s"] for t in training.values()) + finetune_cpu
    summary = {
        "method": "learned_filter",
        "r_rmse": {str(N): r["truth"] for N, r in results.items()},
        "r_rmse_truth_free": {str(N): r["observations"] for N, r in results.items() if "observations" in r},
        "r_rmse_finetuned": {str(N): r["finetuned"] for N, r in results.items() if "finetuned" in r},
        "r_rmse_adaptive": {str(N): r["adaptive"] for N, r in results.items() if "adaptive" in r},
        "r_rmse_at_N": {str(N): r["at_N"] for N, r in results.items() if "at_N" in r},
        "rmse": results[config.train_N]["truth"],
        "baselines": {f"letkf_N{N}": r["letkf"] for N, r in results.items()}
        | {f"adaptive_N{N}": r["adaptive"] for N, r in results.items() if "adaptive" in r},
        "baseline_params": {f"letkf_N{N}": {k: grids[N][k] for k in ("infl", "loc_rad", "r_rmse")} for N in results},
        "paper_letkf": PAPER_LETKF.get(config.sigma, {}),
        "gain": {str(N): v for N, v in gain.items()},
        "r_rmse_common": {str(N): v for N, v in common.items()},
        "r_rmse_vs_adaptive": {str(N): v for N, v in vs_adaptive.items()},
        "diverged": diverged,
        "train_s": train_cpu,
        "train_cpu_s": train_cpu,
        "train_wall_s": sum(t["wall_s"] for t in training.values()),
        "training": {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in training.items()},
        "finetune": finetune,
        "trained_at_N": at_N,
        "bar": {"truth_gain": config.bar_truth, "truth_sizes": config.bar_sizes, "large_gain": config.bar_large,
                "large_sizes": config.bar_large_sizes,
                "truth_free_gain": config.bar_truth_free if config.truth_free else None, "checks": checks},
        "met": all(checks.values()),
        "learned_infl": nets["truth"].infl.detach().tolist(),
        "learned_taper": nets["truth"].taper.values().detach().tolist(),
        "quick": quick,
        "seed": seed,
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "config": config.model_dump(),
    }
    write_json(out / "training.json", {k: v["history"] for k, v in training.items()})
    write_json(out / "summary.json", summary)
    say(f"R-RMSE at N={config.train_N}: learned {summary['rmse']:.4f} vs tuned LETKF "
        f"{results[config.train_N]['letkf']:.4f}; bars {'met' if summary['met'] else 'NOT met'} {checks}")
    return summary
