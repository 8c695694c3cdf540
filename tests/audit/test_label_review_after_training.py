"""The train stage ranks suspected label errors a second time with its out-of-fold predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from closedloop.core.ledger import TestLedger, ValidationLedger
from closedloop.core.stage import RunContext
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.models.trained import logits_to_proba
from closedloop.stages.audit.rerank import FILE, rerank_label_issues
from closedloop.stages.task import DefineTaskConfig, build_task_spec
from closedloop.stages.train.stage import TrainModel
from common_data import TINY_TRAIN

TINY = {**TINY_TRAIN, "cv_candidates": 1}


def digits_0_vs_1(flips: np.ndarray) -> DatasetBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.isin(d.target, (0, 1))
    X = (d.images[keep] * (255.0 / 16.0)).round().astype(np.uint8)[..., None]
    y = d.target[keep].astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(y))
    tr, va, te = idx[:240], idx[240:300], idx[300:360]
    ytr = y[tr].copy()
    ytr[flips] = 1 - ytr[flips]
    meta = DatasetMeta(name="digits01", source="sklearn", kind="images", label_names=["0", "1"], n_channels=1)
    return DatasetBundle(
        meta=meta,
        splits={"train": Split(X[tr], ytr), "val": Split(X[va], y[va]), "test": Split(X[te], y[te])},
    )


@pytest.mark.slow
def test_train_stage_saves_and_reports_a_second_ranking(tmp_path: Path) -> None:
    flips = np.array([3, 17, 40, 88, 150, 201])
    data = digits_0_vs_1(flips)
    task = build_task_spec(DefineTaskConfig(), data)
    assert task.validation.protocol in (
        "kfold",
        "repeated_kfold",
    )  # small data: out-of-fold predictions exist
    task = task.model_copy(
        update={"validation": task.validation.model_copy(update={"folds": 3, "repeats": 1})}
    )
    ctx = RunContext(
        stage_name="train",
        stage_dir=tmp_path,
        seed=0,
        fingerprint="f" * 64,
        test_ledger=TestLedger(tmp_path / "g.jsonl", tmp_path / "r.jsonl", run_id="r1"),
        validation_ledger=ValidationLedger(tmp_path / "v.jsonl"),
    )
    stage = TrainModel(**TINY)
    out = stage.execute({"data": data, "task": task}, ctx)
    assert out.evaluation.label_review is not None
    review = out.evaluation.label_review.model_dump(mode="json")
    assert review["evaluated_on"] == "out_of_fold" and review["n_examined"] == 300
    # the saved list is the plain re-ranking of the chosen configuration's out-of-fold predictions,
    # train rows first, then val (the order cross-validation concatenated them in)
    tuned = out.evaluation.phases["cross_validate"]["tuned"]
    proba = logits_to_proba(np.load(ctx.work_dir / tuned["calibration_logits_file"]), "binary")
    y = np.concatenate([data.train.y, data.val.y])
    ids = [("train", i) for i in range(240)] + [("val", i) for i in range(60)]
    expected = rerank_label_issues(y, proba, ids).to_frame()
    saved = pd.read_csv(tmp_path / "label_review" / FILE)
    pd.testing.assert_frame_equal(saved, expected, check_dtype=False)
    assert len(saved) == review["n_flagged"] and len(review["issues"]) == min(50, len(saved))
    summary = stage.summarize(out)["label_review"]
    assert summary["evaluated_on"] == "out_of_fold" and summary["file"] == f"label_review/{FILE}"
    from closedloop.report.html import render_blocks

    html = render_blocks(stage.report(out, tmp_path), tmp_path)
    assert "Label review after training" in html
