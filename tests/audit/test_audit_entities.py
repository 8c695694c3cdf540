"""repeated_entities: a column naming an entity observed in several rows (a man in a panel), whose rows share
their label, is a warning that says how many test rows share an entity with train and how to declare it; a
measurement whose values repeat (an age) is not, nor is an id whose rows do not share their label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.audit.test_audit_stage import run

from closedloop.core.errors import ConfigError
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.stages.audit import AuditDataset


def _panel(people: int = 150, years: int = 6, sticky: bool = True, seed: int = 0) -> DatasetBundle:
    """People observed over years; with ``sticky`` each person's outcome mostly stays theirs. ``age`` is a
    measurement with repeated values and a smooth effect on the outcome."""
    rng = np.random.default_rng(seed)
    person = np.repeat(np.arange(people), years)
    age = rng.integers(20, 60, people)[person] + np.tile(np.arange(years), people)
    own = rng.random(people) < 0.3
    p = np.where(own[person], 0.9, 0.1) if sticky else np.full(len(person), 0.3)
    p = np.clip(p + 0.004 * (age - 40), 0, 1)
    y = (rng.random(len(person)) < p).astype(int)
    X = pd.DataFrame({"person": 1000 + person, "age": age, "hours": rng.normal(40, 5, len(person)).round(1)})
    order = rng.permutation(len(y))  # a row split: each person in every split
    cut = [int(0.7 * len(y)), int(0.85 * len(y))]
    parts = np.split(order, cut)
    meta = DatasetMeta(
        name="panel",
        source="synthetic",
        kind="table",
        label_names=["no", "yes"],
        feature_names=list(X.columns),
    )
    splits = {
        k: Split(X.iloc[r].reset_index(drop=True), y[r])
        for k, r in zip(("train", "val", "test"), parts, strict=True)
    }
    return DatasetBundle(meta=meta, splits=splits)


def _findings(out) -> list[dict]:  # type: ignore[no-untyped-def]
    return [f for f in out.audit.findings if f["check"] == "repeated_entities"]


def test_a_person_id_whose_rows_share_the_label_is_a_warning_naming_the_fix(tmp_path: Path) -> None:
    _, out = run(_panel(), tmp_path, checks=["repeated_entities"], stop_on=[])
    warnings = [f for f in _findings(out) if f["severity"] == "warning"]
    assert [f["evidence"]["column"] for f in warnings] == ["person"]  # not age, a measurement with repeats
    f = warnings[0]
    assert (
        "data: {group: person}" in f["message"] and f["evidence"]["score"] > f["evidence"]["null_best_score"]
    )
    n_test = len(_panel().splits["test"].y)
    assert f["evidence"]["test_rows_sharing"] > 0.9 * n_test and f"of the {n_test} test rows" in f["message"]
    m = out.audit.results["repeated_entities"]["metrics"]
    assert m["entity_columns"] == ["person"] and m["top_column"] == "person"
    assert m["test_share_sharing"]["person"] == round(f["evidence"]["test_rows_sharing"] / n_test, 4)


def test_an_id_whose_rows_do_not_share_the_label_is_not_reported(tmp_path: Path) -> None:
    _, out = run(_panel(sticky=False), tmp_path, checks=["repeated_entities"], stop_on=[])
    fs = _findings(out)
    assert not [f for f in fs if f["severity"] == "warning"]
    assert fs[0]["message"].startswith("no column names an entity")


def test_the_check_runs_by_default_on_tables_and_its_bar_is_validated(tmp_path: Path) -> None:
    from closedloop.stages.audit.stage import DEFAULT_CHECKS

    assert "repeated_entities" in DEFAULT_CHECKS
    with pytest.raises(ConfigError, match="min_excess"):
        AuditDataset(checks=[{"name": "repeated_entities", "params": {"min_excess": 0}}])


def test_entities_seen_again_under_a_time_split_are_the_production_case(tmp_path: Path) -> None:
    data = _panel()
    data.meta.split_origin = "time_ordered"
    _, out = run(data, tmp_path, checks=["repeated_entities"], stop_on=[])
    fs = _findings(out)
    assert [f["severity"] for f in fs] == ["info"] and "in time order" in fs[0]["message"]
    assert not out.audit.results["repeated_entities"]["metrics"].get("test_share_sharing")
