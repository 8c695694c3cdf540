"""One operating point, said out loud: every threshold-dependent figure names the rule it was decided at."""

from __future__ import annotations

import sys
from pathlib import Path

from closedloop.artifacts.figures import Figure, PerDay
from closedloop.artifacts.selection import SelectionBias
from closedloop.report.evidence import _on_test, _per_day
from closedloop.stages.train.phases.evaluate import label_operating_points

sys.path.insert(0, str(Path(__file__).parent))
from fake_run import per_day, selection  # noqa: E402


def test_each_metric_names_its_decision_rule() -> None:
    m = {k: {"value": 0.9, "ci95": [0.8, 0.95]} for k in ("auc", "acc", "balanced_accuracy")}
    med = label_operating_points(m, "binary", "medmnist", 0.073)
    assert med["auc"]["decided_at"] == "threshold-free"
    assert med["acc"]["decided_at"].startswith("0.5 (MedMNIST convention")
    assert med["balanced_accuracy"]["decided_at"] == "shipped threshold 0.073"
    std = label_operating_points(m, "binary", "standard", 0.073)
    assert std["acc"]["decided_at"] == "shipped threshold 0.073"
    assert label_operating_points(m, "multiclass", "standard", None)["acc"]["decided_at"] == "argmax"
    # an ordinal rank error is the argmax class's distance; a regression error has no decision in it
    ranks = {k: {"value": 0.3, "ci95": [0.2, 0.4]} for k in ("mae", "rmse", "qwk")}
    assert {v["decided_at"] for v in label_operating_points(ranks, "ordinal", "standard", None).values()} == {
        "argmax"
    }
    assert label_operating_points({"mae": ranks["mae"]}, "regression", "standard", None)["mae"][
        "decided_at"
    ] == ("threshold-free")
    # the report's acceptance table and per-day panel carry the label
    assert _on_test(Figure.model_validate(med["acc"])) == (
        "test, at 0.5 (MedMNIST convention, not the shipped threshold)"
    )
    assert _on_test(Figure.model_validate(med["auc"])) == "test"
    pd = PerDay.model_validate(per_day(threshold=0.073))
    assert _per_day(pd).evaluated_on == "test, at the shipped threshold 0.073"


def test_the_val_to_test_gap_is_explained_next_to_the_split_shift_finding() -> None:
    from closedloop.report.decision import val_test_gap
    from closedloop.report.evidence import AuditEvidence, Estimate, RunEvidence

    ev = RunEvidence(name="p", run_dir="r", status="ok")
    ev.test["auc"] = Estimate(value=0.973, ci95=(0.96, 0.983))
    ev.selection = SelectionBias.model_validate(selection(metric="auc", corrected_value=0.9965))
    ev.audit = AuditEvidence(test_shift_auc=0.64)
    text = val_test_gap(ev)
    assert "below what validation and the selection bias predict (0.9965)" in text
    assert "distinguishable (adversarial AUC 0.64)" in text and "closedloop adapt" in text
    ev.audit = AuditEvidence(test_shift_auc=0.52)
    assert "did not tell test from train" in val_test_gap(ev)
    ev.audit = None
    assert "No split-shift audit ran" in val_test_gap(ev)
    ev.test["auc"] = Estimate(value=0.995, ci95=(0.99, 0.998))  # inside what validation predicts
    assert val_test_gap(ev) == ""
