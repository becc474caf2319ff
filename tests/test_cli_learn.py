"""`hybrida learn {analysis,latent,score,filter}`: one command per family of learned pipelines."""

from __future__ import annotations

import json
import sys
import types

import pytest
from typer.testing import CliRunner

from hybrida.cli import app
from hybrida.experiment import learned_analysis

runner = CliRunner()


@pytest.fixture
def toy_family(monkeypatch):
    """A family 'latent' whose one preset 'toy' writes a summary with nested scores."""
    module = types.ModuleType("hybrida_toy_pipeline")
    module.DESCRIPTION = "a toy pipeline"
    calls = []

    def run(out, *, seed, quick, overrides, resume, progress):
        calls.append({"seed": seed, "quick": quick, "overrides": overrides, "resume": resume})
        summary = {"r_rmse": {"N=10": 0.4}, "baselines": {"letkf": {"N=10": 0.5}}, "bar": "<= 0.45", "met": True, "train_s": 1.0}
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary))
        return summary

    module.run = run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(learned_analysis.FAMILIES, "latent", {"toy": module.__name__, "missing": "hybrida.no_such_pipeline"})
    return calls


def test_every_family_has_a_command_and_a_presets_listing():
    for family in learned_analysis.FAMILIES:
        assert runner.invoke(app, ["learn", family, "--help"]).exit_code == 0
        listing = runner.invoke(app, ["learn", f"{family}-presets"])
        assert listing.exit_code == 0
        for preset in learned_analysis.FAMILIES[family]:
            assert preset in listing.output


def test_a_family_command_runs_its_preset_and_prints_nested_scores(toy_family, tmp_path):
    res = runner.invoke(app, ["learn", "latent", "toy", "--out", str(tmp_path / "o"), "--quick", "--seed", "3",
                              "--set", "a=1", "-q"])
    assert res.exit_code == 0, res.output
    assert toy_family == [{"seed": 3, "quick": True, "overrides": ["a=1"], "resume": False}]
    assert "learned r_rmse N=10" in res.output and "0.4000" in res.output
    assert "letkf N=10" in res.output and "0.5000" in res.output
    assert "met" in res.output


def test_unknown_and_unbuilt_presets_are_one_line_errors(toy_family, tmp_path):
    res = runner.invoke(app, ["learn", "latent", "nope", "--out", str(tmp_path / "a")])
    assert res.exit_code == 2
    assert "unknown learned-latent preset 'nope'; choose one of: toy, missing" in res.output
    res = runner.invoke(app, ["learn", "latent", "missing", "--out", str(tmp_path / "b")])
    assert res.exit_code == 2
    assert "not available in this build" in res.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # an analysis preset is not a latent one
    res = runner.invoke(app, ["learn", "latent", "aivar", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "unknown learned-latent preset 'aivar'" in res.output
