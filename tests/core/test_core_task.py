"""Task definition: inference rules, declarations checked against the data."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.core.errors import ConfigError, DataError
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.stages.task import DefineTaskConfig, build_task_spec
from common_data import digits_bundle


def _binary(prevalence: float, n: int = 400, source: str = "test") -> DatasetBundle:
    rng = np.random.default_rng(0)
    splits = {}
    for s in ("train", "val", "test"):
        y = (rng.random(n) < prevalence).astype(np.int64)
        y[:2] = [0, 1]
        splits[s] = Split(X=rng.integers(0, 255, (n, 4, 4, 1), dtype=np.uint8), y=y)
    return DatasetBundle(meta=DatasetMeta(name="b", source=source, kind="images"), splits=splits)


def test_multiclass_inferred_and_reported() -> None:
    t = build_task_spec(DefineTaskConfig(), digits_bundle())
    assert t.problem_type == "multiclass" and t.n_outputs == 10
    assert t.primary_metric == "acc" and "auc" in t.metrics
    assert "problem_type" in t.inferred and "primary_metric" in t.inferred


def test_imbalanced_binary_gets_pr_auc() -> None:
    t = build_task_spec(DefineTaskConfig(), _binary(0.05))
    assert t.problem_type == "binary" and t.primary_metric == "pr_auc" and "auc" in t.metrics
    assert t.business.prevalence == pytest.approx(0.05, abs=0.03)


def test_balanced_binary_gets_auc_and_accuracy() -> None:
    t = build_task_spec(DefineTaskConfig(), _binary(0.5))
    assert t.primary_metric == "auc" and "acc" in t.metrics


def test_medmnist_uses_medmnist_definitions() -> None:
    b = _binary(0.7, source="medmnist")
    b.meta.task_hint = "binary-class"
    t = build_task_spec(DefineTaskConfig(), b)
    assert t.metric_convention == "medmnist" and t.metrics[:2] == ["auc", "acc"]


def test_binary_declared_but_ten_classes_found() -> None:
    with pytest.raises(DataError, match="binary declared, but 10 classes found"):
        build_task_spec(DefineTaskConfig(problem_type="binary"), digits_bundle())


def test_single_class_target_is_an_error() -> None:
    b = _binary(0.5)
    for s in b.splits.values():
        s.y[:] = 1
    with pytest.raises(DataError, match="single class"):
        build_task_spec(DefineTaskConfig(), b)


def test_empty_validation_split_is_a_clear_error() -> None:
    from closedloop.data.bundle import DatasetBundle, Split

    b = _binary(0.5)
    empty = Split(b.val.X[:0], b.val.y[:0])
    with pytest.raises(DataError, match=r"dataset '.*': the val split is empty"):
        build_task_spec(DefineTaskConfig(), DatasetBundle(meta=b.meta, splits={**b.splits, "val": empty}))


def test_unknown_metric_lists_valid_ones() -> None:
    with pytest.raises(
        ConfigError, match="unknown metric 'acuracy'.*did you mean 'accuracy'|unknown metric 'acuracy'"
    ):
        build_task_spec(DefineTaskConfig(metric="acuracy"), digits_bundle())


def test_validation_protocol_by_size() -> None:
    small = build_task_spec(DefineTaskConfig(), digits_bundle((300, 100, 100)))
    assert small.validation.protocol == "repeated_kfold"
    declared = build_task_spec(
        DefineTaskConfig(validation={"protocol": "holdout"}), digits_bundle((300, 100, 100))
    )
    assert declared.validation.protocol == "holdout" and "validation.protocol" not in declared.inferred


def test_constraints_and_business_are_carried() -> None:
    cfg = DefineTaskConfig(
        constraints={"max_latency_ms": 20, "max_model_size_mb": 4},
        business={"cases_per_day": 200, "cost_false_negative": 5},
        intended_use="triage",
    )
    t = build_task_spec(cfg, _binary(0.3))
    assert (
        t.constraints.max_latency_ms == 20 and t.business.cases_per_day == 200 and t.intended_use == "triage"
    )


def test_a_tables_target_is_described_by_its_column_and_a_regression_target_as_a_number(tmp_path) -> None:
    """The report's first line of the task read 'Predict Computers label () from 9 tabular features (regression,
    1 outputs)' for a price column (session 28): a table names its target column, a regression target is a number."""
    import pandas as pd

    from closedloop.data.sources.tabular import TabularSource
    from closedloop.stages.task import DefineTask

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"speed": rng.normal(size=200), "cd": rng.choice(["no", "yes"], 200)})
    df["price"] = 2000 + 300 * df["speed"] + rng.normal(0, 10, 200)
    df["deny"] = np.where(df["speed"] > 0, "yes", "no")
    df.drop(columns=["deny"]).to_csv(tmp_path / "computers.csv", index=False)
    df.drop(columns=["price"]).to_csv(tmp_path / "hdma.csv", index=False)
    reg = TabularSource(path=str(tmp_path / "computers.csv"), target="price").load(seed=0)
    spec = build_task_spec(DefineTaskConfig(), reg)
    assert spec.target == "computers price (a number)"
    cls = TabularSource(path=str(tmp_path / "hdma.csv"), target="deny").load(seed=0)
    assert build_task_spec(DefineTaskConfig(), cls).target == "hdma deny (no, yes)"
    assert build_task_spec(DefineTaskConfig(target="the sale price"), reg).target == "the sale price"
    from closedloop.report.html import render_blocks

    html = render_blocks(DefineTask().report(DefineTask.Outputs(task=spec), tmp_path), tmp_path)
    assert "(regression, 1 output)." in html and "label ()" not in html


def _ordinal(source: str = "test") -> DatasetBundle:
    rng = np.random.default_rng(1)
    splits = {
        s: Split(X=rng.normal(size=(300, 3)).astype(np.float32), y=rng.integers(0, 4, 300).astype(np.int64))
        for s in ("train", "val", "test")
    }
    return DatasetBundle(
        meta=DatasetMeta(name="grades", source=source, kind="table", task_hint="ordinal"), splits=splits
    )


def test_an_ordinal_task_is_scored_by_its_ranks_not_like_a_multiclass_one() -> None:
    """Ordinal tables were scored like multi-class ones (session 28): a grade two ranks off counted as one
    rank off. An ordinal task's primary metric is the quadratic weighted kappa, the mean absolute rank
    error beside it; MedMNIST's ordinal task keeps MedMNIST's AUC and ACC first and reports both too."""
    t = build_task_spec(DefineTaskConfig(), _ordinal())
    assert t.problem_type == "ordinal" and t.primary_metric == "qwk" and t.higher_is_better
    assert t.metrics[:2] == ["qwk", "mae"] and "balanced_accuracy" in t.metrics
    assert "quadratic weighted kappa" in t.inferred["primary_metric"]
    med = _ordinal(source="medmnist")
    med.meta.task_hint = "ordinal-regression"
    m = build_task_spec(DefineTaskConfig(), med)
    assert m.primary_metric == "auc" and m.metrics[:2] == ["auc", "acc"] and {"qwk", "mae"} <= set(m.metrics)
    assert "mean absolute rank error" in m.inferred["primary_metric"]
    mae = build_task_spec(DefineTaskConfig(metric="mae"), _ordinal())
    assert mae.primary_metric == "mae" and not mae.higher_is_better
    nominal = build_task_spec(DefineTaskConfig(problem_type="multiclass"), _ordinal())
    assert "qwk" not in nominal.metrics and nominal.primary_metric in ("acc", "balanced_accuracy")


def _regression() -> DatasetBundle:
    rng = np.random.default_rng(2)
    splits = {s: Split(X=rng.normal(size=(100, 2)), y=rng.normal(size=100)) for s in ("train", "val", "test")}
    return DatasetBundle(
        meta=DatasetMeta(name="r", source="test", kind="table", task_hint="regression"), splits=splits
    )


def test_a_metric_the_problem_type_does_not_define_is_refused_at_the_task() -> None:
    with pytest.raises(
        ConfigError, match=r"metric 'qwk' is not defined for a multiclass task; valid there: auc"
    ):
        build_task_spec(DefineTaskConfig(metric="qwk"), digits_bundle())
    with pytest.raises(ConfigError, match=r"metric 'rmse' is not defined for a binary task"):
        build_task_spec(DefineTaskConfig(metrics=["auc", "rmse"]), _binary(0.5))
    with pytest.raises(ConfigError, match=r"metric 'auc' is not defined for a regression task"):
        build_task_spec(DefineTaskConfig(acceptance={"auc": 0.8}), _regression())
