"""Data-parallel training: two gloo processes launched by torchrun end with identical weights, with
BatchNorm synchronized across them."""

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
    # small_cnn has BatchNorm: every rank converted it to synchronized BatchNorm before DDP
    for r in (r0, r1):
        assert r["sync_batchnorm"]["enabled"] is True and r["sync_batchnorm"]["layers"] >= 1, r
    assert r0["sync_batchnorm"] == r1["sync_batchnorm"]
    model = TrainedModel.load(tmp_path / "out" / "model")
    assert model.predict_proba(data.val.X).shape == (40, 2)
    assert model.info["distributed"]["backend"] == "gloo"
    assert model.info["distributed"]["sync_batchnorm"] == r0["sync_batchnorm"]


SYNC_BN_SCRIPT = """
import json, os, sys
import torch
import torch.distributed as dist
from closedloop.stages.train.distributed import CpuSyncBatchNorm, sync_batchnorm

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
x = torch.randn(8, 3, 4, 4) * 3 + 1  # the global batch; each rank holds half of it
net, n = sync_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3)), "cpu")
ref = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3))
ref.load_state_dict(net.state_dict())
xs = x[rank * 4 : (rank + 1) * 4]
out = net.train()(xs)
(out**2).sum().backward()
full = ref.train()(x)
(full**2).sum().backward()
res = {
    "layers": n,
    "cpu_sync": isinstance(net[1], CpuSyncBatchNorm),
    "out_err": float((out - full[rank * 4 : (rank + 1) * 4]).abs().max()),
    "mean_err": float((net[1].running_mean - ref[1].running_mean).abs().max()),
    "var_err": float((net[1].running_var - ref[1].running_var).abs().max()),
}
g = net[1].weight.grad.clone()
dist.all_reduce(g)  # what DDP sums: each rank's share of the global loss
res["grad_err"] = float((g - ref[1].weight.grad).abs().max())
open(sys.argv[1] + f"/sync{rank}.json", "w").write(json.dumps(res))
dist.barrier()  # neither rank tears gloo down while the other still talks to it
dist.destroy_process_group()
# skip C++ static destructors: a thread torch leaves behind after a backward through gloo collectives
# can abort interpreter shutdown ("terminate called without an active exception") after the work is done
os._exit(0)
"""


def test_cpu_sync_batchnorm_matches_batchnorm_on_the_global_batch(tmp_path) -> None:
    """Two ranks with half a batch each get the outputs, running statistics and (summed) gradients
    of plain BatchNorm on the whole batch; unsynchronized BatchNorm would not."""
    script = tmp_path / "sync_bn.py"
    script.write_text(SYNC_BN_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run([*cmd, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in (0, 1):
        res = json.loads((tmp_path / f"sync{r}.json").read_text())
        assert res["layers"] == 1 and res["cpu_sync"], res
        for k in ("out_err", "mean_err", "var_err", "grad_err"):
            assert res[k] < 1e-4, (k, res)
