"""Outliers judged on the scale where each column's bulk is symmetric: a heavy right tail is the
column's shape (no warning), a sentinel or unit mistake planted in it still is (a warning)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.audit.test_audit_stage import run

from closedloop.core.errors import ConfigError
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.stages.audit import AuditDataset
from closedloop.stages.audit.quality import bowley_skew, column_scale


def _bundle(X: pd.DataFrame, y: np.ndarray, categorical: tuple[str, ...] = ()) -> DatasetBundle:
    """60 / 20 / 20 % of the rows, in order, as train / val / test."""
    n = len(y)
    a, b = int(n * 0.6), int(n * 0.8)
    meta = DatasetMeta(
        name="t",
        source="synthetic",
        kind="table",
        label_names=["0", "1"],
        feature_names=list(X.columns),
        categorical_features=list(categorical),
    )
    parts = {"train": slice(0, a), "val": slice(a, b), "test": slice(b, n)}
    return DatasetBundle(
        meta=meta, splits={k: Split(X.iloc[s].reset_index(drop=True), y[s]) for k, s in parts.items()}
    )


def _table(price: np.ndarray, seed: int = 0) -> DatasetBundle:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"price": price, "age": rng.normal(50, 10, len(price))})
    return _bundle(X, (X.age > 50).astype(int).to_numpy())


def _warned(out) -> set[str]:  # type: ignore[no-untyped-def]
    return {
        f["evidence"]["column"]
        for f in out.audit.findings
        if f["check"] == "feature_quality" and f["severity"] == "warning" and "outliers" in f["message"]
    }


def test_a_heavy_tail_is_shape_not_outliers_but_a_sentinel_in_it_is(tmp_path: Path) -> None:
    price = np.random.default_rng(1).lognormal(10, 1.0, 1000)
    clean = _table(price)
    _, out = run(clean, tmp_path / "a", checks=["feature_quality"])
    assert _warned(out) == set()
    assert out.audit.results["feature_quality"]["metrics"]["n_skewed_columns"] == 1
    _, out = run(clean, tmp_path / "b", checks=[{"name": "feature_quality", "params": {"skew_rule": False}}])
    assert _warned(out) == {"price"}  # the raw-scale rule (before) warns on the tail itself
    dirty = price.copy()
    dirty[::40] = (
        999_999_999.0  # 2.5% of rows: a sentinel code (a 1-sd-log-normal column needs more than 450x its median)
    )
    _, out = run(_table(dirty), tmp_path / "c", checks=["feature_quality"])
    assert _warned(out) == {"price"}
    f = next(f for f in out.audit.findings if "outliers" in f["message"])
    assert "asinh scale" in f["message"] and f["evidence"]["outlier_share"] > 0.02
    age = clean.train.X.age.to_numpy()
    assert column_scale(age)[1] == "raw" and abs(bowley_skew(age)) < 0.2


def test_bad_skew_rule_value_names_the_field() -> None:
    with pytest.raises(ConfigError, match="skew_rule"):
        AuditDataset(checks=[{"name": "feature_quality", "params": {"skew_rule": "sometimes"}}])


def test_identifier_timestamp_and_free_text_columns_are_warned_real_columns_are_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 300
    X = pd.DataFrame(
        {
            "patient_id": rng.permutation(np.arange(5000, 5000 + n)),  # a running number
            "visit_date": pd.date_range("2024-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
            "note": [f"reports {w} on day {i}" for i, w in enumerate(rng.choice(["pain", "cough"], n))],
            "age": rng.normal(50, 10, n).round(),  # integers with repeats
            "income": rng.choice(
                np.arange(20_000, 200_000), n, replace=False
            ),  # unique, but sparse in its range
            "bp": rng.normal(120, 15, n),  # unique floats: a measurement
            "ward": rng.choice(["a", "b", "c"], n),
        }
    )
    bundle = _bundle(X, (X.bp > 120).astype(int).to_numpy(), ("visit_date", "note", "ward"))
    stage, out = run(bundle, tmp_path, checks=["feature_quality"])
    assert stage.summarize(out)["n_identifier_columns"] == 3  # summary.json
    warned = {
        f["evidence"]["column"]: f["message"]
        for f in out.audit.findings
        if f["severity"] == "warning" and "looks like an identifier" in f["message"]
    }
    assert set(warned) == {"patient_id", "visit_date", "note"}
    assert "a running number" in warned["patient_id"] and "parse as dates" in warned["visit_date"]
    assert "parse as dates" not in warned["note"]
    assert out.audit.results["feature_quality"]["metrics"]["n_identifier_columns"] == 3
    off = {"name": "feature_quality", "params": {"identifier_rule": False}}  # YAML's way to turn it off
    _, out = run(bundle, tmp_path / "off", checks=[off])
    assert out.audit.results["feature_quality"]["metrics"]["n_identifier_columns"] == 0
