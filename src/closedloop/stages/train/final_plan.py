"""How much final fit the time left buys. The final phase has its share of the budget like the others:
before fitting, it compares the time the chosen epochs and ensemble members would take (the latest
tuning trial's median seconds per training step times the final fit's steps) with the time left to
its deadline, less a reserve for calibration and the test evaluation, and drops ensemble members
first (a luxury), then epochs (never below one), saying in the decision log what it cut and why.

That first plan is a guess: under load a step's wall time is heavy-tailed and moves with the load
(benchmarks/bench_train_resume.py measured a tuning trial's steps at median 0.08 s, mean 0.33 s,
then the final fit's at 1.4 s a minute later), so no figure measured before the fit sizes it well.
The fit therefore re-plans itself after each whole epoch, and halfway through the first epoch it
trains in this process, from its own epochs' wall time
(:func:`replanner`, ``Engine.fit(replan=...)``): the epochs left are what the time left to its
deadline buys, never more than asked, and the learning-rate schedule's remaining part is spread over
them, so it still ends at an epoch's end. A re-plan can shorten a schedule or lengthen one that has
not ended, never revive one that has: the first plan is made with the median step (the typical one,
optimistic when the tail is heavy), since a plan too long costs nothing (the first re-plan shortens
it) while a plan too short leaves time unused.

The plan is saved in ``work/final_plan.json`` before the first fit, and every re-plan in the fit's
checkpoint: a final fit killed and resumed keeps the schedule its checkpoints were trained under,
so a resumed run ends like an uninterrupted one.

The final fit never trains more epochs than tuning chose, so on a fast moment its share can be more
than it can use (session 9 measured a fit of all its tuned epochs that ended with 89 % of its share
unused, the run at 82 % of its budget). The tune phase therefore borrows the part of the final's share
that the final fit is not expected to need (:func:`tune_deadline`): before each trial it estimates the
final fit (the epochs of the best trial so far, every member, at the latest fit's mean step: a long
fit pays the heavy tail of step times, so not the median) and may run until the final deadline less
the reserve and :data:`LEND_MARGIN` times that estimate. If a later trial wins with more epochs, or
the load rises, the final fit's plan and re-plans shorten it to its deadline, as before.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

from pydantic import BaseModel, ValidationError

from closedloop.core.io import to_json, write_text_atomic
from closedloop.stages.train.heldout import fit_rows
from closedloop.stages.train.outcomes import ScaleUpOutcome
from closedloop.stages.train.phases.cross_validate import runs_folds
from closedloop.stages.train.phases.scale_up import rung_step_seconds
from closedloop.stages.train.session import LATEST_STEP_SECONDS, TRIAL_STEP_SECONDS, TrainSession

PLAN_FILE = "final_plan.json"

RESERVE_SECONDS = "final reserve seconds"
"""``ctx.timings`` label: the reserve kept for the work after the final fit when it was planned
(:meth:`TrainSession.reserve_estimate`), to set beside :data:`EVALUATION_SECONDS`."""
PLAN_EPOCH_SECONDS = "final plan seconds per epoch"
"""``ctx.timings`` label: the first plan's estimate of an epoch (:func:`epoch_seconds`), to set
beside :data:`FIT_EPOCH_SECONDS`."""
FIT_EPOCH_SECONDS = "final fit seconds per epoch"
"""``ctx.timings`` label: the final fit's own wall seconds per epoch at its latest re-plan."""
EVALUATION_SECONDS = "final evaluation seconds"
"""``ctx.timings`` label: what follows the final fit (the test evaluation, its bootstrap intervals,
the baseline's refit, the selection bias)."""


LEND_MARGIN = 1.25
"""The final fit's expected seconds times this are kept for it when tuning borrows the rest of the
final phase's share: enough for a mean step that grows by a quarter before the final fit; a fit that
needs more is shortened to its deadline by its plan and re-plans."""
LENT_SECONDS = "tune seconds borrowed from the final share"
"""``ctx.timings`` label: how far past its own deadline the tune phase ran on the final's share."""


class FinalPlan(BaseModel):
    """The final fit's size, as chosen before it started."""

    epochs: int
    members: int
    asked_epochs: int
    asked_members: int
    seconds_per_epoch: float | None
    """Estimated for the final fit's rows (None: no earlier phase measured one)."""
    why: str | None = None
    """What was cut and why (None: nothing was)."""

    @property
    def shrunk(self) -> bool:
        return (self.epochs, self.members) != (self.asked_epochs, self.asked_members)


def epoch_seconds(sess: TrainSession, n_rows: int, batch_size: int) -> float | None:
    """Seconds one epoch of ``n_rows`` rows in batches of ``batch_size`` takes, for the first plan:
    the latest measured typical (median) training step of the chosen network (the last tuning
    trial's, under the load of the moment; else the chosen capacity rung's; a cut fit measures it
    as well as a whole one) times the steps of an epoch (None: no fit of it took a step here). A
    budget input only: it never enters an artifact of a run the budget does not bind."""
    ladder = sess.get(ScaleUpOutcome)
    if ladder is None or not ladder.rungs:
        return None
    step_s = sess.ctx.timings.get(TRIAL_STEP_SECONDS) or sess.ctx.timings.get(
        rung_step_seconds(ladder.rung.rung)
    )
    if not step_s:
        return None
    return float(step_s) * max(1, n_rows // max(1, min(batch_size, n_rows)))


def final_rows(sess: TrainSession) -> int:
    """Rows the final fit trains on: train, plus the validation rows not held out (train+val)."""
    extra = 0 if sess.cfg.final_fit == "train" else len(fit_rows(sess.heldout))
    return len(sess.train) + extra


def final_need(sess: TrainSession, epochs: int) -> float | None:
    """Seconds the final fit of ``epochs`` epochs (every ensemble member) is expected to take now: the
    latest fit's mean step (a long fit pays the heavy tail of step times) times the steps of an epoch
    of :func:`final_rows`, plus a validation pass per epoch when it fits on train only (None: no fit
    took two steps yet). A budget input only."""
    step_s = sess.ctx.timings.get(LATEST_STEP_SECONDS)
    if not step_s:
        return None
    n = final_rows(sess)
    per_epoch = float(step_s) * max(1, n // max(1, min(sess.base_hp.batch_size, n)))
    if sess.cfg.final_fit == "train":
        per_epoch += float(sess.engine.eval_row_seconds or 0.0) * len(sess.val)
    return per_epoch * max(1, epochs) * sess.cfg.final_seeds


def tune_deadline(sess: TrainSession, epochs: int) -> float:
    """``time.time()`` by which tuning stops when the final fit will train ``epochs`` epochs: its own
    deadline, or later when the final phase's share holds more than that fit needs (the final deadline
    less the reserve and :data:`LEND_MARGIN` times :func:`final_need`). Only when the final phase comes
    after tuning with nothing trained in between, in one process, with the stage's reserve (not a k-fold
    protocol's cross-validation, a family of a family list, or a data-parallel final fit, whose step
    this process does not measure)."""
    own = sess.deadline("tune")
    order = list(sess.budget)
    between = order[order.index("tune") + 1 : -1] if "tune" in order else []
    if (
        order[-1:] != ["final"]
        or any(sess.budget[p] for p in between)  # a phase with a share of its own runs in between
        or runs_folds(sess)  # the cross-validation shares tune's deadline and trains after it
        or not sess.final_reserve
        or sess.cfg.final.nproc > 1
    ):
        return own
    need = final_need(sess, epochs)
    if need is None:
        return own
    return max(own, sess.deadline("final") - sess.reserve() - LEND_MARGIN * need)


def note_borrowed(sess: TrainSession, epochs: int, ran_until: float) -> None:
    """When tuning ran past its own deadline on the final's share (under a deadline ``ran_until`` of
    :func:`tune_deadline`), say so: only a run the budget binds does (a run ended by its trial count
    finishes before its own deadline, and its log is unchanged)."""
    over = min(time.time(), ran_until) - sess.deadline("tune")
    if over <= 0:
        return
    sess.note_time(LENT_SECONDS, over)
    need = final_need(sess, epochs) or 0.0
    left = sess.deadline("final") - sess.reserve() - time.time()
    now = (
        f"at the latest fit's mean step they take ~{need:.2g} s, and {left:.0f} s are left for them"
        if need * LEND_MARGIN <= left
        else f"the load has risen since: at the latest fit's mean step they now take ~{need:.2g} s, "
        f"more than the {max(left, 0.0):.0f} s left, so the final fit's plan shortens them to its deadline"
    )
    sess.decide(
        "tune",
        f"tuning ran {over:.0f} s into the final phase's share, which the final fit's {epochs} tuned "
        f"epoch(s) x {sess.cfg.final_seeds} member(s) were not expected to need when its last trial "
        f"started ({LEND_MARGIN:g} x their expected time kept for them); {now}",
        {"borrowed_s": round(over, 1), "final_epochs": epochs, "final_need_s": round(need, 2)},
    )


def replanner(
    sess: TrainSession, plan: FinalPlan, deadline: float, members: int
) -> Callable[[float, float], int]:
    """``Engine.fit``'s ``replan`` for the first ensemble member: after ``done`` epochs (a fraction
    halfway through one) at ``epoch_s`` wall seconds each (the fit's own, as measured now), the
    epochs that the time left to ``deadline`` buys, shared equally with the ``members - 1`` members
    after it (which train as many epochs), rounded to the nearest whole epoch (the deadline cuts one
    that runs long); at most the asked epochs (the fit keeps at least the epoch it is in, and one
    more after a whole epoch whose schedule has not ended)."""

    def replan(done: float, epoch_s: float) -> int:
        left = max(0.0, deadline - time.time())
        n = round((left / max(epoch_s, 1e-6) + done) / max(1, members))
        sess.note_time(FIT_EPOCH_SECONDS, epoch_s)
        return min(plan.asked_epochs, max(1, n))  # the fit keeps at least the epoch it is in

    return replan


def fit_deadline(sess: TrainSession) -> float:
    """``time.time()`` by which the final fit stops (mid-epoch if the estimate was wrong): the final
    deadline less :meth:`TrainSession.reserve` for the evaluation after it; relative to the session's
    clock, so a resumed attempt has what the interrupted ones left."""
    return sess.deadline("final") - sess.reserve()


def plan_final(sess: TrainSession, epochs: int, members: int, n_rows: int, batch_size: int) -> FinalPlan:
    """The saved plan of an interrupted attempt, or a new one fitted to the time left."""
    path = sess.work / PLAN_FILE
    if path.is_file():
        try:
            plan = FinalPlan.model_validate(json.loads(path.read_text(encoding="utf-8")))
            if (plan.asked_epochs, plan.asked_members) == (epochs, members):
                return _announce(sess, plan)
        except (ValueError, ValidationError):  # damaged: never read half of it, plan again
            pass
    reserve = sess.reserve_estimate()
    sess.note_time(RESERVE_SECONDS, reserve.seconds)
    left = sess.deadline("final") - reserve.seconds - time.time()
    per_epoch = epoch_seconds(sess, n_rows, batch_size)
    if per_epoch is not None:
        sess.note_time(PLAN_EPOCH_SECONDS, per_epoch)
    e, m, why = epochs, members, None
    if per_epoch is not None and epochs * members * per_epoch > left:
        need = epochs * members * per_epoch
        m = max(1, min(members, math.floor(left / (epochs * per_epoch))))
        if m == 1 and epochs * per_epoch > left:
            e = max(1, min(epochs, math.floor(left / per_epoch)))
        cut = [] if (m, e) != (members, epochs) else ["nothing left to cut (one member, one epoch)"]
        if m < members:
            cut.append(f"ensemble members {members} -> {m}")
        if e < epochs:
            cut.append(f"epochs {epochs} -> {e}")
        why = (
            f"the time budget left for the final fit ({max(left, 0):.0f} s, keeping "
            f"{reserve.seconds:.1f} s for calibration and the test evaluation, {reserve.how}) is "
            f"short of the {need:.0f} s that {members} member(s) x {epochs} epoch(s) would take at "
            f"~{per_epoch:.2g} s per epoch: " + ", ".join(cut) + "; the fit stops at its deadline"
        )
    plan = FinalPlan(
        epochs=e,
        members=m,
        asked_epochs=epochs,
        asked_members=members,
        seconds_per_epoch=per_epoch,
        why=why,
    )
    write_text_atomic(path, to_json(plan.model_dump()))
    return _announce(sess, plan)


def _announce(sess: TrainSession, plan: FinalPlan) -> FinalPlan:
    if plan.why:
        sess.decide(
            "final",
            plan.why,
            {
                "epochs": plan.epochs,
                "members": plan.members,
                "asked_epochs": plan.asked_epochs,
                "asked_members": plan.asked_members,
            },
        )
    return plan
