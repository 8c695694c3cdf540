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

import torch

from closedloop.stages.train.sync_bn import CpuSyncBatchNorm, sync_batchnorm

__all__ = ["CpuSyncBatchNorm", "main", "sync_batchnorm"]


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
                network=eng.fold_target_units(net),
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
