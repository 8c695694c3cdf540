"""Data-parallel training: two gloo processes launched by torchrun end with identical weights."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from .conftest import digits_bundle

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with gloo is not available",
)


def test_train_torchrun_two_processes(tmp_path) -> None:
    from closedloop.models.trained import TrainedModel
    from closedloop.stages.task import DefineTaskConfig, build_task_spec

    data = digits_bundle((3, 8), (128, 40, 40))
    data.save(tmp_path / "data")
    build_task_spec(DefineTaskConfig(), data).save(tmp_path / "task")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "closedloop.stages.train.distributed",
        "--data",
        str(tmp_path / "data"),
        "--task",
        str(tmp_path / "task"),
        "--out",
        str(tmp_path / "out"),
        "--spec",
        json.dumps({"family": "small_cnn", "params": {"width": 4, "depth": 1}}),
        "--hparams",
        json.dumps({"epochs": 2, "batch_size": 16, "lr": 0.01}),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "out" / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "out" / "rank1.json").read_text())
    assert r0["world_size"] == 2 and r0["weights_sha256"] == r1["weights_sha256"]
    assert len(r0["history"]) == 2
    model = TrainedModel.load(tmp_path / "out" / "model")
    assert model.predict_proba(data.val.X).shape == (40, 2)
    assert model.info["distributed"]["backend"] == "gloo"
