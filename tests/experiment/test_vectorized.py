"""Vectorised runs: B experiments as one tensor program give each run's unbatched numbers."""

from __future__ import annotations

import pytest

from hybrida.experiment.config import ConfigError, load_config
from hybrida.experiment.runner import run_experiment
from hybrida.experiment.vectorized import run_vectorized, split_groups, why_not_vectorizable


def _configs(preset: str, method: list[str], infls: list[float], seeds: list[int], cycles: int):
    return [
        load_config(preset, overrides=[*method, f"method.params.infl={i}", f"cycles={cycles}", "burn_in=0.5"])
        .model_copy(update={"seed": s})
        for s in seeds
        for i in infls
    ]


@pytest.mark.parametrize(
    ("preset", "method"),
    [
        ("lorenz96/sakov2008", ["method.name=etkf", "method.params.N=10"]),
        ("lorenz96/sakov2008", ["method.name=letkf", "method.params.N=10", "method.params.loc_rad=4"]),
        ("lorenz63/sakov2012", ["method.name=etkf", "method.params.N=10"]),
    ],
)
def test_each_run_equals_its_unbatched_run(preset, method):
    configs = _configs(preset, method, [1.02, 1.05], [1, 2], cycles=40)
    batched = run_vectorized(configs)
    for config, got in zip(configs, batched):
        alone = run_experiment(config, None, progress=False).summary
        for key in ("rmse_a", "rmse_f", "spread_a", "spread_f", "n_scored", "n_cycles", "lost_fraction"):
            assert got[key] == pytest.approx(alone[key], abs=1e-12, rel=0), key
        assert got["diverged"] == alone["diverged"] and got["vectorized"] == 4


def test_a_diverging_run_does_not_touch_the_others():
    configs = _configs("lorenz96/sakov2008", ["method.name=etkf", "method.params.N=10"], [1.02, 1e8], [1], 30)
    good, bad = run_vectorized(configs)
    alone = run_experiment(configs[0], None, progress=False).summary
    assert good["rmse_a"] == pytest.approx(alone["rmse_a"], abs=1e-12, rel=0)
    assert bad["diverged"] and bad["n_cycles"] == bad["diverged_cycle"] - 1 < 30


def test_what_cannot_be_batched_is_refused_with_the_reason():
    base = _configs("lorenz96/sakov2008", ["method.name=etkf", "method.params.N=10"], [1.02], [1, 2], 20)
    assert why_not_vectorizable(base) is None
    other_n = base[:1] + _configs("lorenz96/sakov2008", ["method.name=etkf", "method.params.N=12"], [1.02], [3], 20)
    assert "differ in more than" in why_not_vectorizable(other_n)
    assert split_groups(other_n) == [[0], [1]]
    enkf = _configs("lorenz96/sakov2008", ["method.name=enkf", "method.params.N=10"], [1.02], [1], 20)
    with pytest.raises(ConfigError, match="not vectorised"):
        run_vectorized(enkf)


def test_sweep_vectorize_gives_the_point_by_point_table(tmp_path):
    from hybrida.experiment.sweep import load_sweep, run_sweep

    spec = load_sweep({
        "name": "vec", "base": "lorenz96/sakov2008", "set": {"cycles": 30, "burn_in": 0.5},
        "methods": ["etkf", "enkf"], "N": [10], "infl": [1.02, 1.05], "seeds": [1, 2],
    })
    vec = run_sweep(spec, tmp_path / "v", workers=0, progress=False, vectorize=True).runs
    one = run_sweep(spec, tmp_path / "s", workers=0, progress=False).runs
    assert (vec["rmse_a"] - one["rmse_a"]).abs().max() < 1e-12
    # the ETKF points ran as one batch of 4; the EnKF (random perturbations) point by point
    assert vec.loc[vec["method"] == "etkf", "vectorized"].tolist() == [4] * 4
    assert vec.loc[vec["method"] == "enkf", "vectorized"].isna().all()


def test_sweep_vectorize_splits_a_group_across_local_processes(tmp_path):
    from hybrida.experiment.sweep import _vectorized_parts, load_sweep, run_sweep

    assert [len(p) for p in _vectorized_parts(list(range(5)), 2)] == [3, 2]
    assert [len(p) for p in _vectorized_parts(list(range(3)), 4)] == [3]  # parts keep two runs or more
    spec = load_sweep({
        "name": "vec2", "base": "lorenz96/sakov2008", "set": {"cycles": 30, "burn_in": 0.5},
        "methods": ["etkf"], "N": [10], "infl": [1.02, 1.05], "seeds": [1, 2],
    })
    two = run_sweep(spec, tmp_path / "p", workers=2, progress=False, vectorize=True).runs
    one = run_sweep(spec, tmp_path / "o", workers=0, progress=False, vectorize=True).runs
    assert (two["rmse_a"] - one["rmse_a"]).abs().max() < 1e-12
    assert two["vectorized"].tolist() == [2] * 4 and one["vectorized"].tolist() == [4] * 4
