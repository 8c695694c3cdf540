"""Phase 3: grow the model along the capacity ladder, no regularization, until validation loss turns up
while training loss keeps falling; pick the capacity with the best validation score."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from closedloop.models.registry import n_parameters
from closedloop.stages.train import plots
from closedloop.stages.train.engine import past_deadline
from closedloop.stages.train.outcomes import Rung, ScaleUpOutcome
from closedloop.stages.train.phases.base import Phase
from closedloop.stages.train.phases.space import unregularized
from closedloop.stages.train.session import TrainSession, rung_logits_file, selection_value

LADDER_COLUMNS = (
    "rung",
    "params",
    "n_parameters",
    "val_metric",
    "best_epoch",
    "overfits",
    "val_loss_min_epoch",
)


def rung_seconds(rung: int) -> str:
    """``ctx.timings`` label of rung ``rung``'s (1-based) fit."""
    return f"scale_up rung {rung}"


def rung_step_seconds(rung: int) -> str:
    """``ctx.timings`` label: seconds per training step of rung ``rung`` (sizes the final fit)."""
    return f"scale_up rung {rung} seconds per step"


class ScaleUp(Phase):
    name = "scale_up"
    budget_share = 0.27
    outcome = ScaleUpOutcome

    def run(self, sess: TrainSession) -> ScaleUpOutcome:
        return scale_up(sess, sess.ladder)

    def report(self, outcome: Any, timings: dict[str, float]) -> list[Any]:
        from closedloop.report.blocks import Table

        rows = [
            {k: r.get(k) for k in LADDER_COLUMNS} | {"seconds": timings.get(rung_seconds(r["rung"]))}
            for r in outcome["rungs"]
        ]
        return [Table(rows, title="Ladder")]


def overfits(history: list[dict[str, float]]) -> dict[str, Any]:
    """Validation loss turned up (>= 5% above its minimum, minimum not in the last two epochs) while
    training loss kept falling."""
    vl = [r.get("val_loss", math.nan) for r in history]
    tl = [r["train_loss"] for r in history]
    if len(vl) < 3 or not all(math.isfinite(v) for v in vl):
        return {"overfits": False, "val_loss_min_epoch": None}
    i = int(np.argmin(vl))
    turned_up = i < len(vl) - 2 and vl[-1] > vl[i] * 1.05
    train_falls = tl[-1] < tl[i]
    return {
        "overfits": bool(turned_up and train_falls),
        "val_loss_min_epoch": i + 1,
        "val_loss_min": vl[i],
        "val_loss_last": vl[-1],
        "train_loss_at_min": tl[i],
        "train_loss_last": tl[-1],
    }


def scale_up(sess: TrainSession, rungs: list[dict[str, Any]]) -> ScaleUpOutcome:
    cfg, eng = sess.cfg, sess.engine
    hp = unregularized(sess, cfg.ladder_epochs or 2)
    rows: list[Rung] = []
    runs: dict[str, list[dict[str, float]]] = {}
    deadline = sess.deadline("scale_up")
    for r, params in enumerate(rungs):
        # a rung costs at least a step and a validation pass: none is started that would end late
        if r > 0 and past_deadline(time.time(), deadline, sess.least_fit_seconds()):
            sess.decide(
                "scale_up",
                f"time budget for the ladder spent; stopping before rung {r + 1}",
                {"rung": params},
            )
            break
        seed = sess.seed("scale_up", "rung", r)
        net = sess.build(params, seed)
        res = eng.fit(
            net,
            sess.train,
            sess.val,
            hp,
            seed=seed,
            deadline=deadline,  # the first rung too: cut, it still scores what it trained
            label=f"train/scale_up/rung{r + 1}",
        )
        n_par = n_parameters(net)  # after the fit: a tree ensemble's size is its leaves
        sess.note_time(rung_seconds(r + 1), round(res.seconds, 1))
        sess.note_cut("scale_up", f"rung {r + 1}", res, hp.epochs)
        if res.step_seconds is not None:
            sess.note_time(rung_step_seconds(r + 1), res.step_seconds)
        sess.note_fit(res)
        name = f"rung {r + 1}: " + ", ".join(f"{k}={v}" for k, v in params.items())
        runs[name] = res.history
        sess.curves[name] = res.history
        value = selection_value(eng, res.best_score)
        sess.save_logits(rung_logits_file(r), res.val_logits)
        of = overfits(res.history)
        row = Rung(
            rung=r + 1,
            params=params,
            n_parameters=n_par,
            val_metric=value,
            score=res.best_score,
            best_epoch=res.best_epoch,
            **of,
        )
        rows.append(row)
        sess.record(
            f"ladder rung {r + 1}", {"model": params, **hp.as_dict()}, {sess.task.primary_metric: value}
        )
        if of["overfits"]:
            sess.decide(
                "scale_up",
                f"rung {r + 1} ({n_par:,} parameters) overfits: validation loss rose from "
                f"{of['val_loss_min']:.3f} (epoch {of['val_loss_min_epoch']}) to {of['val_loss_last']:.3f} while "
                f"training loss fell from {of['train_loss_at_min']:.3f} to {of['train_loss_last']:.3f}; "
                "the ladder stops here",
                row.model_dump(),
            )
            break
    plots.curves(
        sess.figure(
            "ladder.png", "Capacity ladder: train (dashed) and validation (solid) loss per rung", "scale_up"
        ),
        runs,
        "Capacity ladder",
        eng.metric,
    )
    scores = [row.score if row.score is not None else -math.inf for row in rows]
    best = int(np.argmax(scores))  # argmax takes the first (smallest) rung on ties
    chosen = rows[best]
    any_over = any(row.overfits for row in rows)
    sess.decide(
        "scale_up",
        f"capacity: rung {chosen.rung} ({chosen.n_parameters:,} parameters, "
        f"{', '.join(f'{k}={v}' for k, v in chosen.params.items())}) has the best validation "
        f"{sess.task.primary_metric} ({chosen.val_metric:.4f}) among {len(rows)} rung(s)"
        + (
            ""
            if any_over
            else "; no rung overfitted within the ladder - a larger ladder or more epochs may help"
        ),
        {"rungs": [row.model_dump(exclude={"score"}) for row in rows]},
    )
    return ScaleUpOutcome(rungs=rows, chosen=best, params=chosen.params, any_overfits=any_over)
