"""The readers of a finished run read typed views, not keys (issue 22): the audit checks' metrics,
curve points, a figure's interval in any record, the data naming of a run's config and the test
ledger's openings; each keeps what the keyed read it replaced gave, older formats included."""

from __future__ import annotations

from closedloop.artifacts.audit import (
    AuditReport,
    DuplicateMetrics,
    LabelIssueMetrics,
    LearningCurveMetrics,
    SplitShiftMetrics,
)
from closedloop.artifacts.evaluation import CurvePoint
from closedloop.artifacts.figures import WithInterval
from closedloop.report.compare import dataset_id
from closedloop.report.evidence import _audit
from closedloop.report.html import _fmt
from closedloop.tracking.run import flatten, headline_metrics


def _report(results: dict) -> AuditReport:
    return AuditReport(results={k: {"status": "ok", "metrics": m} for k, m in results.items()})


def test_audit_evidence_reads_each_checks_typed_metrics() -> None:
    report = _report(
        {
            "duplicates": {
                "pairs": {"train-test": 9, "val-test": 9},
                "overlap": {"train-test": 3, "val-test": 1},
            },
            "label_issues": {"estimated_noise_rate": 0.12, "other": "kept"},
            "learning_curve": {"gain_at_2x": 0.02, "gain_90ci": [0.01, 0.03]},
            "split_shift": {"adversarial_auc_test": 0.55},
        }
    )
    ev = _audit(report, n_test=40)
    assert ev is not None
    assert ev.test_overlap == 0.1  # the overlap counts (3 + 1) / 40, not every close pair
    assert ev.estimated_noise_rate == 0.12 and ev.test_shift_auc == 0.55
    assert ev.gain_at_2x == 0.02 and ev.gain_ci == (0.01, 0.03)
    assert report.metrics_of("label_issues", LabelIssueMetrics).model_extra == {"other": "kept"}


def test_an_older_audit_report_reads_with_what_it_has() -> None:
    older = _report({"duplicates": {"pairs": {"train-test": 2}, "overlap": {}}})  # no overlap counted
    assert older.metrics_of("duplicates", DuplicateMetrics).held_out_copies().train_test == 2
    ev = _audit(older, n_test=4)
    assert ev is not None and ev.test_overlap == 0.5  # every close pair: the bound older reports give
    assert ev.estimated_noise_rate is None and ev.gain_ci is None and ev.test_shift_auc is None
    undefined = _report({"learning_curve": {"gain_at_2x": None, "gain_90ci": [None, None]}})  # NaN
    ev = _audit(undefined, n_test=4)
    assert ev is not None and ev.gain_at_2x is None and ev.gain_ci is None
    none_ran = _report({})
    assert none_ran.metrics_of("learning_curve", LearningCurveMetrics).gain_at_2x is None
    assert none_ran.metrics_of("split_shift", SplitShiftMetrics).adversarial_auc_test is None
    assert _audit(none_ran, n_test=4).test_overlap is None  # type: ignore[union-attr]


def test_a_value_with_its_interval_is_read_in_any_record() -> None:
    assert WithInterval.read({"value": 0.9, "ci95": [0.8, 0.95], "decided_at": "argmax"}).bounds == (
        0.8,
        0.95,
    )
    assert WithInterval.read({"ci95": "not a list"}) is None and WithInterval.read([1, 2]) is None
    assert WithInterval.read({"value": 1.0, "ci95": [0.5]}).bounds is None  # type: ignore[union-attr]
    assert _fmt({"value": 0.91234, "ci95": [0.8, 0.95]}) == "0.9123 [0.8000, 0.9500]"
    assert _fmt({"value": 0.9, "ci95": [None, 0.95]}).startswith("{")  # an undefined bound: the JSON
    assert _fmt({"value": "high", "ci95": [0.1, 0.2]}).startswith("{")  # not a number: the JSON
    m = headline_metrics(
        {"stages": {"train": {"status": "ok", "test": {"auc": {"value": 0.9, "ci95": [0.8, 1.0]}}}}}
    )
    assert m["train/test/auc/value"] == 0.9 and m["train/test/auc/ci_low"] == 0.8
    assert m["train/test/auc/ci_high"] == 1.0


def test_curve_points_and_named_config_entries() -> None:
    p = CurvePoint.model_validate({"epoch": 3, "train_loss": 0.4, "step": 30, "val_auc": 0.8})
    assert p.epoch == 3 and p.quantities == {"train_loss": 0.4, "val_auc": 0.8}
    assert "epoch" not in CurvePoint.model_validate({"loss": 1.0}).model_fields_set
    flat = flatten({"stages": [{"name": "train", "params": {"max_epochs": 6}}, {"name": "export"}]})
    assert flat == {"stages.train.params.max_epochs": 6}


def test_dataset_id_names_the_data_from_the_typed_config_part() -> None:
    cfg = {"data": {"source": "medmnist", "flag": "breastmnist", "size": 28, "root": "/data", "path": ""}}
    assert dataset_id(cfg) == "medmnist(flag=breastmnist, size=28)"
    retrain = {"data": {"source": "augmented", "base": cfg["data"], "labels": "x.csv"}}
    assert dataset_id(retrain) == "medmnist(flag=breastmnist, size=28)"
    assert dataset_id({}) == "?()" and dataset_id({"data": {"source": None}}) == "None()"
