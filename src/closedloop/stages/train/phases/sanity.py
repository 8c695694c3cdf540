"""Phase 1: overfit one small batch to (near) zero loss; stop with a diagnosis if the model cannot."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from closedloop.core.errors import StageFailedError
from closedloop.stages.train import plots
from closedloop.stages.train.engine import TensorSet
from closedloop.stages.train.outcomes import SanityOutcome
from closedloop.stages.train.phases.base import Phase
from closedloop.stages.train.session import TrainSession

FIGURE_SECONDS = "sanity figure seconds"
"""``ctx.timings`` label: drawing the sanity figure, work after the loop that no deadline cuts."""


class Sanity(Phase):
    name = "sanity"
    budget_share = 0.03
    outcome = SanityOutcome

    def run(self, sess: TrainSession) -> SanityOutcome:
        # the largest rung: can this family learn at all?
        return sanity(sess, sess.ladder[-1])


def sanity(sess: TrainSession, params: dict) -> SanityOutcome:
    """Fit ``params``' network on one fixed batch of ``cfg.sanity_batch`` training examples."""
    cfg, eng = sess.cfg, sess.engine
    # the run seed itself (a function of the run's identity alone, like every other phase's seed):
    # kept from before derived seeds, as the sanity targets of small test configs were set with it
    rng = np.random.default_rng(sess.ctx.seed)
    idx = rng.permutation(len(sess.train))[: cfg.sanity_batch]
    batch = sess.train.subset(idx)
    net = sess.build(params, sess.ctx.seed)
    # a grace as long as its own share (proportional to the budget, so a short budget stays short):
    # the check is cheap, and a slow machine should not make it inconclusive
    deadline = sess.deadline("sanity") + Sanity.budget_share * sess.budget_s
    steps = cfg.sanity_steps or 1
    losses = eng.overfit_batch(
        net, batch, steps=steps, lr=cfg.sanity_lr, deadline=deadline, label="train/sanity"
    )
    target = None
    if losses:
        target = max(0.05 * losses[0], 0.02) if sess.task.problem_type != "regression" else 0.05 * losses[0]
    # the loop stopped before its steps with a finite loss above the target: the clock stopped it
    cut = bool(
        losses
        and target is not None
        and len(losses) < steps
        and all(math.isfinite(v) for v in losses)
        and losses[-1] > target
        and time.time() > deadline
    )
    with sess.ctx.timed(FIGURE_SECONDS):  # the first figure of the stage (the plotting library loads)
        plots.sanity(sess.figure("sanity.png", "Training loss on one fixed batch", "sanity"), losses)
    ok = bool(losses and math.isfinite(losses[-1]) and target is not None and min(losses) <= target)
    if not ok and cut and target is not None:
        # the clock, not the model, ended it: inconclusive, not failed (a failure stops the run)
        trend = "falling" if min(losses) < losses[0] else "not falling yet"
        sess.decide(
            "sanity",
            f"the time budget cut the one-batch check short after {len(losses)} step(s), before the target "
            f"(loss {losses[0]:.3g} -> {min(losses):.3g}, target {target:.3g}, {trend}): inconclusive; "
            "continuing",
            {"batch_size": len(idx), "steps": len(losses), "target_loss": target, "cut_by_time": True},
        )
        return SanityOutcome(
            ok=False,
            losses=losses,
            batch_size=len(idx),
            steps=len(losses),
            initial_loss=losses[0],
            final_loss=losses[-1],
            target_loss=target,
            cut_by_time=True,
        )
    evidence = {
        "batch_size": len(idx),
        "steps": len(losses),
        "initial_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "target_loss": target,
    }
    if not ok:
        diagnosis = diagnose(sess, net, batch, losses)
        sess.decide(
            "sanity",
            "FAILED: the model cannot fit one small batch; stopping",
            {**evidence, "diagnosis": diagnosis},
        )
        raise StageFailedError(
            f"train: sanity check failed - the model could not overfit a batch of {len(idx)} training examples "
            f"(loss {evidence['initial_loss']:.4g} -> {evidence['final_loss']:.4g} in {len(losses)} steps, "
            f"target {target:.3g}). Diagnosis: {diagnosis}"
        )
    sess.decide(
        "sanity",
        f"the model fits one batch of {len(idx)} (loss {losses[0]:.3g} -> {losses[-1]:.3g} in {len(losses)} steps)",
        evidence,
    )
    return SanityOutcome(ok=True, losses=losses, **evidence)


def diagnose(sess: TrainSession, net: torch.nn.Module, batch: TensorSet, losses: list[float]) -> str:
    """Name the most likely cause when one batch cannot be fitted."""
    eng = sess.engine
    x = eng.to_input(batch.x, None, None)
    reasons = []
    if losses and not all(math.isfinite(v) for v in losses):
        reasons.append(
            "the loss became non-finite: inputs contain NaN/inf or the learning rate is far too high"
        )
    if float(x.float().std()) < 1e-6:
        reasons.append(
            "every input in the batch is identical after preprocessing (check image loading/normalization)"
        )
    if sess.task.problem_type in ("binary", "multiclass", "ordinal"):
        n_cls = len(np.unique(np.asarray(batch.y_np).reshape(len(batch), -1)[:, 0]))
        if n_cls < 2:
            reasons.append("the batch holds a single class (labels may be constant or mis-read)")
    net.eval()
    with torch.no_grad():
        out = net(x).float()
    if float(out.std(0).max()) < 1e-4:
        reasons.append(
            "the network's outputs do not depend on its input (a model bug: detached features, "
            "a zero/frozen layer, or an output that ignores x)"
        )
    if not any(p.requires_grad for p in net.parameters()):
        reasons.append("the network has no trainable parameters")
    if not reasons:
        reasons.append(
            "the loss decreases too slowly: the model may be too small, the learning rate too low, or the "
            "labels may not match the inputs (check the label column and preprocessing)"
        )
    return "; ".join(reasons)
