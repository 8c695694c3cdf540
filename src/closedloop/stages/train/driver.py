"""Runs the phases in order: the time budget table, caching each finished phase in ``work/`` and
resuming from it, the budget's clock across crashes (:mod:`.clock`), and the wall time of each phase in
``ctx.timings`` (never in artifacts)."""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ValidationError

from closedloop.core.errors import ConfigError
from closedloop.core.io import to_json, write_text_atomic
from closedloop.core.killpoints import kill_point
from closedloop.stages.train.clock import BudgetClock
from closedloop.stages.train.phases.base import Phase
from closedloop.stages.train.session import TrainSession


def budget_table(phases: list[Phase]) -> dict[str, float]:
    """Phase -> share of the time budget, in running order. The shares must add up to 1 (a phase left
    out would otherwise silently get what the others leave)."""
    table = {p.name: float(p.budget_share) for p in phases}
    if len(table) != len(phases):
        raise ConfigError(f"train: two phases share a name: {[p.name for p in phases]}")
    total = sum(table.values())
    if abs(total - 1.0) > 1e-9:
        raise ConfigError(f"train: the phases' budget shares add up to {total:.3f}, not 1: {table}")
    return table


def phase_file(name: str) -> str:
    return f"phase_{name}.json"


def run_phases(sess: TrainSession, phases: list[Phase]) -> None:
    """Run (or restore) every enabled phase; outcomes land in ``sess.outcomes``. A resumed stage
    spends only what the interrupted attempts left of the budget, and says so in the decision log."""
    with BudgetClock(sess.work) as clock:
        sess.t0 = time.time() - clock.spent_before  # every deadline is relative to t0
        announce = clock.resumed
        for phase in phases:
            if not phase.enabled(sess):
                continue
            if phase.cached and _restore(sess, phase, phases):
                continue
            if announce:  # after the restore: the restored decision log is the one to append to
                _announce_resume(sess, phase.name, clock)
                announce = False
            clock.enter(phase.name)
            if phase.name == list(sess.budget)[-1]:  # it keeps its own share (TrainSession.deadline)
                sess.last_start = time.time() - clock.spent().get(phase.name, 0.0)
            with sess.ctx.timed(f"phase {phase.name}"):
                out = phase.run(sess)
            sess.outcomes[phase.name] = out
            if phase.cached:
                _save(sess, phase.name)
                kill_point(f"train/{phase.name}/saved")
        clock.enter("done")
    for name, seconds in clock.spent().items():
        if name not in ("setup", "done"):
            sess.ctx.timings[f"phase {name}, all attempts"] = seconds
    sess.ctx.timings["attempts"] = clock.record.attempts


def _announce_resume(sess: TrainSession, phase: str, clock: BudgetClock) -> None:
    spent = clock.spent_before
    left = max(sess.budget_s - spent, 0.0)
    per_phase = ", ".join(f"{k} {v:.0f} s" for k, v in clock.before.items() if v >= 0.5)
    lost = (
        f"; {clock.problem}: the earlier attempts' time is unknown and not counted" if clock.problem else ""
    )
    sess.decide(
        phase,
        f"resumed after an interruption (attempt {clock.record.attempts}) with {left:.0f} s of the "
        f"{sess.budget_s:.0f} s budget left: the earlier attempts spent {spent:.0f} s"
        + (f" ({per_phase})" if per_phase else "")
        + lost,
        {"budget_s": sess.budget_s, "spent_before_s": round(spent, 1), "left_s": round(left, 1)},
    )


def _save(sess: TrainSession, name: str) -> None:
    log = {
        "decisions": sess.decisions,
        "curves": sess.curves,
        "figures": sess.figures,
        "n_configs": sess.n_configs,
        "outcomes": {k: v.model_dump(mode="json") for k, v in sess.outcomes.items()},
        "timings": sess.ctx.timings,  # work/ is scratch, not an artifact: the budget needs these on resume
    }
    write_text_atomic(sess.work / phase_file(name), to_json(log))


def _restore(sess: TrainSession, phase: Phase, phases: list[Phase]) -> bool:
    path = sess.work / phase_file(phase.name)
    if not path.is_file():
        return False
    kinds = {p.name: p.outcome for p in phases}
    try:  # parse all of it before touching the session: a damaged file is never half read
        log: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        outcomes = {k: kinds[k].model_validate(v) for k, v in log["outcomes"].items()}
        restored = (log["decisions"], log["curves"], log["figures"], int(log["n_configs"]))
        mine = outcomes[phase.name]
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        # the later phases' files were built on this one: they run again too (from their own work
        # files where they have them, e.g. the study database), and the note stays in the log
        later = [p.name for p in phases[[p.name for p in phases].index(phase.name) :]]
        for name in later:
            (sess.work / phase_file(name)).unlink(missing_ok=True)
        sess.decide(
            phase.name,
            f"the saved result of this phase ({path.name}) is damaged ({type(exc).__name__}): running it "
            "and the phases after it again",
            {"file": path.name},
        )
        return False
    sess.decisions, sess.curves, sess.figures, sess.n_configs = restored
    sess.outcomes = outcomes
    sess.ctx.timings.update(log.get("timings", {}))
    phase.resume(sess, mine)
    return True
