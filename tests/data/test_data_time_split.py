"""A table split in time order (``data.time_column``): test is the latest rows, validation the rows just before,
rows of one time in one split; bad time columns and conflicting split settings are refused by name."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from closedloop.core.errors import DataError
from closedloop.data.sources.tabular import TabularSource


def _daily(n_days: int = 60, per_day: int = 25, seed: int = 0) -> pd.DataFrame:
    """Rows on dates written as text, shuffled; the outcome drifts with the day."""
    rng = np.random.default_rng(seed)
    day = np.repeat(np.arange(n_days), per_day)
    x = rng.normal(size=len(day))
    y = (x + 0.03 * day + rng.normal(0, 1, len(day)) > 1).astype(int)
    dates = (pd.Timestamp("2026-01-01") + pd.to_timedelta(day, unit="D")).strftime("%Y-%m-%d")
    df = pd.DataFrame({"date": dates, "x": x, "shop": rng.integers(0, 5, len(day)), "sold": y})
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)


def test_test_is_the_latest_rows_and_a_day_stays_in_one_split(tmp_path) -> None:
    _daily().to_csv(tmp_path / "d.csv", index=False)
    b = TabularSource(path=str(tmp_path / "d.csv"), target="sold", time_column="date", drop=["date"]).load(0)
    assert b.meta.split_origin == "time_ordered" and "date" not in b.splits["train"].X.columns
    span = b.meta.provenance["time_split"]
    assert span["train"][1] < span["val"][0] <= span["val"][1] < span["test"][0] == "2026-02-21"
    sizes = {k: len(s) for k, s in b.splits.items()}
    assert sizes == {"train": 1050, "val": 225, "test": 225}  # 42, 9 and 9 whole days of 25 rows


@pytest.mark.parametrize(
    ("change", "params", "message"),
    [
        ({}, {"time_column": "when"}, r"time_column column\(s\) \[.when.\] not found"),
        (
            {"date": "soon"},
            {"time_column": "date"},
            r"time_column 'date': values \['soon'\] are neither numbers nor dates",
        ),
        (
            {"date": None},
            {"time_column": "date"},
            r"time_column 'date': no time in 1500 row\(s\) \(rows 0, 1, 2, 3, 4\)",
        ),
        (
            {"date": "2026-01-01"},
            {"time_column": "date"},
            r"1 distinct time\(s\) cannot fill train, val and test",
        ),
        (
            {},
            {"time_column": "date", "group": "shop"},
            r"time_column 'date' and group 'shop' both say how to split",
        ),
        ({}, {"time_column": "date", "split_column": "shop"}, r"time_column 'date' and split_column 'shop'"),
    ],
)
def test_bad_time_columns_are_refused_by_name(tmp_path, change, params, message) -> None:
    _daily().assign(**change).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=message):
        TabularSource(path=str(tmp_path / "d.csv"), target="sold", **params).load(0)


def test_a_time_split_from_yaml_is_judged_on_a_hold_out_of_later_rows(tmp_path) -> None:
    """Through the pipeline: the task keeps the later validation rows as the judge (no k-fold mixing of
    periods), and the audit's provenance line says the splits are time-ordered."""
    from closedloop.cli import main

    _daily().to_csv(tmp_path / "d.csv", index=False)
    config = {
        "name": "daily",
        "seed": 0,
        "data": {
            "source": "tabular",
            "path": str(tmp_path / "d.csv"),
            "target": "sold",
            "time_column": "date",
            "drop": ["date"],
        },
        "stages": [
            {"kind": "task"},
            {"kind": "audit", "params": {"checks": ["provenance"]}},
            {
                "kind": "train",
                "params": {"preset": "quick", "family": "lgbm", "n_trials": 2, "n_bootstrap": 100},
            },
        ],
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stages"]["task"]["validation_protocol"] == "holdout"
    line = next(f["message"] for f in summary["stages"]["audit"]["findings"] if f["check"] == "provenance")
    assert (
        "(time_ordered splits by date: train 2026-01-01-2026-02-11, val 2026-02-12-2026-02-20, test " in line
    )


def test_added_rows_from_the_test_period_are_a_warning_of_the_retrained_data(tmp_path) -> None:
    """``retrain --add-labeled`` on a time-ordered table: rows from the test period or later make test stop being
    the retrained model's future; the data's warnings (reported by the audit) say so and what to judge on."""
    from closedloop.stages.monitor.retrain import AugmentedSource

    df = _daily().assign(day=lambda d: pd.to_datetime(d["date"]).dt.dayofyear)
    df.to_csv(tmp_path / "d.csv", index=False)
    base = {
        "source": "tabular",
        "path": str(tmp_path / "d.csv"),
        "target": "sold",
        "time_column": "day",
        "drop": ["date"],
    }
    late = df[df.day >= 55].head(4)
    late.to_csv(tmp_path / "late.csv", index=False)
    out = AugmentedSource(base=base, labeled=str(tmp_path / "late.csv"), label_column="sold").load(0)
    assert any(
        "4 of 4 added row(s) are from the test period or later (day >= 52)" in w for w in out.meta.warnings
    )
    df[df.day < 40].head(4).to_csv(tmp_path / "early.csv", index=False)
    out = AugmentedSource(base=base, labeled=str(tmp_path / "early.csv"), label_column="sold").load(0)
    assert not any("test period" in w for w in out.meta.warnings)


def test_split_shift_under_a_time_split_judges_the_features_other_than_time(tmp_path) -> None:
    """The time column tells the periods apart by construction; the check asks which other features moved."""
    from tests.audit.test_audit_stage import run

    df = _daily().assign(day=lambda d: pd.to_datetime(d["date"]).dt.dayofyear)
    df.to_csv(tmp_path / "d.csv", index=False)
    b = TabularSource(path=str(tmp_path / "d.csv"), target="sold", time_column="day", drop=["date"]).load(0)
    _, out = run(b, tmp_path / "audit", checks=["split_shift"], stop_on=[])
    metrics = out.audit.results["split_shift"]["metrics"]
    assert metrics["left_out"] == "day" and metrics["adversarial_auc_test"] < 0.7  # x and shop do not drift


def test_a_small_time_split_table_is_judged_on_its_later_rows_not_folds(tmp_path) -> None:
    """Below 1,000 rows a table gets repeated k-fold; split in time order, folds would mix the periods."""
    from closedloop.stages.task import DefineTaskConfig, build_task_spec

    _daily(n_days=30, per_day=20).to_csv(tmp_path / "d.csv", index=False)
    b = TabularSource(path=str(tmp_path / "d.csv"), target="sold", time_column="date", drop=["date"]).load(0)
    task = build_task_spec(DefineTaskConfig(), b)
    assert task.validation.protocol == "holdout"
    assert "split in time order" in task.inferred["validation.protocol"]
