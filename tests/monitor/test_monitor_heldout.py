"""The reference profile comes from the deployed model's held-out rows, never from rows it trained on."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from closedloop.core.errors import DataError
from closedloop.core.stage import RunContext
from closedloop.monitoring.features import image_features
from closedloop.stages.monitor import BuildMonitorProfile
from closedloop.stages.task import DefineTaskConfig, build_task_spec
from closedloop.stages.train.heldout import plan_heldout

sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import digits_setup  # noqa: E402

FAST = {"calibration_windows": 20, "window_sizes": [50], "permutations": 30}


def _with_plan(model, bundle, fraction: float, min_size: int):
    val = bundle.val
    plan = plan_heldout(
        val.X,
        val.y,
        problem_type="multiclass",
        final_fit="train+val",
        fraction=fraction,
        min_size=min_size,
        n_train=len(bundle.train),
        seed=0,
    )
    model.info = {"trained_on": "train+val", "heldout": plan.model_dump()}
    return plan


def test_profile_uses_only_the_heldout_rows(tmp_path) -> None:
    bundle, model = digits_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    plan = _with_plan(model, bundle, 0.5, 30)
    stage = BuildMonitorProfile(**FAST)
    out = stage.execute(
        {"data": bundle, "task": task, "model": model}, RunContext("monitor", tmp_path, seed=0)
    )
    info = out.reference.info
    assert info.source["evaluated_on"] == "calibration" and info.source["n"] == len(plan.indices) == 200
    assert info.reference_size + info.calibration_size == 200
    held = {r.tobytes() for r in image_features(bundle.val.X[plan.indices]).astype(np.float32)}
    ref = [r.tobytes() for r in out.reference.reference.features.astype(np.float32)]
    assert ref and all(r in held for r in ref)  # a trained-on row in the reference would fail here
    assert stage.summarize(out)["reference"]["evaluated_on"] == "calibration"


def test_too_few_heldout_rows_name_the_sizes(tmp_path) -> None:
    bundle, model = digits_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    _with_plan(model, bundle, 0.01, 10)
    with pytest.raises(
        DataError, match=r"10 validation samples are unseen by the deployed model .* at least 20"
    ):
        BuildMonitorProfile(**FAST).execute(
            {"data": bundle, "task": task, "model": model}, RunContext("monitor", tmp_path, seed=0)
        )
