"""A table whose rows come in groups (a patient's visits, a classroom's pupils): with ``group``, no group has
rows in two splits, in two cross-validation folds, or both held out and fitted on, and the column is no feature.
Without it a model that memorizes groups scores on test rows of groups it trained on."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from closedloop.core.errors import DataError
from closedloop.data.bundle import DatasetBundle
from closedloop.data.sources.tabular import TabularSource
from common_data import binary_holdout_plan


def classrooms(n_groups: int = 60, size: int = 12, seed: int = 0) -> pd.DataFrame:
    """Each classroom has one type (the label) and its own look in the features; the features say nothing
    about the type across classrooms, so only memorizing a classroom predicts it."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 2, n_groups)
    centre = rng.normal(0, 3, (n_groups, 2))
    g = np.repeat(np.arange(n_groups), size)
    X = centre[g] + rng.normal(0, 0.2, (len(g), 2))
    return pd.DataFrame({"room": [f"r{i}" for i in g], "a": X[:, 0], "b": X[:, 1], "small": kind[g]})


def _rooms(split) -> set:  # type: ignore[no-untyped-def]
    return set(np.asarray(split.groups).tolist())


def test_each_group_lands_in_one_split_and_is_no_feature(tmp_path) -> None:
    path = tmp_path / "rooms.csv"
    classrooms().to_csv(path, index=False)
    data = TabularSource(path=str(path), target="small", group="room").load(seed=0)
    tr, va, te = (data.splits[s] for s in ("train", "val", "test"))
    assert "room" not in tr.X.columns and data.meta.feature_names == ["a", "b"]
    assert not (_rooms(tr) & _rooms(va) or _rooms(tr) & _rooms(te) or _rooms(va) & _rooms(te))
    assert len(_rooms(tr)) + len(_rooms(va)) + len(_rooms(te)) == 60
    assert 0.1 < len(te) / 720 < 0.2 and 0.1 < len(va) / 720 < 0.2
    assert data.meta.provenance["group"] == {"column": "room", "groups": 60, "rows_per_group_max": 12}
    # saved and read back with the groups
    data.save(tmp_path / "bundle")
    again = DatasetBundle.load(tmp_path / "bundle")
    assert (
        np.array_equal(again.splits["train"].groups, tr.groups) and "__group__" not in again.train.X.columns
    )


def test_bad_group_columns_are_refused_with_the_file_and_rows(tmp_path) -> None:
    df = classrooms(n_groups=3, size=4)
    path = tmp_path / "few.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"few\.csv: group column 'room': 3 group\(s\) cannot fill"):
        TabularSource(path=str(path), target="small", group="room").load(seed=0)
    df.loc[[2, 5], "room"] = None
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"group column 'room' is missing in 2 row\(s\) \(rows 2, 5\)"):
        TabularSource(path=str(path), target="small", group="room").load(seed=0)
    with pytest.raises(DataError, match=r"group 'nope' .*not found|'nope'"):
        TabularSource(path=str(path), target="small", group="nope").load(seed=0)
    mixed = classrooms(n_groups=6, size=3).assign(part=["train", "val", "test"] * 6)
    mixed.to_csv(path, index=False)
    with pytest.raises(
        DataError, match=r"group 'r\d' of column 'room' has rows in both (train|val) and (val|test)"
    ):
        TabularSource(path=str(path), target="small", group="room", split_column="part").load(seed=0)


def test_folds_and_held_out_rows_keep_groups_whole() -> None:
    from closedloop.stages.train.phases.cross_validate import cv_splits

    df = classrooms()
    g = df["room"].to_numpy()
    y = df["small"].to_numpy()
    for train_idx, held in cv_splits(y, "binary", 5, 2, seed=0, groups=g)[1]:
        assert not set(g[train_idx]) & set(g[held])
    plan = binary_holdout_plan(df[["a", "b"]], y, fraction=0.5, min_size=50, n_train=0, groups=g)
    held = np.asarray(plan.indices)
    fitted = np.setdiff1d(np.arange(len(y)), held)
    assert not set(g[held]) & set(g[fitted]) and "whole groups" in plan.note
    assert 300 <= len(held) < 400


def test_a_model_that_memorizes_groups_is_judged_on_groups_it_never_saw(tmp_path) -> None:
    """Through the pipeline from YAML: without ``group`` the test split shares classrooms with train and the
    trees score far above chance; with it, test classrooms are new, and the score falls to what the features
    say across classrooms (nothing)."""
    from closedloop.cli import main

    classrooms(n_groups=80, size=10).to_csv(tmp_path / "rooms.csv", index=False)
    scores = {}
    for grouped in (False, True):
        data = {"source": "tabular", "path": str(tmp_path / "rooms.csv"), "target": "small"}
        data.update({"group": "room"} if grouped else {"drop": ["room"]})
        config = {
            "name": f"rooms_{grouped}",
            "seed": 0,
            "data": data,
            "stages": [
                {"kind": "task"},
                {"kind": "baseline", "params": {"n_resamples": 100}},
                {
                    "kind": "train",
                    "params": {"preset": "quick", "family": "lgbm", "n_trials": 3, "n_bootstrap": 100},
                },
                {"kind": "monitor", "params": {"calibration_windows": 50}},
            ],
        }
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
        out = tmp_path / f"run_{grouped}"
        assert main(["run", str(tmp_path / "c.yaml"), "--out", str(out)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        scores[grouped] = summary["stages"]["train"]["test"]["auc"]["value"]
        decisions = " ".join(d["decision"] for d in summary["stages"]["train"]["decisions"])
        assert ("whole groups" in decisions) == grouped
        # intervals and the test gate resample whole classrooms (rows of one are not independent evidence)
        assert ("intervals on validation and test resample whole groups" in decisions) == grouped
        gate = summary["stages"]["train"]["beats_baseline"]
        said = [
            d for d in summary["stages"]["train"]["decisions"] if d["decision"].startswith("intervals on")
        ]
        test_rooms = said[0]["evidence"]["test_groups"] if grouped else None
        assert gate["n_groups"] == test_rooms and (not grouped or 5 <= test_rooms <= 20)
        # the monitor's false-alarm guarantee assumes independent rows: a grouped table's says it is not covered
        guarantee = summary["stages"]["monitor"]["reference"]["guarantee"]
        assert ("NOT COVERED here" in guarantee) == grouped
    assert scores[False] > 0.8 and scores[True] < 0.7, scores


def test_the_label_issue_checks_folds_keep_groups_whole(tmp_path) -> None:
    """The audit's out-of-fold probabilities (confident learning) come from models that saw none of a row's
    group; without groups a row's classroom-mates in other folds would vouch for its label."""
    from closedloop.core.stage import RunContext
    from closedloop.stages.audit.base import AuditContext
    from closedloop.stages.audit.label_issues import LabelIssues

    path = tmp_path / "rooms.csv"
    classrooms().to_csv(path, index=False)
    found = {}
    for grouped in (False, True):
        src = TabularSource(
            path=str(path), target="small", **({"group": "room"} if grouped else {"drop": ["room"]})
        )
        data = src.load(seed=0)
        ctx = AuditContext(RunContext(stage_name="audit", stage_dir=tmp_path / str(grouped), seed=0), data)
        ctx.current_check = "label_issues"
        res = LabelIssues({"models": ["hgb"]}).run(data, None, ctx)
        notes = " ".join(f.message for f in res.findings)
        assert ("out-of-fold folds of whole groups" in notes) == grouped
        found[grouped] = res.metrics["oof_accuracy"]
    # memorized classrooms make the labels look right; a new classroom's label is a guess
    assert found[False] > 0.8 and found[True] < 0.65, found


def test_added_labeled_rows_keep_their_group_and_a_held_out_group_is_refused(tmp_path) -> None:
    """``retrain --add-labeled`` on a grouped table: a new row of a train classroom keeps the classroom's id (the
    folds keep it with its classroom), a file without the column adds each row as its own group, and a row of a
    classroom that validation or test holds is refused with its id."""
    from closedloop.stages.monitor.retrain import AugmentedSource

    df = classrooms(n_groups=40, size=8)
    df.to_csv(tmp_path / "rooms.csv", index=False)
    base = {"source": "tabular", "path": str(tmp_path / "rooms.csv"), "target": "small", "group": "room"}
    splits = TabularSource(**{k: v for k, v in base.items() if k != "source"}).load(0).splits
    train_room, test_room = sorted(_rooms(splits["train"]))[0], sorted(_rooms(splits["test"]))[0]
    new = df[df.room == train_room].head(2).assign(a=0.0)
    new.to_csv(tmp_path / "new.csv", index=False)
    out = AugmentedSource(base=base, labeled=str(tmp_path / "new.csv"), label_column="small").load(0)
    assert out.splits["train"].groups[-2:].tolist() == [train_room, train_room]
    new.drop(columns="room").to_csv(tmp_path / "anonymous.csv", index=False)
    out = AugmentedSource(base=base, labeled=str(tmp_path / "anonymous.csv"), label_column="small").load(0)
    assert out.splits["train"].groups[-2:].tolist() == ["added-0", "added-1"]
    df[df.room == test_room].head(3).to_csv(tmp_path / "leak.csv", index=False)
    with pytest.raises(
        DataError,
        match=rf"leak.csv: 3 row\(s\) belong to group\(s\) of column 'room'.*'{test_room}' \(test\)",
    ):
        AugmentedSource(base=base, labeled=str(tmp_path / "leak.csv"), label_column="small").load(0)


def test_a_split_of_one_group_falls_back_to_rows_and_says_so(tmp_path) -> None:
    """Seven classrooms: each split of the plan can hold a single one, where no resample of groups can vary.
    The run completes; its intervals resample rows there, and the decision log says they are too narrow."""
    from closedloop.cli import main

    rng = np.random.default_rng(1)
    rooms = np.repeat(np.arange(7), 40)
    a = rng.normal(size=len(rooms))
    df = pd.DataFrame({"room": [f"r{i}" for i in rooms], "a": a, "b": rng.normal(size=len(rooms))})
    df["small"] = (a + rng.normal(0, 0.5, len(rooms)) > 0).astype(int)  # both classes in every room
    df.to_csv(tmp_path / "rooms.csv", index=False)
    config = {
        "name": "seven_rooms",
        "seed": 0,
        "data": {
            "source": "tabular",
            "path": str(tmp_path / "rooms.csv"),
            "target": "small",
            "group": "room",
        },
        "stages": [
            {"kind": "task"},
            {"kind": "baseline", "params": {"n_resamples": 100}},
            {
                "kind": "train",
                "params": {"preset": "quick", "family": "lgbm", "n_trials": 2, "n_bootstrap": 100},
            },
        ],
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    decisions = " ".join(d["decision"] for d in summary["stages"]["train"]["decisions"])
    assert "holds a single group of data.group: its intervals resample rows" in decisions
    assert summary["stages"]["train"]["beats_baseline"]["n_groups"] is None
