"""Config validation names the field and the allowed values; overrides and presets work."""

from __future__ import annotations

import math

import pytest

from hybrida.experiment.builder import build, derive_seeds
from hybrida.experiment.config import ConfigError, load_config, validate_config
from hybrida.experiment.presets import PRESETS, list_presets


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(data)
    return str(info.value)


def test_defaults_validate():
    cfg = validate_config({})
    assert cfg.model.name == "lorenz96" and cfg.method.name == "etkf" and cfg.cycles > 0


def test_unknown_top_level_key_is_named(tiny_config):
    msg = _error(tiny_config(cycels=10))
    assert "cycels" in msg and "allowed keys" in msg and "cycles" in msg


def test_unknown_nested_key_is_named(tiny_config):
    data = tiny_config()
    data["method"]["param"] = {}
    msg = _error(data)
    assert "method.param" in msg and "name, params" in msg


@pytest.mark.parametrize(
    "section, field, what",
    [
        ("method", "method.name", "unknown method 'foo'"),
        ("model", "model.name", "unknown model 'foo'"),
        ("observations", "observations.name", "unknown observation network 'foo'"),
    ],
)
def test_unknown_component_names_list_choices(tiny_config, section, field, what):
    data = tiny_config()
    data[section]["name"] = "foo"
    msg = _error(data)
    assert field in msg and what in msg and "choose one of" in msg


def test_unknown_method_lists_registered_names(tiny_config):
    data = tiny_config()
    data["method"]["name"] = "foo"
    msg = _error(data)
    for name in ("enkf", "etkf", "letkf", "3dvar"):
        assert name in msg


def test_negative_std_rejected(tiny_config):
    data = tiny_config()
    data["observations"]["params"]["std"] = -1.0
    assert "observations.params.std" in _error(data)
    data = tiny_config(initial={"std": -0.5})
    msg = _error(data)
    assert "initial.std" in msg and "greater than or equal to 0" in msg


def test_small_ensemble_rejected(tiny_config):
    data = tiny_config()
    data["method"]["params"]["N"] = 1
    assert "method.params.N" in _error(data) and ">= 2" in _error(data)


def test_cycles_and_every_must_be_positive(tiny_config):
    assert "cycles" in _error(tiny_config(cycles=0))
    data = tiny_config()
    data["observations"]["every"] = 0
    assert "observations.every" in _error(data)


def test_literal_fields_list_allowed_values(tiny_config):
    msg = _error(tiny_config(dtype="float16"))
    assert "dtype" in msg and "float64" in msg and "float32" in msg


def test_burn_in_must_be_shorter_than_run(tiny_config):
    msg = _error(tiny_config(burn_in=5.0))  # 30 cycles x 0.05 = 1.5
    assert "burn_in" in msg and "1.5" in msg


def test_overrides_parse_yaml_scalars():
    cfg = load_config(
        "lorenz96/sakov2008",
        [
            "method.params.N=20",
            "method.params.infl=1.05",
            "store_members=true",
            "cycles=500",
            "observations.params.correlation_length=2",
        ],
    )
    assert cfg.method.params["N"] == 20 and isinstance(cfg.method.params["N"], int)
    assert cfg.method.params["infl"] == 1.05 and cfg.store_members is True and cfg.cycles == 500
    assert cfg.observations.params["correlation_length"] == 2


@pytest.mark.parametrize("bad", ["methodN", "=3", "method..N=3", "method.params.N=[1,"])
def test_bad_override_syntax(bad):
    with pytest.raises(ConfigError) as info:
        load_config("lorenz96/sakov2008", [bad])
    assert "--set" in str(info.value)


def test_override_into_value_is_an_error():
    with pytest.raises(ConfigError, match="cycles"):
        load_config("lorenz96/sakov2008", ["cycles.x=3"])


def test_override_is_validated():
    with pytest.raises(ConfigError, match="method.params.N"):
        load_config("lorenz96/sakov2008", ["method.params.N=1"])


def test_switching_method_takes_its_tuned_params():
    cfg = load_config("lorenz96/sakov2008", ["method.name=3dvar"])
    assert cfg.method.params == {"xB": 0.02}
    cfg = load_config("lorenz96/sakov2008", ["method.name=letkf", "method.params.N=7"])
    assert cfg.method.params == {"N": 7, "infl": 1.02, "loc_rad": 4}


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError) as info:
        load_config("lorenz96/nope")
    msg = str(info.value)
    assert "unknown preset 'lorenz96/nope'" in msg and "lorenz63/sakov2012" in msg


def test_yaml_file_with_preset_base(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("preset: lorenz63/sakov2012\nmethod: {name: oi}\nseed: 5\n")
    cfg = load_config(path)
    assert cfg.model.name == "lorenz63" and cfg.method.name == "oi" and cfg.method.params == {}
    assert cfg.seed == 5 and cfg.observations.every == 25


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {name: lorenz96\ncycles: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_presets_validate_and_match_references():
    assert {name for name, _ in list_presets()} == set(PRESETS)
    for name in PRESETS:
        assert load_config(name).name == name
    l63 = load_config("lorenz63/sakov2012")
    assert l63.observations.every == 25 and math.isclose(l63.observations.params["std"] ** 2, 2.0)
    assert l63.cycles == 1000 and l63.burn_in == 16.0
    l96 = load_config("lorenz96/sakov2008")
    assert l96.method.params == {"N": 28, "infl": 1.02} and l96.burn_in == 20.0


def test_unknown_method_param_names_accepted_ones(tiny_config):
    cfg = validate_config(
        tiny_config(method={"name": "oi", "params": {"Nx": 3}}, cycles=3, burn_in=0.0)
    )
    with pytest.raises(ConfigError) as info:
        build(cfg)
    msg = str(info.value)
    assert "method.params" in msg and "'Nx'" in msg and "xB" in msg


def test_observation_params_reserved(tiny_config, standins):
    data = tiny_config()
    data["observations"]["params"]["every"] = 2
    with pytest.raises(ConfigError, match="observations.params.every"):
        build(validate_config(data))


def test_seed_streams_are_distinct_and_deterministic():
    a, b = derive_seeds(3), derive_seeds(4)
    assert a == derive_seeds(3)
    assert len(set(a.values())) == len(a)
    assert not set(a.values()) & set(b.values())
