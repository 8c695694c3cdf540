"""Runs the phases in order: the time budget table, caching each finished phase in ``work/`` and
resuming from it, and the wall time of each phase in ``ctx.timings`` (never in artifacts)."""

from __future__ import annotations

import json
from typing import Any

from closedloop.core.errors import ConfigError
from closedloop.core.io import to_json, write_text_atomic
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
    """Run (or restore) every enabled phase; outcomes land in ``sess.outcomes``."""
    for phase in phases:
        if not phase.enabled(sess):
            continue
        if phase.cached and _restore(sess, phase, phases):
            continue
        with sess.ctx.timed(f"phase {phase.name}"):
            out = phase.run(sess)
        sess.outcomes[phase.name] = out
        if phase.cached:
            _save(sess, phase.name)


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
    log: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    kinds = {p.name: p.outcome for p in phases}
    sess.decisions, sess.curves = log["decisions"], log["curves"]
    sess.figures, sess.n_configs = log["figures"], log["n_configs"]
    sess.outcomes = {k: kinds[k].model_validate(v) for k, v in log["outcomes"].items()}
    sess.ctx.timings.update(log.get("timings", {}))
    phase.resume(sess, sess.outcomes[phase.name])
    return True
