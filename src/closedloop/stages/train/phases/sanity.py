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
from closedloop.stages.train.session import DRAW_SECONDS, TrainSession

FIGURE_SECONDS = "sanity figure seconds"
"""``ctx.timings`` label: drawing the sanity figure, work after the loop that no deadline cuts."""
BUILD_SECONDS = "sanity build seconds"
"""``ctx.timings`` label: the work before the loop (the plotting library's load, a measured test
draw, the network's build), which no deadline cuts."""
GIVEN_SECONDS = "sanity given seconds"
"""``ctx.timings`` label: the seconds the sanity check was given, its share or, when more, its least
cost measured at run time (the build, one step and its figure)."""


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
    started = time.time()
    with sess.ctx.timed(BUILD_SECONDS):
        draw_s = plots.warm()  # the plotting library loads here, before the loop, not after it
        net = sess.build(params, sess.ctx.seed)
    sess.note_time(DRAW_SECONDS, draw_s)
    # no grace: the loop stops when its next step would end past the share's end less the figure's
    # measured draw, so the phase ends by its deadline; it always takes one step, so when the build
    # and one step cost more than the share (a short budget on a loaded machine), it takes that
    share_end = sess.deadline("sanity")
    steps = cfg.sanity_steps or 1
    loop_t0 = time.time()
    losses = eng.overfit_batch(
        net, batch, steps=steps, lr=cfg.sanity_lr, deadline=share_end - draw_s, label="train/sanity"
    )
    least = (loop_t0 - started) + (time.time() - loop_t0) / max(1, len(losses)) + draw_s
    given = max(share_end - started, least)
    sess.note_time(GIVEN_SECONDS, given)
    target = None
    if losses:
        target = max(0.05 * losses[0], 0.02) if sess.task.problem_type != "regression" else 0.05 * losses[0]
        target += loss_floor(batch, sess.task.problem_type)
    if (
        target is not None
        and cfg.sanity_extend > 1
        and len(losses) == steps
        and still_falling(losses, target, steps * (cfg.sanity_extend - 1))
    ):
        # all its steps taken, above the target and still falling: run it again from the start (the same
        # seed, so the same first steps) with more steps, within the same share of the budget
        before = (len(losses), losses[-1])
        steps *= cfg.sanity_extend
        net = sess.build(params, sess.ctx.seed)
        losses = eng.overfit_batch(
            net,
            batch,
            steps=steps,
            lr=cfg.sanity_lr,
            deadline=share_end - draw_s,
            label="train/sanity_extend",
        )
        sess.decide(
            "sanity",
            f"the loss was still falling at the check's last step ({before[0]} steps, loss {before[1]:.3g}, target "
            f"{target:.3g}): ran it again with up to {steps} steps (sanity_extend {cfg.sanity_extend})",
            {"steps_before": before[0], "loss_before": before[1], "steps_allowed": steps},
        )
    # the loop stopped before its steps with a finite loss above the target: the clock stopped it
    # (the only other ways out of the loop are a non-finite loss and the target reached)
    cut = bool(
        losses
        and target is not None
        and len(losses) < steps
        and all(math.isfinite(v) for v in losses)
        and losses[-1] > target
    )
    if cut and least > share_end - started:
        sess.decide(
            "sanity",
            f"its share of the budget ({max(share_end - started, 0):.1f} s) is less than its least cost "
            f"measured now ({least:.1f} s: the network's build and the plotting library "
            f"{loop_t0 - started:.1f} s, one step {least - (loop_t0 - started) - draw_s:.1f} s, the "
            f"figure {draw_s:.1f} s): it took {len(losses)} step(s), and the phases after it have what is left",
            {"share_s": round(share_end - started, 2), "least_s": round(least, 2)},
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


def still_falling(losses: list[float], target: float, more_steps: int) -> bool:
    """Above ``target`` at the end, but falling fast enough to reach it within ``more_steps`` further
    steps at the rate of its last quarter (the last quarter's lowest loss against the quarter before's,
    carried on geometrically): still learning, not stuck.

    >>> still_falling([1.0, 0.5, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05], 0.01, 24)
    True
    >>> still_falling([1.0, 0.5, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2], 0.01, 24)
    False
    """
    q = max(1, len(losses) // 4)
    if len(losses) < 2 * q or not all(math.isfinite(v) for v in losses) or min(losses) <= target:
        return False
    last, before = min(losses[-q:]), min(losses[-2 * q : -q])
    if not 0 < last < before:
        return False
    quarters = math.log(target / last) / math.log(last / before)  # quarters of steps to the target
    return quarters * q <= more_steps


def loss_floor(batch: TensorSet, problem_type: str) -> float:
    """The least mean cross-entropy any model reaches on ``batch`` (binary / multi-class; else 0): rows
    with identical inputs and different labels (a table that repeats rows, e.g. nwtco) cannot be told
    apart, so each group of identical rows keeps its labels' entropy. Missing values count as equal."""
    if problem_type not in ("binary", "multiclass") or batch.x.dtype == torch.uint8:
        return 0.0
    x = np.nan_to_num(batch.x.numpy().reshape(len(batch), -1), nan=np.inf)
    _, group = np.unique(x, axis=0, return_inverse=True)
    y = np.asarray(batch.y_np).reshape(len(batch), -1)[:, 0].astype(np.int64)
    counts = np.zeros((int(group.max()) + 1, int(y.max()) + 1))
    np.add.at(counts, (group.reshape(-1), y), 1.0)
    q = counts / counts.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(q > 0, q * np.log(q), 0.0).sum(1)
    return float((counts.sum(1) * h).sum() / len(batch))


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
