"""Target leakage on a table whose rows come in groups (``data.group``): the check's folds hold out whole
groups and its null shuffles labels between groups. Classrooms share a class type; a column that names the
classroom (a room number) predicts every pupil's type once a pupil of the classroom was seen, and a random
classroom-level column meets as many chances as there are classrooms, not pupils."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tests.audit.test_audit_stage import run

from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.stages.audit.leakage import shuffle_by_group, single_feature_scores


def _classrooms(
    n_rooms: int, pupils: int, seed: int, columns: int = 0, copy: bool = False, grouped: bool = True
):  # type: ignore[no-untyped-def]
    """Rooms with a class type each (every pupil of a room has it); ``room`` numbers the room, ``columns``
    random room-level columns, ``score`` a pupil's own noise; ``copy`` adds the label itself."""
    rng = np.random.default_rng(seed)
    room = np.repeat(np.arange(n_rooms), pupils)
    y = rng.permutation(np.arange(n_rooms) % 2)[room]
    X = pd.DataFrame({"room": (100 + room * 7).astype(float), "score": rng.normal(size=len(y))})
    for j in range(columns):
        X[f"room_level_{j}"] = rng.normal(size=n_rooms)[room]
    if copy:
        X["outcome_copy"] = y.astype(float)
    meta = DatasetMeta(
        name="rooms", source="synthetic", kind="table", label_names=["0", "1"], feature_names=list(X.columns)
    )
    small = {k: Split(X.iloc[:pupils].reset_index(drop=True), y[:pupils]) for k in ("val", "test")}
    train = Split(X, y, groups=room.astype(str) if grouped else None)
    return DatasetBundle(meta=meta, splits={"train": train, **small})


def _findings(out, severity: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return [f for f in out.audit.findings if f["check"] == "target_leakage" and f["severity"] == severity]


def test_a_column_that_names_the_group_is_a_leak_across_rows_but_not_across_groups(tmp_path: Path) -> None:
    _, out = run(
        _classrooms(12, 40, 0, grouped=False), tmp_path / "plain", checks=["target_leakage"], stop_on=[]
    )
    assert [f["evidence"]["feature"] for f in _findings(out, "error")] == ["room"]  # memorized rooms
    _, out = run(_classrooms(12, 40, 0), tmp_path / "grouped", checks=["target_leakage"], stop_on=[])
    assert not _findings(out, "error")
    metrics = out.audit.results["target_leakage"]["metrics"]
    assert metrics["groups"] == 12 and metrics["max_single_feature_score"] < 0.9
    said = _findings(out, "info")
    assert said and all("folds of whole groups: 12 groups" in f["message"] for f in said)


def test_a_copied_outcome_is_still_an_error_with_groups(tmp_path: Path) -> None:
    _, out = run(_classrooms(12, 40, 1, copy=True), tmp_path, checks=["target_leakage"], stop_on=[])
    assert [f["evidence"]["feature"] for f in _findings(out, "error")] == ["outcome_copy"]


def test_a_chance_room_level_column_is_judged_against_a_null_that_shuffles_whole_groups(
    tmp_path: Path,
) -> None:
    """24 rooms, 80 random room-level columns: one of them predicts unseen rooms' types at AUC >= 0.9 by
    chance. Row-shuffled labels lose the rooms' clustering and top out far lower, which would have made it
    a strong feature beyond chance; shuffling between rooms gives the null that says it is chance."""
    data = _classrooms(24, 25, 0, columns=80)
    train = data.splits["train"]
    F, y, g = train.X.to_numpy(float), train.y, train.groups
    assert single_feature_scores(F, y, True, 16, 3, 0, g).max() >= 0.9  # the premise: a chance column crosses
    rng = np.random.default_rng(0)
    row_null = max(single_feature_scores(F, rng.permutation(y), True, 16, 3, k, g).max() for k in range(5))
    assert row_null < 0.7
    _, out = run(data, tmp_path, checks=["target_leakage"], stop_on=[])
    assert not _findings(out, "error")
    assert not [f for f in _findings(out, "info") if f["message"].startswith("strong single features")]
    within = [f for f in _findings(out, "info") if "within chance at this size" in f["message"]]
    assert within and within[0]["evidence"]["null_best_score"] >= 0.85


def test_shuffle_by_group_keeps_labels_shared_within_a_group_of_unequal_sizes() -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 9, 30)
    g = np.repeat(np.arange(30), sizes)
    y = rng.integers(0, 2, 30)[g]
    for _ in range(5):
        s = shuffle_by_group(y, g, rng)
        assert all(len(set(s[g == k])) == 1 for k in range(30))
    assert any((shuffle_by_group(y, g, rng) != y).any() for _ in range(5))  # it does shuffle
