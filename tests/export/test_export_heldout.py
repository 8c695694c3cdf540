"""The export gate scores the deployed model on the rows it did not train on, and says so."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from export_fixtures import digits_bundle, digits_model, task_for  # noqa: E402

from closedloop.core.stage import RunContext  # noqa: E402
from closedloop.stages.export import ExportModel  # noqa: E402
from common_data import binary_holdout_plan  # noqa: E402

FAST = {"latency": {"repeats": 5, "warmup": 1}, "bootstrap": 20, "calibration_samples": 64}


def test_export_gate_and_card_use_the_heldout_rows(tmp_path) -> None:
    b = digits_bundle(binary=True)
    m = digits_model(b, steps=40)
    val = b.val
    plan = binary_holdout_plan(val.X, val.y, fraction=0.4, min_size=30)
    m.info = {"trained_on": "train+val", "heldout": plan.model_dump()}
    t = task_for(b, business={"cases_per_day": 100})
    stage = ExportModel(**FAST)
    out = stage.execute(
        {"data": b, "task": t, "model": m}, RunContext(stage_name="export", stage_dir=tmp_path, seed=0)
    )
    meas = out.exported.measurements
    assert meas.evaluated_on == "calibration" and meas.n_evaluated == len(plan.indices) == 140
    idx = np.asarray(plan.indices)
    auc = roc_auc_score(val.y[idx], m.predict_proba(val.X[idx])[:, 1])
    assert abs(meas.variants["fp32"].comparison.value - auc) < 1e-4
    s = stage.summarize(out)
    assert s["evaluated_on"] == "calibration" and "val" not in s["fp32"]
    card = out.exported.model_card
    assert "140 calibration samples the deployed model did not train on" in card
    assert "Worst validation errors" not in card
