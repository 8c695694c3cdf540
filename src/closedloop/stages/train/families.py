"""A family choice inside one run (``train: {family: [lgbm, mlp]}``).

Each family is a candidate like any other configuration: it goes through the stage's method (sanity,
beat the baseline, capacity ladder, tuning, cross-validation) on the same splits, in a session of its own
whose scratch files live in ``work/family_<name>/`` and figures in ``figures/<name>/``. The families share
the selection part of the time budget (every phase but the last): each one gets what is left of it
divided by the families still to run, so time a fast family leaves rolls over to the next. Every
configuration of every family goes into the validation ledger (its description starts with the family),
and the selection bias of the winner is estimated over all families' candidates.

The family is chosen on the same evidence each family's own choice used: the mean out-of-fold metric of
its cross-validated choice when every family was cross-validated (the task's k-fold protocol, small
data), else its chosen configuration's validation score; ties go to the family listed first. The decision
log and the report say which family won and by how much (a paired bootstrap of winner minus runner-up on
those same predictions: optimistic, since it is the data the choice was made on). Only the winner runs the
last phase (final fit, calibration, the one test opening), with the stage's whole budget as its clock.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from closedloop.artifacts.training import FamilyChoice, FamilyRow
from closedloop.core.errors import ConfigError, StageFailedError
from closedloop.core.io import to_json, write_text_atomic
from closedloop.core.stage import RunContext
from closedloop.models.trained import logits_to_proba
from closedloop.stages.train.clock import BudgetClock
from closedloop.stages.train.driver import budget_table, run_phases
from closedloop.stages.train.outcomes import CrossValidateOutcome, TunedConfig, TuneOutcome
from closedloop.stages.train.session import TrainSession

if TYPE_CHECKING:
    from closedloop.stages.train.phases.base import Phase

ALLOTMENTS_FILE = "family_budgets.json"
"""``work/``: each family's share of the selection budget, fixed when it starts (a resumed run keeps it)."""


@dataclass
class FamilyContext(RunContext):
    """The stage's context for one family of a family list: its own work and figure folders and its own
    timings (a family's epoch and rung times size its own phases); ledgers, seed and test custody shared."""

    family: str = ""

    @property
    def work_dir(self) -> Path:
        p = self.stage_dir / "work" / f"family_{self.family}"
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def figures_dir(self) -> Path:
        p = self.stage_dir / "figures" / self.family
        p.mkdir(parents=True, exist_ok=True)
        return p

    def record_validation(self, description: str, params: dict[str, Any], metrics: dict[str, Any]) -> None:
        super().record_validation(f"{self.family}: {description}", {"family": self.family, **params}, metrics)


def family_context(ctx: RunContext, family: str) -> FamilyContext:
    base = {f.name: getattr(ctx, f.name) for f in fields(RunContext)}
    return FamilyContext(**{**base, "timings": {}}, family=family)


def chosen_config(sess: TrainSession) -> TunedConfig:
    cv = sess.get(CrossValidateOutcome)
    tune = sess.get(TuneOutcome)
    if cv is not None:
        return cv.tuned
    if tune is None:
        raise StageFailedError(f"train: family {sess.family} ended without a tuned configuration")
    return tune.config()


def _cv_mean(sess: TrainSession) -> float | None:
    cv = sess.get(CrossValidateOutcome)
    if cv is None or not cv.candidates or cv.chosen is None:
        return None
    return next((r.cv_mean for r in cv.candidates if r.candidate == cv.chosen), None)


def run_families(
    make: Any, phases: list[Phase], families: list[str], ctx: RunContext, budget_s: float
) -> tuple[TrainSession, FamilyChoice]:
    """Run the selection phases for each family, choose one, run the last phase for it alone.
    ``make(ctx, budget, family)`` builds a family's session. Returns the winner's session (its
    decisions, curves, figures and configuration count are the whole stage's) and the choice."""
    select, last = phases[:-1], phases[-1]
    full = budget_table(phases)
    share = 1.0 - full[last.name]
    sub_budget = {p.name: full[p.name] / share for p in select}
    from closedloop.stages.train.tree_engine import FamilyCannotTrain

    # every family's session is built first: a family that cannot train on this data (a tree family on
    # images, say) is dropped before any work, with the reason; any other error stops the stage
    sessions, failed = [], {}
    for f in families:
        try:
            sessions.append(make(family_context(ctx, f), sub_budget, f))
        except FamilyCannotTrain as exc:
            failed[f] = str(exc)
    if not sessions:
        raise ConfigError(
            "train.family: no listed family can train on this data: " + "; ".join(failed.values())
        )
    allot_path = ctx.work_dir / ALLOTMENTS_FILE
    allotted: dict[str, float] = json.loads(allot_path.read_text()) if allot_path.is_file() else {}
    with BudgetClock(ctx.work_dir) as clock:
        t_stage = time.time() - clock.spent_before
        for i, sess in enumerate(sessions):
            clock.enter(f"family {sess.family}")
            if sess.family not in allotted:
                left = share * budget_s - (time.time() - t_stage)
                allotted[sess.family] = round(max(left, 1.0) / (len(sessions) - i), 3)
                write_text_atomic(allot_path, to_json(allotted))
            sess.budget_s = allotted[sess.family]  # its phases' shares add up to 1: they end at its allotment
            sess.tag, sess.final_reserve = sess.family, False
            t0 = time.perf_counter()
            try:
                run_phases(sess, select)
            except StageFailedError as exc:  # e.g. its sanity check: the other families still compete
                sess.decide("families", f"dropped from the family choice: {exc}", {"family": sess.family})
                failed[sess.family] = str(exc)
            ctx.timings[f"family {sess.family} seconds"] = round(time.perf_counter() - t0, 3)
        alive = [s for s in sessions if s.family not in failed]
        if not alive:
            raise StageFailedError(
                "train: every family failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items())
            )
        choice = choose_family(alive, failed)
        win = next(s for s in sessions if s.family == choice.chosen)
        # the winner's session carries the whole stage's log into the last phase
        win.decisions = [d for s in sessions for d in s.decisions]
        win.curves = {(f"{s.family}: {k}"): v for s in sessions for k, v in s.curves.items()}
        win.figures = [f for s in sessions for f in s.figures]
        win.n_configs = sum(s.n_configs for s in sessions)
        win.rivals = [(s.family, s.work) for s in sessions if s is not win]
        win.tag, win.final_reserve = "", True
        win.budget, win.budget_s, win.t0 = full, budget_s, t_stage
        win.decide("families", choice.sentence, choice.model_dump(mode="json", exclude={"sentence"}))
        clock.enter(last.name)
        win.last_start = time.time() - clock.spent().get(last.name, 0.0)  # it keeps its own share
        with win.ctx.timed(f"phase {last.name}"):
            win.outcomes[last.name] = last.run(win)
        clock.enter("done")
    for s in sessions:  # each family's timings, named by family; the winner's also under their own names
        ctx.timings.update({f"{s.family}: {k}": v for k, v in s.ctx.timings.items()})
    ctx.timings.update(win.ctx.timings)
    return win, choice


def margin_text(
    difference: float | None,
    paired: float | None,
    ci: list[float] | None,
    preds: str,
    metric: str,
    higher_is_better: bool,
    runner_up: str,
) -> str:
    """By how much the family choice was won, as the decision log says it: the difference of the scores the
    choice read (winner minus runner-up), which way the metric is better, and the paired interval. The choice
    reads the mean of per-fold scores and the interval one score of the averaged predictions: on close
    families the two can rank them differently, and the sentence says so rather than leave two numbers of
    opposite sign to the reader (a regression table, session 28).

    >>> margin_text(-0.1321, 0.1393, [-0.3637, 0.6158], "repeat-averaged out-of-fold", "rmse", False, "mlp")
    ' by -0.1321 (rmse: lower is better) (paired bootstrap on the repeat-averaged out-of-fold predictions: +0.1393, 95% CI [-0.3637, +0.6158]; optimistic, the choice was made on them; on these predictions mlp scores better: the two families are within noise)'
    >>> margin_text(0.0298, 0.0298, [-0.0003, 0.0597], "validation", "pr_auc", True, "mlp")
    ' by +0.0298 (paired bootstrap on the validation predictions: +0.0298, 95% CI [-0.0003, +0.0597]; optimistic, the choice was made on them)'
    """
    by = "" if difference is None else f" by {difference:+.4f}"
    if difference is not None and not higher_is_better:
        by += f" ({metric}: lower is better)"
    if paired is not None and ci is not None:
        reversed_ = difference is not None and paired * difference < 0
        by += (
            f" (paired bootstrap on the {preds} predictions: {paired:+.4f}, 95% CI [{ci[0]:+.4f}, "
            f"{ci[1]:+.4f}]; optimistic, the choice was made on them"
            + (
                f"; on these predictions {runner_up} scores better: the two families are within noise"
                if reversed_
                else ""
            )
            + ")"
        )
    return by


def choose_family(sessions: list[TrainSession], failed: dict[str, str] | None = None) -> FamilyChoice:
    """The family whose chosen configuration scores best on the evidence every family has (``failed``:
    families dropped before the choice, with the reason)."""
    from closedloop.models.registry import family_kind
    from closedloop.stats.bootstrap import usable_clusters
    from closedloop.stats.paired import compare

    task = sessions[0].task
    cvs = [_cv_mean(s) for s in sessions]
    on = "out_of_fold" if all(v is not None for v in cvs) else "validation"
    rows = []
    for s, cv_mean in zip(sessions, cvs, strict=True):
        tuned = chosen_config(s)
        rows.append(
            FamilyRow(
                family=s.family,
                kind=family_kind(s.family),
                score=cv_mean if on == "out_of_fold" else tuned.val_metric,
                val_metric=tuned.val_metric,
                cv_mean=cv_mean,
                n_configs=s.n_configs,
                model_params=tuned.model_params,
                knobs=tuned.knobs,
            )
        )
    sign = 1.0 if task.higher_is_better else -1.0

    def key(i: int) -> tuple[float, int]:
        v = rows[i].score
        return (sign * v if v is not None and np.isfinite(v) else -np.inf, -i)  # ties: listed first

    order = sorted(range(len(rows)), key=key, reverse=True)
    w, r = order[0], order[min(1, len(order) - 1)]
    paired, ci = None, None
    try:
        if w == r:
            raise ValueError(
                "one family left"
            )  # by how much: paired on the predictions the choice was made on
        y, pw, pr = _compared_predictions(sessions[w], sessions[r], on)
        groups = sessions[w].val_groups if on == "validation" else sessions[w].groups_train_val()
        cmp = compare(
            task.primary_metric,
            y,
            pw,
            pr,
            task.problem_type,
            seed=sessions[w].ctx.seed,
            convention=task.metric_convention,
            n_resamples=sessions[w].cfg.n_bootstrap,
            clusters=usable_clusters(groups) if groups is not None and len(groups) == len(y) else None,
        )
        paired, ci = float(cmp.delta), [float(c) for c in cmp.ci95]
    except Exception as exc:  # evidence, not a reason to stop: the scores themselves still decide
        sessions[w].ctx.logger.info("train: family comparison interval unavailable: %s", exc)
    win, run = rows[w], rows[r]
    dropped = "".join(f" {k} was dropped ({v})." for k, v in (failed or {}).items())
    where = {
        "out_of_fold": "mean out-of-fold (cross-validated on train+val)",
        "validation": "validation (hold-out)",
    }[on]
    listing = "; ".join(
        f"{x.family} {x.score:.4f}" if x.score is not None else f"{x.family} n/a" for x in rows
    )
    ws, rs = rows[w].score, rows[r].score
    difference = ws - rs if w != r and ws is not None and rs is not None else None
    preds = "repeat-averaged out-of-fold" if on == "out_of_fold" else "validation"
    by = margin_text(difference, paired, ci, preds, task.primary_metric, task.higher_is_better, run.family)
    over = f" over {run.family}{by}" if w != r else " (the only family left)"
    sentence = (
        f"family choice on {where} {task.primary_metric}: {listing}.{dropped} Chose {win.family} ({win.kind})"
        f"{over}. {sum(x.n_configs for x in rows)} configurations of {len(rows)} families were scored "
        "on validation; only the chosen family is fitted finally and opens the test split."
    )
    return FamilyChoice(
        metric=task.primary_metric,
        evaluated_on=on,
        rows=rows,
        chosen=win.family,
        runner_up=run.family if w != r else None,
        dropped=dict(failed or {}),
        difference=difference,
        paired_delta=paired,
        paired_ci95=ci,
        sentence=sentence,
    )


def _compared_predictions(a: TrainSession, b: TrainSession, on: str) -> tuple[Any, Any, Any]:
    ta, tb = chosen_config(a), chosen_config(b)
    pt = a.task.problem_type
    if on == "out_of_fold":  # same seeded folds over the same train+val rows in every family
        assert ta.calibration_logits_file and tb.calibration_logits_file and ta.calibration_labels_file
        y = np.load(a.work / ta.calibration_labels_file)
        la, lb = np.load(a.work / ta.calibration_logits_file), np.load(b.work / tb.calibration_logits_file)
    else:
        y = a.val.y_np
        la, lb = np.load(a.work / ta.val_logits_file), np.load(b.work / tb.val_logits_file)
    return y, logits_to_proba(la, pt), logits_to_proba(lb, pt)


def family_blocks(choice: FamilyChoice) -> list[Any]:
    """The report's table of the family choice."""
    from closedloop.report.blocks import Table

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 4)

    rows = [
        {
            "family": x.family,
            "kind": x.kind,
            f"compared ({choice.evaluated_on})": r(x.score),
            "validation (hold-out)": r(x.val_metric),
            "out-of-fold": r(x.cv_mean),
            "configurations": x.n_configs,
            "chosen": "yes" if x.family == choice.chosen else "",
        }
        for x in choice.rows
    ]
    return [Table(rows, title=f"Family choice ({choice.metric})")]


def family_summary(choice: FamilyChoice | None) -> dict[str, Any] | None:
    """summary.json view (``stages.train.families``)."""
    if choice is None:
        return None
    return choice.model_dump(mode="json")
