"""Config loading: every user error names the file, the field, the value and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

import toy_pkg
from closedloop import Pipeline
from closedloop.core.errors import ConfigError


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nstages: [\n  - kind: task\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: malformed YAML at line \d+"):
        Pipeline.from_yaml(p)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        Pipeline.from_yaml(tmp_path / "nope.yaml")


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    p = toy_pkg.write_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError) as err:
        Pipeline.from_yaml(p, overrides=["sum.scal=2"])
    msg = str(err.value)
    assert "c.yaml" in msg and "sum.scal" in msg and "did you mean 'scale'" in msg


def test_wrong_type_names_path_value_and_expectation(tmp_path: Path) -> None:
    p = toy_pkg.write_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError) as err:
        Pipeline.from_yaml(p, overrides=["sum.scale=lots"])
    msg = str(err.value)
    assert "sum.scale" in msg and "'lots'" in msg and "number" in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nseeed: 3\ndata: {source: sklearn}\nstages: []\n")
    with pytest.raises(ConfigError, match="did you mean 'seed'"):
        Pipeline.from_yaml(p)


def test_unknown_stage_kind_lists_known(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ndata: {source: 'toy_pkg:ToySource'}\nstages:\n  - kind: tsak\n")
    with pytest.raises(ConfigError, match="unknown stage 'tsak'. Did you mean 'task'"):
        Pipeline.from_yaml(p)


def test_unknown_data_source_option(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ndata: {source: 'toy_pkg:ToySource', nn: 3}\nstages: []\n")
    with pytest.raises(ConfigError, match=r"data\.nn.*did you mean 'n'"):
        Pipeline.from_yaml(p)


def test_override_is_typed_by_schema(tmp_path: Path) -> None:
    p = toy_pkg.write_config(tmp_path / "c.yaml")
    pipe = Pipeline.from_yaml(p, overrides=["sum.scale=3", "seed=7", "data.n=10"])
    assert pipe.stages[1].config.scale == 3.0 and pipe.seed == 7
    assert pipe.stages[0].source().config.n == 10


def test_override_of_unknown_stage(tmp_path: Path) -> None:
    p = toy_pkg.write_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="'dubble' is neither a stage.*did you mean 'double'"):
        Pipeline.from_yaml(p, overrides=["dubble.x=1"])


def test_override_without_equals(tmp_path: Path) -> None:
    p = toy_pkg.write_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        Pipeline.from_yaml(p, overrides=["sum.scale"])


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    import yaml

    p = toy_pkg.write_config(tmp_path / "c.yaml")
    pipe = Pipeline.from_yaml(p)
    resolved = pipe.resolved_config()
    assert resolved["stages"][0]["kind"] == "toy_pkg:SumPixels"
    assert resolved["stages"][0]["params"] == {"scale": 1.0}
    again = Pipeline.from_dict(yaml.safe_load(yaml.safe_dump(resolved)))
    assert again.fingerprint() == pipe.fingerprint()


def test_binary_config_file_is_a_clear_error(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xc9\xff")
    with pytest.raises(ConfigError, match=r"model\.yaml: not a text file \(byte 0x89 at offset 0"):
        Pipeline.from_yaml(path)


def test_directory_as_config_says_so(tmp_path):
    with pytest.raises(ConfigError, match="is a directory; expected a YAML config file"):
        Pipeline.from_yaml(tmp_path)
