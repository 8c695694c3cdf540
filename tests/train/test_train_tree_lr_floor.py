"""The tree learning rate's floor (``train: {tree_learning_rate_min: auto | x}``): the tune phase searches
``learning_rate`` from it. ``auto`` keeps 0.01 for every task but multi-label (whose rounds grow one tree
per label); a number applies to every tree task; networks have no such knob."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from closedloop.stages.train import knobs as K
from closedloop.stages.train.config import TrainConfig


def _lr_range(problem_type: str, setting: float | str = "auto", family: str = "lgbm") -> Any:
    c = K.SpaceContext(
        lr=3e-3,
        max_epochs=8,
        problem_type=problem_type,
        input_kind="table",
        family=family,
        tree_lr_min=K.tree_lr_min(setting, problem_type),
    )
    d = K.search_space(c, K.ALL_KNOBS).get("learning_rate")
    return None if d is None else (d.low, d.high)


@pytest.mark.parametrize("problem_type", ["binary", "multiclass", "ordinal", "regression"])
def test_auto_keeps_the_range_of_every_task_but_multi_label(problem_type: str) -> None:
    assert _lr_range(problem_type) == (0.01, 0.3)
    assert _lr_range(problem_type, 0.05) == (0.05, 0.3)


def test_multi_label_trees_search_from_their_own_floor_and_networks_have_none() -> None:
    assert _lr_range("multilabel") == (K.MULTILABEL_TREE_LR_MIN, 0.3)
    assert _lr_range("multilabel", 0.02) == (0.02, 0.3)
    assert _lr_range("multilabel", family="mlp") is None


@pytest.mark.parametrize("bad", [0.0, -0.1, 0.2])
def test_a_floor_outside_the_range_is_refused_naming_the_field(bad: float) -> None:
    with pytest.raises(ValidationError, match=r"tree_learning_rate_min[\s\S]*outside \(0, 0.1\]"):
        TrainConfig(tree_learning_rate_min=bad)
    with pytest.raises(ValidationError, match="tree_learning_rate_min"):
        TrainConfig(tree_learning_rate_min="fast")  # type: ignore[arg-type]


def test_the_floor_bounds_every_trial_and_reaches_the_decision_log_and_report(tmp_path: Any) -> None:
    """A multi-label tree stage with ``tree_learning_rate_min: 0.08``: every tuned trial's learning rate
    is at least 0.08 (the ledger), the tune phase's recorded space starts there, and the decision log
    (summary.json and the report) says why."""
    pytest.importorskip("lightgbm")
    from .test_train_trees import task_train_export
    from .test_train_trees_multilabel import ML_TRAIN, multilabel_table

    run = task_train_export(
        multilabel_table(), {**ML_TRAIN, "n_trials": 3, "tree_learning_rate_min": 0.08}, tmp_path, "ml"
    )
    train = run.summary["stages"]["train"]
    said = [d["decision"] for d in train["decisions"] if d["phase"] == "setup"]
    assert any(d.startswith("tree learning rate searched from 0.08 (not 0.01") for d in said), said
    assert "tree learning rate searched from 0.08" in (run.run_dir / "report.html").read_text()
    rows = [json.loads(x) for x in (run.run_dir / "validation_ledger.jsonl").read_text().splitlines()]
    lrs = [r["params"]["model"]["learning_rate"] for r in rows if "learning_rate" in r["params"]["model"]]
    assert len(lrs) >= 3 and min(lrs) >= 0.08, lrs  # the first trial (0.1) and the tuned ones
    work = next(run.run_dir.glob("stages/*_train")) / "work"
    space = json.loads((work / "phase_tune.json").read_text())["outcomes"]["tune"]["space"]
    assert space["learning_rate"][1:3] == [0.08, 0.3], space


def test_a_multi_label_tree_stage_searches_from_the_chosen_floor_by_default(tmp_path: Any) -> None:
    """``auto`` on a multi-label table: the tune space starts at ``MULTILABEL_TREE_LR_MIN`` (0.1, the
    declared rule's choice) and the decision log says so."""
    pytest.importorskip("lightgbm")
    from .test_train_trees import task_train_export
    from .test_train_trees_multilabel import ML_TRAIN, multilabel_table

    assert K.MULTILABEL_TREE_LR_MIN == 0.1
    run = task_train_export(multilabel_table(), dict(ML_TRAIN), tmp_path, "ml")
    said = [d["decision"] for d in run.summary["stages"]["train"]["decisions"] if d["phase"] == "setup"]
    assert any(
        d.startswith("tree learning rate searched from 0.1 (not 0.01; tree_learning_rate_min: auto)")
        for d in said
    )
    work = next(run.run_dir.glob("stages/*_train")) / "work"
    space = json.loads((work / "phase_tune.json").read_text())["outcomes"]["tune"]["space"]
    assert space["learning_rate"][1:3] == [0.1, 0.3], space
