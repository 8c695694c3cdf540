"""Target leakage judged against the data's own null: on 30 rows and 300 random columns some column
predicts the labels alone by chance (the fixed 0.98 called it a leak); shuffled labels show it is
within chance. A copied outcome column on the same rows is still an error. (A noisy copy of the label
can fall within chance on 30 rows: the price of the null in power, measured in
benchmarks/bench_audit_leakage_null.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.audit.test_audit_stage import run

from closedloop.core.errors import ConfigError
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.stages.audit import AuditDataset


def _wide(leak: bool) -> DatasetBundle:
    rng = np.random.default_rng(2)
    y = np.arange(30) % 2
    X = pd.DataFrame(rng.normal(size=(30, 300)), columns=[f"f{i}" for i in range(300)])
    if leak:
        X["leak"] = y.astype(float)  # a copied outcome column
    small = {
        k: Split(pd.DataFrame(rng.normal(size=(10, X.shape[1])), columns=X.columns), np.arange(10) % 2)
        for k in ("val", "test")
    }
    meta = DatasetMeta(
        name="wide", source="synthetic", kind="table", label_names=["0", "1"], feature_names=list(X.columns)
    )
    return DatasetBundle(meta=meta, splits={"train": Split(X, y), **small})


def _findings(out) -> list[dict]:  # type: ignore[no-untyped-def]
    return [f for f in out.audit.findings if f["check"] == "target_leakage"]


@pytest.mark.slow  # 300 columns x up to 21 label shuffles: about a minute on the loaded 2-core machine
def test_a_chance_feature_on_few_rows_is_not_a_leak_but_a_real_one_is(tmp_path: Path) -> None:
    fixed = {"name": "target_leakage", "params": {"null_shuffles": 0}}
    _, out = run(_wide(False), tmp_path / "a", checks=[fixed], stop_on=[])
    assert [f for f in _findings(out) if f["severity"] == "error"]  # the constant alone: a false leak
    _, out = run(_wide(False), tmp_path / "b", checks=["target_leakage"], stop_on=[])
    fs = _findings(out)
    assert not [f for f in fs if f["severity"] == "error"]
    within = next(f for f in fs if "within chance at this size" in f["message"])
    assert within["evidence"]["null_best_score"] >= 0.9 and within["evidence"]["n_rows"] == 30
    assert out.audit.results["target_leakage"]["metrics"]["null_best_score"] >= 0.9
    _, out = run(_wide(True), tmp_path / "c", checks=["target_leakage"], stop_on=[])
    errors = [f for f in _findings(out) if f["severity"] == "error"]
    assert [f["evidence"]["feature"] for f in errors] == ["leak"]


def test_bad_null_shuffles_names_the_field() -> None:
    with pytest.raises(ConfigError, match="null_shuffles"):
        AuditDataset(checks=[{"name": "target_leakage", "params": {"null_shuffles": -1}}])
