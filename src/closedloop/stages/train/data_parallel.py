"""The final fit on several ranks (``train: {final: {nproc: N}}``), launched by the stage itself.

The stage starts N processes, each joins one ``torch.distributed`` process group on a free
127.0.0.1 port (gloo on CPU, NCCL on CUDA, one GPU per rank) and runs the same :meth:`Engine.fit`,
which wraps the network in ``DistributedDataParallel`` and gives each rank every N-th example of the
same seeded permutation. The per-rank batch is the configured batch divided by N, so the global batch,
the step count and the learning-rate schedule are those of the one-process fit. BatchNorm layers are
synchronized (:func:`closedloop.stages.train.sync_bn.sync_batchnorm`, as the ``torchrun`` entry point
does); their state has BatchNorm's keys, so rank 0's weights load into the family's own network: the
saved model is the same family and loads as today.
Rank 0 writes the epoch checkpoint (the one-process fit's file: a killed run resumes from it, on any
number of ranks) and, at the end, the weights and the fit's history, which the stage loads.

How the ranks start (``final: {start: auto|fork|spawn}``): ``fork`` inherits the session (data, engine,
chosen configuration) for free; ``spawn`` starts fresh interpreters and sends them the same objects
pickled, which CUDA needs (a forked child cannot use CUDA once the parent has) and which is the only
safe start where fork is not (macOS). ``auto``: spawn on CUDA or off Linux, fork otherwise. Nothing is
saved or typed by hand either way.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import socket
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from closedloop.core.errors import ConfigError, StageFailedError
from closedloop.stages.train.engine import FitResult, HParams

StartMethod = Literal["auto", "fork", "spawn"]


def backend_for(device: str) -> str:
    """torch.distributed's backend for the ranks' device: NCCL between GPUs, gloo on CPU."""
    return "nccl" if device.startswith("cuda") else "gloo"


def start_method_for(start: StartMethod, device: str) -> Literal["fork", "spawn"]:
    """``auto``: spawn where fork cannot serve (CUDA, or a platform other than Linux), fork otherwise."""
    if start != "auto":
        return start
    return "spawn" if device.startswith("cuda") or not sys.platform.startswith("linux") else "fork"


def check_ranks(
    nproc: int, device: str, family_kind: str, start: StartMethod = "auto", gpus: int | None = None
) -> None:
    """Refuse what this launcher cannot run, before any training."""
    if nproc <= 1:
        return
    if family_kind == "trees":
        raise ConfigError(
            f"train.final.nproc: {nproc} - a tree family's boosting has no data-parallel fit here; use nproc: 1"
        )
    if not device.startswith("cuda"):
        return
    if start == "fork":
        raise ConfigError(
            "train.final.start: 'fork' with train.device cuda - a forked rank cannot use CUDA once the "
            "stage has; use start: spawn (or auto)"
        )
    gpus = torch.cuda.device_count() if gpus is None else gpus
    if nproc > gpus:
        raise ConfigError(
            f"train.final.nproc: {nproc} ranks on CUDA need one GPU each, but {gpus} GPU(s) are visible; "
            f"use nproc <= {gpus}"
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
    rank: int,
    nproc: int,
    port: int,
    net: nn.Module,
    fit: Any,
    fit_kwargs: dict[str, Any],
    hp: HParams,
    out: Path,
    threads: int,
    device: str,
    knob_modules: list[str],
) -> None:  # pragma: no cover - runs in the rank's process (tests check its outputs)
    """One rank: join the group, fit (``fit(net, hp=hp, **fit_kwargs)``), rank 0 saves the result.
    Every argument is inherited (fork) or pickled (spawn), so this is a module-level function."""
    import importlib

    import torch.distributed as dist

    from closedloop.stages.train.sync_bn import sync_batchnorm

    _die_with_parent()
    # DDP's bucket-layout note for single-channel conv weights: a performance remark, not an error
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    code = 0
    try:
        for module in knob_modules:  # a spawned rank registers the user's knobs the parent tuned
            importlib.import_module(module)
        torch.set_num_threads(threads)
        cuda = device.startswith("cuda")
        if cuda:  # one GPU per rank: the engine's "cuda" is this rank's current device
            torch.cuda.set_device(rank)
        os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        dist.init_process_group(backend_for(device), rank=rank, world_size=nproc)
        # spawn sends tensors as handles to one shared-memory copy: every rank would step the same
        # weights; each rank trains its own copy (fork's copy-on-write gives the same)
        net = copy.deepcopy(net)
        # synchronized BatchNorm has BatchNorm's state keys: rank 0's weights load into the plain network
        net, n_sync = sync_batchnorm(net, "cuda" if cuda else "cpu")
        res: FitResult = fit(net, hp=hp, **fit_kwargs)
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


def _knob_modules(hp: HParams) -> list[str]:
    """The modules defining the knobs whose values ``hp`` holds without a field of their own (a
    user's knob, named by import path): a spawned rank imports them, so the engine finds their classes
    registered there as in the parent (a forked rank has them already)."""
    from closedloop.stages.train import knobs as K

    return sorted({type(K.knob(name)).__module__ for name in hp.knobs})


def fit_on_ranks(
    net: nn.Module,
    fit_kwargs: dict[str, Any],
    fit: Any,
    hp: HParams,
    *,
    nproc: int,
    out: Path,
    threads: int | None = None,
    device: str = "cpu",
    start: StartMethod = "auto",
) -> tuple[nn.Module, FitResult, int]:
    """Run ``fit(net, hp=..., **fit_kwargs)`` on ``nproc`` ranks (``threads``, the one-process fit's
    torch threads, shared among them; ``start``: how the ranks' processes start, see the module
    docstring); load rank 0's result into ``net``.
    Returns the network, rank 0's fit result and how many BatchNorm layers were synchronized."""
    per_rank = hp.with_(batch_size=max(1, hp.batch_size // nproc))
    threads = max(1, (threads or torch.get_num_threads()) // nproc)  # the one-process fit's CPU, shared
    out.unlink(missing_ok=True)
    # torch's own context: tensors sent to spawned ranks go through torch's reducers
    import torch.multiprocessing as tmp

    ctx = tmp.get_context(start_method_for(start, device))
    port = _free_port()
    net = net.cpu()  # each rank moves its copy to its own device
    procs = [
        ctx.Process(
            target=_rank_main,
            args=(r, nproc, port, net, fit, fit_kwargs, per_rank, out, threads, device, _knob_modules(hp)),
            daemon=True,
        )
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
