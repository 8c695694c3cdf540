"""How many rungs of a tree family's registered ladder the capacity ladder climbs (``train.tree_ladder_size``,
issue #25, session 16: the quick preset's trees climb 4, 16, 64 leaves; networks keep two rungs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightgbm")

from closedloop.core.config import apply_overrides  # noqa: E402
from closedloop.core.errors import ConfigError  # noqa: E402
from closedloop.core.pipeline import Pipeline  # noqa: E402
from closedloop.models.registry import family_ladder  # noqa: E402
from closedloop.stages.train import TrainModel  # noqa: E402


def _raw(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "p",
        "data": {"source": "sklearn", "name": "breast_cancer"},
        "stages": [{"kind": "task"}, {"kind": "train", "params": params}],
    }


def test_the_quick_preset_climbs_three_tree_rungs_and_two_network_rungs() -> None:
    quick = TrainModel(preset="quick", family=["lgbm", "mlp"])
    assert [r["num_leaves"] for r in quick.ladder("lgbm")] == [4, 16, 64]  # the declared rule's choice
    assert quick.ladder("mlp") == family_ladder("mlp")[:2]  # networks: unchanged
    assert [len(TrainModel(preset=p, family="lgbm").ladder("lgbm")) for p in ("default", "thorough")] == [
        3,
        4,
    ]


def test_tree_ladder_size_from_python_yaml_and_the_command_line() -> None:
    assert [
        r["num_leaves"] for r in TrainModel(preset="quick", family="lgbm", tree_ladder_size=2).ladder("lgbm")
    ] == [
        4,
        16,
    ]
    raw = apply_overrides(_raw({"preset": "quick", "family": "lgbm"}), ["train.tree_ladder_size=4"])
    stage = Pipeline.from_dict(raw).stages[-1]
    assert stage.config.tree_ladder_size == 4 and len(stage.ladder("lgbm")) == 4
    # more rungs than the family registers: all of them
    assert len(TrainModel(family="lgbm", tree_ladder_size=9).ladder("lgbm")) == len(family_ladder("lgbm"))
    # a given ladder wins
    assert TrainModel(family="lgbm", tree_ladder_size=4, ladder=[{"num_leaves": 8}]).ladder("lgbm") == [
        {"num_leaves": 8}
    ]


def test_a_bad_tree_ladder_size_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"train\.tree_ladder_size.*0"):
        Pipeline.from_dict(_raw({"tree_ladder_size": 0}))


def test_the_tree_ladder_is_in_the_decision_log_summary_and_report(tmp_path: Path) -> None:
    from .test_train_trees import task_train_export, tree_table

    train = {"preset": "quick", "family": "lgbm", "budget_minutes": 30, "n_trials": 1, "ladder_epochs": 2}
    train |= {"max_epochs": 2, "n_bootstrap": 200}
    run = task_train_export(tree_table(300), train, tmp_path, "ladder_size")
    s = run.summary["stages"]["train"]
    note = [d for d in s["decisions"] if "tree_ladder_size" in (d.get("evidence") or {})]
    assert len(note) == 1 and note[0]["evidence"]["tree_ladder_size"] == 3, note
    text = note[0]["decision"]
    assert text == (
        "tree ladder: 3 of lgbm's 4 registered rungs (num_leaves=4; num_leaves=16; num_leaves=64; "
        "tree_ladder_size 3, preset quick)"
    )
    assert "tree ladder: 3 of lgbm's 4 registered rungs" in (run.run_dir / "report.html").read_text()
