"""The tree family's ``num_leaves`` knob: the tune phase searches the leaves per tree in ``[r/2, 2r]`` around
the capacity ladder's rung ``r`` where ``train.tune_knobs`` names it (opt-in), its first trial is the rung itself, and the deployed model has the chosen
trial's leaves (docs/trees_decisions.md, "Leaves searched around the ladder's rung (session 26)")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from closedloop.stages.train.config import TrainConfig
from closedloop.stages.train.knobs import ALL_KNOBS, DEFAULT_KNOBS


def _phase(run: Any, name: str) -> dict[str, Any]:
    work = next(run.run_dir.glob("stages/*_train")) / "work"
    return json.loads((work / f"phase_{name}.json").read_text())["outcomes"][name]


def test_leaves_are_searched_around_the_rung_and_reach_the_deployed_model(tmp_path: Path) -> None:
    pytest.importorskip("lightgbm")
    from .test_train_trees import TREE_TRAIN, task_train_export, tree_table

    knobs = [*DEFAULT_KNOBS, "num_leaves"]  # opt-in: named
    train = {**TREE_TRAIN, "n_trials": 5, "cv_candidates": 1, "tune_knobs": knobs}
    run = task_train_export(tree_table(), train, tmp_path, "leaves")
    rung = _phase(run, "scale_up")["params"]["num_leaves"]
    tune = _phase(run, "tune")
    assert tune["space"]["num_leaves"] == ["int", max(2, rung // 2), rung * 2, True]
    trials = sorted(tune["trials"], key=lambda t: t["trial"])
    assert trials[0]["params"]["num_leaves"] == rung  # the first trial: LightGBM's defaults at the rung
    leaves = [t["params"]["num_leaves"] for t in trials]
    assert all(max(2, rung // 2) <= v <= rung * 2 for v in leaves)
    assert len(set(leaves)) > 1, f"every trial at {leaves}: the knob was not searched"
    model = run.artifact("model")
    assert model.spec.family == "lgbm"
    assert model.spec.params["num_leaves"] == tune["model_params"]["num_leaves"]


def test_the_knob_is_opt_in_and_without_it_every_trial_keeps_the_rungs_leaves(tmp_path: Path) -> None:
    pytest.importorskip("lightgbm")
    from .test_train_trees import TREE_TRAIN, task_train_export, tree_table

    assert "num_leaves" in ALL_KNOBS and "num_leaves" not in TrainConfig().tune_knobs
    train = {**TREE_TRAIN, "n_trials": 3, "cv_candidates": 1}
    run = task_train_export(tree_table(), train, tmp_path, "fixed")
    rung = _phase(run, "scale_up")["params"]["num_leaves"]
    tune = _phase(run, "tune")
    assert "num_leaves" not in tune["space"]
    assert all("num_leaves" not in t["params"] for t in tune["trials"])
    assert tune["model_params"]["num_leaves"] == rung
