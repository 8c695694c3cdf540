"""A run whose artifacts were written in an older layout: the typed reader refuses it once, clearly
(the file, the layout version, what to do), and ``closedloop runs`` still lists the other runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_run import evaluation, make_run  # noqa: E402

from closedloop.cli import main  # noqa: E402
from closedloop.core.errors import RunDirError  # noqa: E402
from closedloop.report.evidence import gather  # noqa: E402

# The test gate as runs before the typed records wrote it: a Holm p-value, no p_adjusted/correction.
OLD_GATE = {
    "metric": "auc",
    "delta": 0.04,
    "p_value": 0.0004,
    "p_holm": 0.0028,
    "n_configs": 7,
    "significant": True,
    "sentence": "The model beats the best baseline on test.",
}


def _old_run(root: Path) -> Path:
    run = make_run(root, name="old")
    path = next(run.glob("stages/05_train/artifacts/evaluation/artifact.json"))
    body = evaluation()
    body["beats_baseline"] = OLD_GATE
    path.write_text(json.dumps(body), encoding="utf-8")
    return run


def test_an_older_evaluation_report_is_one_clear_error(tmp_path: Path) -> None:
    run = _old_run(tmp_path)
    with pytest.raises(RunDirError) as err:
        gather(run)
    msg = str(err.value)
    assert "stages/05_train/artifacts/evaluation/artifact.json" in msg  # the file
    assert "EvaluationReport" in msg and "stage 'train'" in msg
    assert "layout version 1" in msg  # the version it was read as
    assert "Re-run that stage" in msg and "closedloop run" in msg  # what to do


def test_runs_lists_an_older_run_as_unreadable_and_compare_exits_2(tmp_path: Path, capsys) -> None:
    old = _old_run(tmp_path / "runs")
    new = make_run(tmp_path / "runs", name="new")
    assert main(["runs", str(tmp_path / "runs"), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["old"]["status"] == "unreadable" and "layout version 1" in rows["old"]["next_step"]
    assert rows["new"]["status"] == "ok"
    assert main(["compare", str(new), str(old), "--html", str(tmp_path / "c.html")]) == 2
    assert "artifact.json: cannot read this EvaluationReport artifact" in capsys.readouterr().err


def test_an_older_phase_record_is_one_clear_error(tmp_path: Path) -> None:
    from closedloop.artifacts.evaluation import EvaluationReport
    from closedloop.artifacts.training import TuneOutcome
    from closedloop.core.run_reader import RunDir

    run = make_run(tmp_path)
    path = next(run.glob("stages/05_train/artifacts/evaluation/artifact.json"))
    body = json.loads(path.read_text())
    body["phases"]["tune"] = {"val_logits_file": "val.npy"}  # a tune record without its other fields
    path.write_text(json.dumps(body), encoding="utf-8")
    report = RunDir(run).artifact(EvaluationReport)  # the report itself is this version's
    with pytest.raises(RunDirError, match=r"phases.tune is not a TuneOutcome of this version .* re-run"):
        report.outcome(TuneOutcome)


def test_an_audit_check_metric_the_typed_view_cannot_read_is_one_clear_error(tmp_path: Path) -> None:
    from fake_run import audit

    from closedloop.artifacts.audit import AuditReport
    from closedloop.core.run_reader import RunDir

    body = audit()
    body["results"]["learning_curve"]["metrics"]["gain_90ci"] = "0.01 to 0.03"  # not [low, high]
    run = make_run(tmp_path, name="odd_audit", artifacts={"audit": body})
    with pytest.raises(RunDirError) as err:
        RunDir(run).artifact(AuditReport)
    msg = str(err.value)
    assert "stages/03_audit/artifacts/audit/report.json" in msg and "AuditReport" in msg  # the file
    assert "layout version 1" in msg and "gain_90ci" in msg  # the version and the field
    assert "Re-run that stage" in msg  # what to do
    with pytest.raises(RunDirError, match="report.json"):
        gather(run)
