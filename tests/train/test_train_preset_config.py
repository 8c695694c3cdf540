"""Presets are filled at validation: the saved config.yaml records the numbers a run used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from closedloop.core.errors import ConfigError
from closedloop.core.pipeline import Pipeline
from closedloop.stages.train import TrainConfig
from closedloop.stages.train.config import PRESETS

PRESET_FIELDS = [k for k in PRESETS["default"] if k in TrainConfig.model_fields]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_values_are_filled_and_explicit_values_win(preset: str) -> None:
    cfg = TrainConfig(preset=preset)
    assert {k: getattr(cfg, k) for k in PRESET_FIELDS} == {k: PRESETS[preset][k] for k in PRESET_FIELDS}
    assert TrainConfig(preset=preset, **{k: PRESETS[preset][k] for k in PRESET_FIELDS}) == cfg
    assert TrainConfig(preset=preset, n_trials=1, max_epochs=None).n_trials == 1
    assert TrainConfig(preset=preset, max_epochs=None).max_epochs == PRESETS[preset]["max_epochs"]


def test_unknown_preset_is_still_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"train.*preset.*'fast'.*'quick', 'default' or 'thorough'"):
        Pipeline.from_dict(
            {"name": "p", "data": {"source": "sklearn", "name": "digits"},
             "stages": [{"kind": "task"}, {"kind": "train", "params": {"preset": "fast"}}]},
        )  # fmt: skip


@pytest.mark.slow
def test_saved_config_has_the_preset_numbers_and_reruns_with_the_same_fingerprint(runs_dir: Path) -> None:
    cfg = runs_dir.parent / "p.yaml"
    cfg.write_text(
        "name: presets\ndata: {source: sklearn, name: digits}\nstages:\n  - kind: task\n"
        "  - kind: train\n    params: {preset: quick, n_trials: 1, ladder: [{width: 4}], threads: 1}\n"
    )
    result = Pipeline.from_yaml(cfg).run(progress=False)
    assert result.ok, result.summary
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    train = next(s for s in saved["stages"] if s["name"] == "train")["params"]
    assert all(train[k] is not None for k in PRESET_FIELDS), train
    assert train["max_epochs"] == PRESETS["quick"]["max_epochs"] and train["n_trials"] == 1
    again = Pipeline.from_yaml(result.run_dir / "config.yaml")
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert again.fingerprint() == Pipeline.from_yaml(cfg).fingerprint() == manifest["pipeline_fingerprint"]


def test_family_and_tune_knobs_fail_at_validate(tmp_path: Path) -> None:
    """A misspelt family or knob stops `closedloop validate` (exit 2, the field, the value, a did-you-mean),
    as every other plug-in name does, instead of failing after the audit has run."""
    from closedloop.cli import main

    raw = {
        "name": "v",
        "data": {"source": "sklearn", "name": "digits"},
        "stages": [
            {"kind": "task"},
            {"kind": "train", "params": {"family": ["lgbm", "mlpp"], "tune_knobs": ["lrr"]}},
        ],
    }
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        Pipeline.from_yaml(path)
    text = str(err.value)
    assert (
        "train.family: got ['lgbm', 'mlpp']: family: unknown model family 'mlpp'. Did you mean 'mlp'?" in text
    )
    assert "train.tune_knobs: got ['lrr']: unknown knob(s) 'lrr' (did you mean 'lr'?)" in text
    assert main(["validate", str(path)]) == 2
    raw["stages"][1]["params"] = {"family": "closedloop.models.registry:no_such_builder"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="has no model family class 'no_such_builder'"):
        Pipeline.from_yaml(path)


def test_a_family_declares_its_ladder_with_itself() -> None:
    """One place: the built-in families register their ladders; the train stage reads them there."""
    from closedloop.models.registry import family_ladder
    from closedloop.stages.train import TrainModel

    assert family_ladder("mlp")[0] == {"width": 32, "depth": 1}
    assert [r["num_leaves"] for r in family_ladder("lgbm")] == [4, 16, 64, 256]
    assert family_ladder("closedloop.models.registry:build_network") == [{}]  # no ladder: one rung
    quick = TrainModel(preset="quick", family="small_cnn")
    assert quick.ladder("small_cnn") == family_ladder("small_cnn")[: PRESETS["quick"]["ladder_size"]]
    assert TrainModel(family="mlp", ladder=[{"width": 4}]).ladder("mlp") == [{"width": 4}]
