"""The step loop of fixed recipes (:func:`train_steps`) and its epoch walk (:func:`fit_epochs`).

Five recipes train a network with no budget, no validation and no checkpoint, and share one step
loop; each supplies only what differs (its optimizer and schedule, its loss on a batch, what happens
between two steps):

- over epochs of a seeded permutation (:func:`fit_epochs`): the audit's cross-fitted CNN
  (:mod:`closedloop.stages.audit.quick_cnn`), the export's distilled student and pruned fine-tune
  (:mod:`closedloop.stages.export.distill`) and adapt's fine-tune (:mod:`closedloop.adapt.finetune`);
- the train stage's two one-purpose loops (:class:`closedloop.stages.train.engine.Engine`): the sanity
  check's overfit of one fixed batch (a kill point before each step, a stop rule on the loss and the
  deadline) and the LR range test (random batches, the learning rate raised before each step, a stop
  once the loss diverges).

Why the train stage's budgeted fit (``Engine.fit``) is the second loop and not these hooks: between
two steps it reads the deadline and predicts the next step and the scoring of a part-epoch, re-plans
its schedule halfway through an epoch, clips gradients between the backward pass and the step, times
each step for the final plan, and at an epoch's end scores validation for early stopping and pruning,
keeps the best epoch's weights, averages BatchNorm buffers across data-parallel ranks (DDP wraps the
network) and checkpoints its generator and the global RNG so a killed run resumes bit for bit. Each of
these would be a hook with no second user. The recipes' own choices (partial last batches, Adam without
a schedule, the audit's torch one-cycle schedule, BatchNorm frozen in adapt) are what their published
figures were measured with (docs/results/audit_label_noise*.txt, shift_recovery*.txt): the same seeds
give the same weights through this loop as through the loops it replaced
(``tests/train/test_recipe_loop.py``, ``tests/train/test_train_step_loops.py``; before and after:
benchmarks/bench_recipe_identity.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch

B = TypeVar("B")
"""What one step trains on (row positions, a step number, a learning rate and positions, ...)."""


def train_steps(
    batches: Iterable[B],
    *,
    optimizer: Any,
    batch_loss: Callable[[B], torch.Tensor | None],
    scheduler: Any = None,
) -> int:
    """The one step loop of every fixed recipe: for each batch ``batch_loss(batch)``, gradients reset
    to ``None``, ``loss.backward()``, ``optimizer.step()`` and ``scheduler.step()`` when there is one;
    returns the steps taken.

    What differs between recipes is outside the step: ``batches`` (any iterable, usually a generator:
    what it does between two of its items runs between two steps, e.g. a kill point, a learning rate
    set for the next step, or a stop rule read after a step by returning), and ``batch_loss``, which
    may return ``None`` to stop before the step (a stop rule on the loss just computed).
    """
    steps = 0
    for batch in batches:
        loss = batch_loss(batch)
        if loss is None:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        steps += 1
    return steps


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
    """Train for ``epochs`` passes over ``n`` rows (:func:`train_steps`); returns the optimizer steps taken.

    Each epoch calls ``on_epoch(epoch)`` first (a kill point, a per-epoch draw), then draws one
    permutation of ``range(n)`` from ``generator`` and walks it in batches of ``batch_size`` (the last
    one partial; batches of fewer than ``min_batch`` rows are skipped); each batch is one step with
    ``loss = batch_loss(positions)``. The caller sets train or eval mode, and which parameters require
    gradients.
    """

    def positions() -> Iterator[torch.Tensor]:
        for epoch in range(epochs):
            if on_epoch is not None:
                on_epoch(epoch)
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                if len(idx) >= min_batch:
                    yield idx

    return train_steps(positions(), optimizer=optimizer, batch_loss=batch_loss, scheduler=scheduler)
