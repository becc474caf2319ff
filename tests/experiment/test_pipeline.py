"""The DA–ML pipeline: config validation, each training source end to end, outputs, reload."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from pydantic import BaseModel

from hybrida.experiment.builder import build
from hybrida.experiment.config import ConfigError
from hybrida.experiment.surrogate_pipeline import (
    PRESETS,
    SurrogateExperimentConfig,
    load_surrogate_config,
    run_surrogate_experiment,
)
from hybrida.learn import diagnostics as dg
from hybrida.learn.persist import load_surrogate
from hybrida.metrics import rmse

PLOTS = ("valid_time.png", "spectra.png", "lyapunov.png", "da_rmse.png", "training.png")


def tiny(source: str = "reanalysis") -> dict:
    """A config that runs end to end in a few seconds (L96 n=12, a 100-parameter CNN)."""
    return {
        "name": f"tiny-{source}",
        "source": source,
        "experiment": {
            "model": {"name": "lorenz96", "params": {"n": 12, "F": 8.0, "dt": 0.05}},
            "observations": {"name": "random_subset", "params": {"p": 0.5, "std": 1.0}},
            "method": {"name": "etkf", "params": {"N": 8, "adaptive": True}},
            "burn_in": 0.5,
            "seed": 7,
        },
        "network": {"name": "BrajardCNN", "params": {"filters": 3, "hidden": 4}},
        "training": {"train_cycles": 200, "epochs": 2, "batch_size": 64},
        "loop": {"max_iterations": 2, "patience": 2},
        "evaluation": {
            "test_cycles": 100,
            "burn_in_cycles": 10,
            "lead": 1.0,
            "n_starts": 5,
            "lyapunov_steps": 30,
            "lyapunov_transient": 5,
            "free_run_cycles": 50,
        },
    }


def _descriptions_missing(model: type[BaseModel], prefix: str = "") -> list[str]:
    missing = []
    for name, f in model.model_fields.items():
        if not f.description:
            missing.append(prefix + name)
        ann = f.annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                missing += _descriptions_missing(cand, f"{prefix}{name}.")
    return missing


def test_defaults_and_presets_validate_with_documented_fields():
    cfg = SurrogateExperimentConfig()
    assert cfg.source == "reanalysis" and cfg.network.name == "BrajardCNN"
    assert cfg.experiment["observations"]["name"] == "random_subset"
    assert cfg.evaluation.threshold == 0.5
    assert _descriptions_missing(SurrogateExperimentConfig) == []
    for name in PRESETS:
        load_surrogate_config(name)
    b = load_surrogate_config("brajard2020")
    assert b.source == "loop" and b.experiment["model"]["params"]["n"] == 40
    assert b.experiment["observations"]["params"] == {"p": 0.5, "std": 1.0}
    # the twin covers the training and the test periods
    assert b.twin_config().cycles == b.training.train_cycles + b.evaluation.test_cycles


@pytest.mark.parametrize(
    "override, needle",
    [
        ("network.name=Nope", "network.name: unknown network 'Nope'"),
        ("network.params.width=3", "network.params: BrajardCNN has no parameter 'width'"),
        ("network.params.kernel_size=4", "network.params: BrajardCNN: kernel_size must be odd"),
        ("network.scheme=leapfrog", "network.scheme: unknown scheme 'leapfrog'"),
        ("source=oracle", "source:"),
        ("training.lr=0", "training.lr:"),
        ("training.lr_schedule=step", "training.lr_schedule: unknown schedule"),
        ("training.colour=red", "training.colour: unknown key 'colour'"),
        ("experiment.method.params.N=1", "experiment.method.params.N:"),
        ("experiment.observations.name=nope", "experiment.observations.name: unknown observation"),
        ("experiment=lorenz96/nope", "experiment: unknown preset"),
        ("evaluation.lead=100", "evaluation.lead:"),
        ("evaluation.burn_in_cycles=500", "evaluation.burn_in_cycles:"),
    ],
)
def test_bad_input_names_the_field(override, needle):
    with pytest.raises(ConfigError) as err:
        load_surrogate_config(tiny(), [override])
    assert needle in str(err.value)


def test_yaml_source_with_preset_base_and_bad_files(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"preset": "brajard2020", "training": {"epochs": 3}}))
    cfg = load_surrogate_config(path, ["experiment.observations.params.p=0.75"])
    assert cfg.source == "loop" and cfg.training.epochs == 3
    assert cfg.training.train_cycles == PRESETS["brajard2020"]["training"]["train_cycles"]
    assert cfg.experiment["observations"]["params"]["p"] == 0.75
    bad = tmp_path / "bad.yaml"
    bad.write_text("network: {name: BrajardCNN\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_surrogate_config(bad)
    with pytest.raises(ConfigError, match="unknown surrogate preset 'nope'"):
        load_surrogate_config("nope")


@pytest.fixture(scope="module", params=["truth", "reanalysis", "loop"])
def finished(request, tmp_path_factory):
    data = tiny(request.param)
    data["training"].update(epochs=20, lr=1e-2)  # enough to learn (test_each_source_learned)
    cfg = load_surrogate_config(data)
    out = tmp_path_factory.mktemp(request.param)
    stages: list[str] = []
    summary = run_surrogate_experiment(cfg, out, progress=stages.append)
    return cfg, out, summary, stages


def test_each_source_runs_end_to_end_and_writes_everything(finished):
    cfg, out, summary, stages = finished
    for name in ("surrogate.pt", "summary.json", "table.md", "config.yaml", *PLOTS):
        assert (out / name).exists(), name
    assert (out / "loop_history.png").exists() == (cfg.source == "loop")
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["source"] == cfg.source and on_disk["rmse_a_model"] == summary["rmse_a_model"]
    assert set(on_disk["files"]) >= {"surrogate.pt", "summary.json", "table.md"}
    assert "| DA rmse_a, test period |" in (out / "table.md").read_text()
    assert stages and stages[0].startswith("twin")
    # the true model's DA on the test period tracks the truth; the ratio is what it says
    assert 0 < summary["rmse_a_model"] < 1.0
    assert summary["rmse_ratio"] == pytest.approx(
        summary["rmse_a_surrogate"] / summary["rmse_a_model"]
    )
    assert summary["within_15pct"] == (summary["rmse_ratio"] <= 1.15)
    # Lyapunov times are the model-time valid time times the truth's exponent
    assert summary["valid_time_lyapunov"] == pytest.approx(
        summary["valid_time"] * summary["lyapunov_truth"]
    )
    assert 0.5 < summary["lyapunov_truth"] < 2.5  # L96 n=12 F=8: ~1.1 per time unit
    assert 1.6 < summary["taylor_slope"] < 2.6 and summary["adjoint_error"] < 1e-10
    assert set(summary["wall_s"]) >= {"twin", "train", "diagnostics", "da_test", "total"}
    if cfg.source == "truth":
        assert "reanalysis_rmse_a" not in summary
    else:
        # a classical reanalysis (or the loop's best analyses) beats climatology
        assert summary["reanalysis_rmse_a"] < summary["clim_std"] or cfg.source == "loop"
    if cfg.source == "loop":
        assert 1 <= len(summary["loop"]) <= 2
        assert math.isfinite(summary["first_guess_rmse"])


def test_saved_surrogate_reloads_and_reproduces_the_forecasts(finished):
    cfg, out, summary, _ = finished
    sur = load_surrogate(out / "surrogate.pt")
    assert sur.training_config["source"] == cfg.source
    # recompute the valid time of the reloaded surrogate on the same test truth
    exp = build(cfg.twin_config())
    truth = exp.twin.truth
    test = truth[cfg.training.train_cycles :]
    L = round(cfg.evaluation.lead / sur.dt)
    first = min(cfg.evaluation.burn_in_cycles, test.shape[0] - L - 1)
    S = min(cfg.evaluation.n_starts, test.shape[0] - L - first)
    starts = torch.linspace(first, test.shape[0] - L - 1, S).round().long()
    curve = dg.forecast_skill(sur, test, starts, L, clim_std=dg.climatological_std(truth))
    assert dg.valid_time(curve, cfg.evaluation.threshold).time == summary["valid_time_from_truth"]


# lead-1 rmse of the saved surrogate over persistence's on the test truth, measured (seed 7):
# truth 0.29, reanalysis 0.29, loop 0.52; untrained (lr 1e-12): 1.04 to 1.06 for all three
LEARNED_BAR = {"truth": 0.4, "reanalysis": 0.4, "loop": 0.7}


def test_each_source_learned(finished):
    """Each source's surrogate beats persistence one cycle ahead by a stated factor, and the
    surrogate's forecasts from the truth stay valid longer than an untrained network's (0.1)."""
    cfg, out, summary, _ = finished
    sur = load_surrogate(out / "surrogate.pt")
    test = build(cfg.twin_config()).twin.truth[cfg.training.train_cycles :]
    with torch.no_grad():
        lead1 = float(rmse(sur.step(test[:-1]), test[1:]).mean())
    persistence = float(rmse(test[:-1], test[1:]).mean())
    assert lead1 < LEARNED_BAR[cfg.source] * persistence, lead1 / persistence
    assert summary["valid_time_from_truth"] >= 0.2  # measured 0.4 / 0.35 / 0.2
    assert summary["rmse_a_surrogate"] < summary["clim_std"]  # measured 3.0 / 2.8 / 3.4 < 3.68; untrained 7.5


def test_same_seed_same_numbers(tmp_path):
    cfg = load_surrogate_config(tiny("truth"))
    a = run_surrogate_experiment(cfg, None)
    b = run_surrogate_experiment(cfg, None)
    for key in ("rmse_a_surrogate", "rmse_a_model", "valid_time", "fit_best_valid"):
        assert a[key] == b[key], key


def test_example_config_validates():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "surrogate_l96.yaml"
    cfg = load_surrogate_config(path)
    assert cfg.source == "reanalysis" and cfg.experiment["method"]["name"] == "etkf"


def test_valid_times_compare_like_with_like():
    """Both models forecast from the same analyses: the true model as 'surrogate' ties with itself,
    and the upper bound (from the truth) is what the analyses give when they equal the truth."""
    from types import SimpleNamespace

    from hybrida.experiment.surrogate_config import EvaluationConfig
    from hybrida.experiment.surrogate_evaluation import valid_times
    from hybrida.models import Lorenz96

    model = Lorenz96(n=12, F=8.0, dt=0.05)
    g = torch.Generator().manual_seed(0)
    truth = model.forecast(model.forecast(model.initial_state() + torch.randn(12, generator=g), 500), 300, trajectory=True)
    tw = SimpleNamespace(model=model, every=1, test_truth=truth, dt_cycle=0.05)
    ev = EvaluationConfig(lead=3.0, n_starts=20, burn_in_cycles=10)
    analyses = truth + 0.3 * torch.randn(truth.shape, generator=g, dtype=truth.dtype)
    clim = dg.climatological_std(truth)
    art = {}
    out = valid_times(ev, model, tw, analyses, clim, 1.2, art)
    assert out["valid_time"] == out["valid_time_model"] and 0.5 < out["valid_time"] < 3.0
    assert out["valid_time_lyapunov"] == pytest.approx(1.2 * out["valid_time"])
    assert out["valid_time_from_truth"] == pytest.approx(3.0)  # the true model from the truth never errs
    exact = valid_times(ev, model, tw, truth, clim, None, {})
    assert exact["valid_time"] == exact["valid_time_from_truth"]
    assert set(art) == {"skill", "skill_reference", "skill_upper"}
