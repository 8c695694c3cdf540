"""Test-set custody: sealed bundle, one evaluation opening per fingerprint, unsealing, the ledgers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from closedloop.core.errors import SealedTestError
from closedloop.core.ledger import TestLedger, ValidationLedger
from closedloop.core.stage import RunContext, Stage, StageIO
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split


def _bundle() -> DatasetBundle:
    rng = np.random.default_rng(0)
    splits = {
        s: Split(X=rng.integers(0, 255, (10, 4, 4, 1), dtype=np.uint8), y=rng.integers(0, 2, 10))
        for s in ("train", "val", "test")
    }
    return DatasetBundle(meta=DatasetMeta(name="t", source="x", kind="images"), splits=splits)


def _ctx(
    tmp: Path, run_id: str, *, unseal: str | None = None, stage: str = "train", fp: str = "f" * 64
) -> RunContext:
    run_dir = tmp / run_id
    ledger = TestLedger(
        global_path=tmp / "test_ledger.jsonl",
        run_path=run_dir / "test_ledger.jsonl",
        run_id=run_id,
        unseal_reason=unseal,
    )
    return RunContext(
        stage_name=stage,
        stage_dir=run_dir / stage,
        seed=0,
        fingerprint=fp,
        run_dir=run_dir,
        test_ledger=ledger,
    )


def test_tuning_on_test_is_a_clear_error() -> None:
    b = _bundle()
    with pytest.raises(SealedTestError, match="sealed.*open_test"):
        _ = b.test
    with pytest.raises(SealedTestError):
        b.unsealed_test(object())


def test_second_opening_refused_unless_unsealed(tmp_path: Path) -> None:
    b = _bundle()
    test = _ctx(tmp_path, "run1").open_test(b, reason="final evaluation")
    assert len(test) == 10
    # the same run may re-open (a resumed stage), and it is recorded
    _ctx(tmp_path, "run1").open_test(b, reason="final evaluation (resumed)")
    with pytest.raises(SealedTestError, match=r"already opened.*run1.*--unseal-test"):
        _ctx(tmp_path, "run2").open_test(b, reason="final evaluation")
    # a different pipeline (fingerprint) has its own seal
    _ctx(tmp_path, "run3", fp="e" * 64).open_test(b, reason="final evaluation")
    ctx = _ctx(tmp_path, "run4", unseal="reviewer asked for a re-run with the fixed seed")
    ctx.open_test(b, reason="final evaluation")
    rec = json.loads((tmp_path / "run4" / "test_ledger.jsonl").read_text().splitlines()[-1])
    assert (
        rec["unsealed"] is True
        and rec["unseal_reason"].startswith("reviewer")
        and rec["previous_openings"] == 2
    )
    assert {"time", "stage", "reason", "purpose", "run_id", "fingerprint"} <= set(rec)
    # the global ledger keeps every opening, each run directory its own
    assert len(ctx.test_ledger.history()) == 4
    assert len(ctx.test_ledger.entries()) == 1
    assert ctx.test_ledger.rows()[0]["unsealed"].startswith("reviewer")
    assert ctx.test_ledger.is_sealed("f" * 64) and not ctx.test_ledger.is_sealed("0" * 64)


def test_audit_openings_are_recorded_and_do_not_seal(tmp_path: Path) -> None:
    b = _bundle()
    _ctx(tmp_path, "run1", stage="audit").open_test(b, reason="overlap check", purpose="audit")
    _ctx(tmp_path, "run2", stage="audit").open_test(b, reason="overlap check", purpose="audit")
    _ctx(tmp_path, "run2").open_test(b, reason="final evaluation")
    purposes = [e["purpose"] for e in _ctx(tmp_path, "x").test_ledger.history()]
    assert purposes == ["audit", "audit", "evaluation"]
    with pytest.raises(SealedTestError, match="needs a reason"):
        _ctx(tmp_path, "run3").open_test(b, reason="  ")


def test_torn_ledger_line_is_tolerated(tmp_path: Path) -> None:
    b = _bundle()
    _ctx(tmp_path, "run1").open_test(b, reason="final evaluation")
    with open(tmp_path / "test_ledger.jsonl", "a") as f:
        f.write('{"time": "2024-01-01T00:00:00+00:00", "run_id": "run9", "fingerp')  # crash mid-write
    # the torn line is skipped, the earlier opening still seals, a new record stays readable
    with pytest.raises(SealedTestError):
        _ctx(tmp_path, "run2").open_test(b, reason="final evaluation")
    _ctx(tmp_path, "run3", fp="e" * 64).open_test(b, reason="final evaluation")
    hist = _ctx(tmp_path, "x").test_ledger.history()
    assert [h["run_id"] for h in hist] == ["run1", "run3"]


def test_validation_ledger_counts(tmp_path: Path) -> None:
    led = ValidationLedger(tmp_path / "validation_ledger.jsonl")
    ctx = RunContext(stage_name="baseline", stage_dir=tmp_path, seed=0, validation_ledger=led)
    for i in range(3):
        ctx.record_validation(f"baseline {i}", {"i": i}, {"auc": 0.5 + i / 10})
    RunContext(stage_name="train", stage_dir=tmp_path, seed=0, validation_ledger=led).record_validation(
        "lr=0.1", {}, {"auc": 0.9}
    )
    assert led.count() == 4 and led.count("baseline") == 3
    assert led.by_stage() == {"baseline": 3, "train": 1}
    assert (
        led.selected_among()
        == "selected among 4 configurations evaluated on validation (baseline: 3, train: 1)"
    )
    assert led.selected_among("train").startswith("selected among 1 configuration ")
    assert led.rows("train") == [{"stage": "train", "configuration": "lr=0.1", "auc": 0.9}]


class _Scorer(Stage):
    """Opens the test split to score, after work worth sparing (counted in ``runs``)."""

    scores_on_test = True
    runs: ClassVar[int] = 0

    class Inputs(StageIO):
        data: DatasetBundle

    class Outputs(StageIO):
        pass

    def run(self, inputs: Inputs, ctx: RunContext) -> Outputs:
        type(self).runs += 1  # the training a refusal after the fact would have wasted
        ctx.open_test(inputs.data, reason="final evaluation")
        return self.Outputs()


def test_a_sealed_test_split_is_refused_before_the_scoring_stage_runs(tmp_path: Path) -> None:
    from closedloop.core.checks import GivenArtifacts
    from closedloop.core.pipeline import Pipeline

    def pipeline(unseal: str | None = None):  # type: ignore[no-untyped-def]
        given = GivenArtifacts.of({"data": _bundle()}, tmp_path / "given")
        run = Pipeline([given, _Scorer()], name="sealed", runs_dir=tmp_path / "runs")
        return run.run(progress=False, unseal_test=unseal, cache=False)  # no reuse: the stage would run

    _Scorer.runs = 0
    assert pipeline().ok and _Scorer.runs == 1
    again = pipeline()
    assert not again.ok and _Scorer.runs == 1  # refused before its work, not after
    error = again.summary["stages"]["__scorer"]["error"]
    assert "already opened for this exact pipeline" in error and "--unseal-test" in error
    assert pipeline(unseal="a deliberate re-run").ok and _Scorer.runs == 2
