"""The short training loop of fixed recipes: epochs over a seeded permutation, a loss per batch, a step.

Three recipes train a network for a fixed number of epochs with no budget, no validation and no
checkpoint: the audit's cross-fitted CNN (:mod:`closedloop.stages.audit.quick_cnn`), the export's
distilled student and pruned fine-tune (:mod:`closedloop.stages.export.distill`) and adapt's fine-tune
(:mod:`closedloop.adapt.finetune`). Each supplies only what differs (its optimizer and schedule, its
loss on a batch, what it draws at an epoch's start); :func:`fit_epochs` owns the loop.

Why the train stage's engine (:mod:`closedloop.stages.train.engine`) is a second loop and not these
hooks: it is the budgeted one. It stops within one batch of a deadline and scores the part-epoch,
checkpoints every epoch with its generator and the global RNG so a killed run resumes bit for bit,
scores validation each epoch for early stopping and pruning, keeps the best epoch's weights, shards
batches across data-parallel ranks, drops the last partial batch (its learning-rate schedule counts
whole steps) and seeds the global RNG per fit. None of that applies to a fixed recipe, and the
recipes' own choices (partial last batches, Adam without a schedule, the audit's torch one-cycle
schedule, BatchNorm frozen in adapt) are what their published figures were measured with
(docs/results/audit_label_noise*.txt, shift_recovery*.txt): the same seeds give the same weights
through this loop as through the three loops it replaced (``tests/train/test_recipe_loop.py``; the three recipes before and after: benchmarks/bench_recipe_identity.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def fit_epochs(
    n: int,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    optimizer: Any,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    scheduler: Any = None,
    on_epoch: Callable[[int], None] | None = None,
    min_batch: int = 1,
) -> int:
    """Train for ``epochs`` passes over ``n`` rows; returns the optimizer steps taken.

    Each epoch calls ``on_epoch(epoch)`` first (a kill point, a per-epoch draw), then draws one
    permutation of ``range(n)`` from ``generator`` and walks it in batches of ``batch_size`` (the last
    one partial; batches of fewer than ``min_batch`` rows are skipped). For each batch:
    ``loss = batch_loss(positions)``, gradients reset to ``None``, ``loss.backward()``,
    ``optimizer.step()`` and ``scheduler.step()`` when there is one. The caller sets train or eval
    mode, and which parameters require gradients.
    """
    steps = 0
    for epoch in range(epochs):
        if on_epoch is not None:
            on_epoch(epoch)
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < min_batch:
                continue
            loss = batch_loss(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            steps += 1
    return steps
