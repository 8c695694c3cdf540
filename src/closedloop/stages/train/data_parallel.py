"""The final fit on several ranks (``train: {final: {nproc: N}}``), launched by the stage itself.

The stage forks N processes (they inherit the session: data, engine, chosen configuration; nothing is
saved or typed by hand), each joins one ``torch.distributed`` process group (gloo on CPU) on a free
127.0.0.1 port and runs the same :meth:`Engine.fit`, which wraps the network in
``DistributedDataParallel`` and gives each rank every N-th example of the same seeded permutation. The
per-rank batch is the configured batch divided by N, so the global batch, the step count and the
learning-rate schedule are those of the one-process fit. BatchNorm layers are synchronized
(:func:`closedloop.stages.train.distributed.sync_batchnorm`, as the ``torchrun`` entry point does);
their state has BatchNorm's keys, so rank 0's weights load into the family's own network: the saved
model is the same family and loads as today.
Rank 0 writes the epoch checkpoint (the one-process fit's file: a killed run resumes from it, on any
number of ranks) and, at the end, the weights and the fit's history, which the stage loads.

CUDA (NCCL) is not launched this way: a forked child cannot use CUDA once the parent has, so on a GPU
the stage refuses ``nproc > 1`` with a message (the ``torchrun`` entry point in
:mod:`closedloop.stages.train.distributed` runs NCCL).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import socket
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from closedloop.core.errors import ConfigError, StageFailedError
from closedloop.stages.train.engine import FitResult, HParams

BACKEND = "gloo"


def check_ranks(nproc: int, device: str, family_kind: str) -> None:
    """Refuse what this launcher cannot run, before any training."""
    if nproc <= 1:
        return
    if family_kind == "trees":
        raise ConfigError(
            f"train.final.nproc: {nproc} - a tree family's boosting has no data-parallel fit here; use nproc: 1"
        )
    if device.startswith("cuda"):
        raise ConfigError(
            f"train.final.nproc: {nproc} on CUDA is not launched by the stage yet (forked ranks cannot use "
            "CUDA); use nproc: 1 or the torchrun entry point (docs/scaling.md)"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """A rank must not outlive a killed stage (it would write the checkpoint a resumed run reads)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):  # no libc: the rank still ends when its group does
            ctypes.CDLL("libc.so.6").prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


def _rank_main(
    rank: int, nproc: int, port: int, build: Any, fit: Any, out: Path, threads: int
) -> None:  # pragma: no cover - runs in the forked rank (tests check its outputs)
    import torch.distributed as dist

    from closedloop.stages.train.sync_bn import sync_batchnorm

    _die_with_parent()
    # DDP's bucket-layout note for single-channel conv weights: a performance remark, not an error
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    code = 0
    try:
        torch.set_num_threads(threads)
        os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        dist.init_process_group(BACKEND, rank=rank, world_size=nproc)
        # synchronized BatchNorm has BatchNorm's state keys: rank 0's weights load into the plain network
        net, n_sync = sync_batchnorm(build(), "cpu")
        res: FitResult = fit(net)
        if rank == 0:
            state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
            torch.save(
                {
                    "state": state,
                    "history": res.history,
                    "best_epoch": res.best_epoch,
                    "best_score": res.best_score,
                    "stopped": res.stopped,
                    "seconds": res.seconds,
                    "step_seconds": res.step_seconds,
                    "val_logits": None
                    if res.val_logits is None
                    else torch.as_tensor(np.asarray(res.val_logits)),
                    "sync_batchnorm_layers": n_sync,
                },
                out,
            )
        dist.barrier()
        dist.destroy_process_group()
    except BaseException as exc:  # noqa: BLE001 - the parent reads the exit code; say why on stderr
        print(f"train: final-fit rank {rank} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no atexit of the parent's in a fork; gloo threads may not join cleanly at exit


def fit_on_ranks(
    net: nn.Module,
    fit_kwargs: dict[str, Any],
    fit: Any,
    hp: HParams,
    *,
    nproc: int,
    out: Path,
    threads: int | None = None,
) -> tuple[nn.Module, FitResult, int]:
    """Run ``fit(net, hp=..., **fit_kwargs)`` on ``nproc`` forked ranks (``threads``, the one-process
    fit's torch threads, shared among them); load rank 0's result into ``net``.
    Returns the network, rank 0's fit result and how many BatchNorm layers were synchronized."""
    per_rank = hp.with_(batch_size=max(1, hp.batch_size // nproc))
    threads = max(1, (threads or torch.get_num_threads()) // nproc)  # the one-process fit's CPU, shared
    out.unlink(missing_ok=True)

    def build() -> nn.Module:
        return net

    def run(rank_net: nn.Module) -> FitResult:
        return fit(rank_net, hp=per_rank, **fit_kwargs)

    ctx = mp.get_context("fork")
    port = _free_port()
    procs = [
        ctx.Process(target=_rank_main, args=(r, nproc, port, build, run, out, threads), daemon=True)
        for r in range(nproc)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    codes = [p.exitcode for p in procs]
    if any(c != 0 for c in codes) or not out.is_file():
        raise StageFailedError(
            f"train: the data-parallel final fit failed on {nproc} ranks (exit codes {codes}); the epoch "
            "checkpoint is kept: `closedloop run --resume <run dir>` continues from it"
        )
    got = torch.load(out, weights_only=True)
    net.load_state_dict(got["state"])
    logits = got["val_logits"]
    res = FitResult(
        history=got["history"],
        best_epoch=int(got["best_epoch"]),
        best_score=got["best_score"],
        stopped=str(got["stopped"]),
        seconds=float(got["seconds"]),
        val_logits=None if logits is None else logits.numpy(),
        step_seconds=got["step_seconds"],
    )
    return net, res, int(got["sync_batchnorm_layers"])
