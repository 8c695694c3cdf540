"""Which variant ships, and is it blessed: the task's constraints and acceptance bar, per variant.

The latency check uses the measured p95 (from :mod:`closedloop.stages.export.latency`); the decision
and the checks' pass/fail are recorded in the export folder, the measured figures are not.
"""

from __future__ import annotations

from closedloop.stages.export.evaluate import LOWER_IS_BETTER
from closedloop.stages.export.latency import Timing
from closedloop.stages.export.results import GateDecision, Variant
from closedloop.stages.task import TaskSpec

SHIP_ORDER = ("int8", "student", "pruned", "fp32")
"""``ship: auto`` takes the first of these that is accepted and meets the constraints."""


def constraint_checks(
    name: str, variants: dict[str, Variant], timings: dict[str, Timing], task: TaskSpec, evaluated_on: str
) -> dict[str, bool]:
    """Check text -> passed, for one variant: p95 latency, file size, the task's acceptance bar."""
    c = task.constraints
    checks = {}
    if c.max_latency_ms is not None:
        checks[f"p95 latency <= {c.max_latency_ms} ms at batch {c.latency_batch_size}"] = (
            timings[name].p95_ms <= c.max_latency_ms
        )
    if c.max_model_size_mb is not None:
        checks[f"size <= {c.max_model_size_mb} MB"] = variants[name].size_bytes / 1e6 <= c.max_model_size_mb
    for m_name, bar in task.acceptance.items():
        val = variants[name].metrics.get(m_name)
        if val is None:
            continue
        ok = val <= bar if m_name in LOWER_IS_BETTER else val >= bar
        rel = "<=" if m_name in LOWER_IS_BETTER else ">="
        checks[f"{evaluated_on} {m_name} {val:.4f} {rel} {bar}"] = bool(ok)
    return checks


def decide(
    ship: str, variants: dict[str, Variant], timings: dict[str, Timing], task: TaskSpec, evaluated_on: str
) -> GateDecision:
    """The shipped variant (``ship``, or the first of :data:`SHIP_ORDER` that passes) and its checks."""
    if ship != "auto":
        shipped = ship
    else:
        # int8 only when it is actually smaller (QDQ scales outweigh the savings on tiny models).
        fp32_size = variants["fp32"].size_bytes
        cands = [
            n
            for n in SHIP_ORDER
            if n in variants and variants[n].accepted and (n != "int8" or variants[n].size_bytes < fp32_size)
        ]
        shipped = next(
            (n for n in cands if all(constraint_checks(n, variants, timings, task, evaluated_on).values())),
            "fp32",
        )
    checks = constraint_checks(shipped, variants, timings, task, evaluated_on)
    checks[f"{shipped} accepted"] = bool(variants[shipped].accepted)
    return GateDecision(shipped=shipped, blessed=all(checks.values()), checks=checks)
