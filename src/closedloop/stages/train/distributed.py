"""Data-parallel training with ``torchrun`` (torch.distributed: gloo on CPU, NCCL on GPU).

Each process holds the whole dataset in memory and takes every ``world_size``-th index of the same
seeded permutation; ``DistributedDataParallel`` averages the gradients, so all ranks end with
identical weights. With more than one process, BatchNorm layers are converted to synchronized
BatchNorm before DDP wraps the network (``--no-sync-bn`` turns this off): batch statistics are then
computed over the global batch, not each rank's shard. On GPU this is
:class:`torch.nn.SyncBatchNorm`; on CPU (gloo), where torch's kernel refuses CPU tensors,
:class:`CpuSyncBatchNorm` all-reduces the per-channel sums with autograd-aware collectives.
Rank 0 writes the checkpoint (resumable) and the model.

Usage::

    torchrun --standalone --nproc_per_node 2 -m closedloop.stages.train.distributed \\
        --data <saved DatasetBundle dir> --task <saved TaskSpec dir> --out <dir> \\
        --spec '{"family": "small_cnn", "params": {"width": 16}}' --hparams '{"epochs": 5}' --seed 0

Each rank writes ``<out>/rank<r>.json`` (history, a hash of its final weights and
``sync_batchnorm``: whether BatchNorm was synchronized and how many layers); rank 0 also writes ``<out>/model/`` (a :class:`~closedloop.models.trained.TrainedModel`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over the process group; the gradient of every rank's input is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _AllReduceSum.apply(grad, ctx.group), None


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Synchronized BatchNorm for CPU tensors (gloo), where torch's :class:`~torch.nn.SyncBatchNorm`
    refuses CPU inputs and DDP refuses CPU modules holding it. In training, the per-channel count, sum
    and squared deviations are all-reduced (autograd flows through the collectives, as in torch's GPU
    kernel) and the running statistics get the global batch's mean and unbiased variance. In
    evaluation, or with one process, it is plain BatchNorm. Same state as BatchNorm."""

    process_group: Any = None

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        group = self.process_group or (dist.group.WORLD if dist.is_available() else None)
        if not (
            self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1
        ):
            return super().forward(input)
        self._check_input_dim(input)
        c = input.size(1)
        dims = [0, *range(2, input.dim())]
        shape = [1, c] + [1] * (input.dim() - 2)
        local = torch.cat([input.sum(dims), input.new_full((1,), input.numel() // c)])
        tot = _AllReduceSum.apply(local, group)
        count = tot[c]
        mean = tot[:c] / count
        var = _AllReduceSum.apply(((input - mean.view(shape)) ** 2).sum(dims), group) / count
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_((var * count / (count - 1).clamp_min(1)).detach(), m)
        out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def sync_batchnorm(net: nn.Module, device: str) -> tuple[nn.Module, int]:
    """Convert every BatchNorm layer of ``net`` to synchronized BatchNorm before DDP wraps it
    (:class:`torch.nn.SyncBatchNorm` on GPU, :class:`CpuSyncBatchNorm` on CPU). Returns the network and
    the number of converted layers (0: no BatchNorm, nothing changed)."""
    n = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    if n == 0:
        return net, 0
    net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    if torch.device(device).type == "cpu":
        for m in net.modules():
            if type(m) is nn.SyncBatchNorm:
                m.__class__ = CpuSyncBatchNorm  # both are _BatchNorm with the same state
    return net, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m closedloop.stages.train.distributed")
    ap.add_argument("--data", required=True, help="directory of a saved DatasetBundle")
    ap.add_argument("--task", required=True, help="directory of a saved TaskSpec")
    ap.add_argument("--out", required=True)
    ap.add_argument("--spec", default='{"family": "small_cnn", "params": {}}', help="ModelSpec as JSON")
    ap.add_argument("--hparams", default="{}", help="HParams fields as JSON")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--sync-bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="synchronize BatchNorm statistics across processes when there are several (default: on)",
    )
    args = ap.parse_args(argv)

    import torch.distributed as dist

    from closedloop.data.bundle import DatasetBundle
    from closedloop.models.registry import build_network
    from closedloop.models.trained import ModelSpec, TrainedModel
    from closedloop.stages.task import TaskSpec
    from closedloop.stages.train.engine import HParams, make_engine, make_tensor_set, n_logits_for
    from closedloop.stages.train.stage import make_preprocessing

    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu"
    try:
        data = DatasetBundle.load(Path(args.data))
        task = TaskSpec.load(Path(args.task))
        pre = make_preprocessing(data, task)
        spec = ModelSpec.model_validate(json.loads(args.spec))
        hp = HParams.from_dict(json.loads(args.hparams))
        eng = make_engine(task, pre, device)
        tr = make_tensor_set(data.train.X, data.train.y, pre, task.problem_type)
        va = make_tensor_set(data.val.X, data.val.y, pre, task.problem_type)
        torch.manual_seed(args.seed)
        net = build_network(spec, pre.input_shape, n_logits_for(task.problem_type, task.n_outputs))
        n_sync = 0
        if args.sync_bn and world > 1:
            net, n_sync = sync_batchnorm(net, device)  # Engine.fit wraps the converted network in DDP
        sync = {"enabled": n_sync > 0, "layers": n_sync, "requested": bool(args.sync_bn)}
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        res = eng.fit(net, tr, va, hp, seed=args.seed, checkpoint=out / "checkpoint.pt")
        state = net.cpu().state_dict()
        digest = hashlib.sha256(b"".join(v.detach().numpy().tobytes() for v in state.values())).hexdigest()
        (out / f"rank{rank}.json").write_text(
            json.dumps(
                {
                    "rank": rank,
                    "world_size": world,
                    "weights_sha256": digest,
                    "sync_batchnorm": sync,
                    "history": res.history,
                    "best_epoch": res.best_epoch,
                }
            ),
            encoding="utf-8",
        )
        if rank == 0:
            TrainedModel(
                spec=spec,
                network=net,
                preprocessing=pre,
                problem_type=task.problem_type,
                n_outputs=task.n_outputs,
                label_names=list(task.label_names),
                info={
                    "distributed": {
                        "world_size": world,
                        "backend": dist.get_backend(),
                        "sync_batchnorm": sync,
                    },
                    "hparams": hp.as_dict(),
                },
            ).save(out / "model")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main()
    # Everything is written and the process group destroyed. Leave without running C++ static
    # destructors: on CPU (gloo) a rank occasionally aborted at interpreter exit with "terminate called
    # without an active exception" (a communication thread still joinable), failing a finished run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
