"""The decision a run supports: acceptance bars, the baseline gate, production constraints, the
per-day framing, the audit's problems, and the next step that follows from them.

Plain Python over :class:`~closedloop.report.evidence.RunEvidence`, so every rule is unit-tested on
constructed inputs; the report renders the resulting :class:`Decision` on its first screen.

Example:
    >>> from closedloop.report.evidence import Estimate, RunEvidence
    >>> ev = RunEvidence(name="demo", primary_metric="auc", acceptance={"auc": 0.9},
    ...                  test={"auc": Estimate(value=0.95, ci95=(0.93, 0.97))})
    >>> d = decide(ev)
    >>> d.metrics[0].verdict, d.next_step.action
    ('met', 'improve_model')
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from closedloop.report.evidence import Estimate, GateEvidence, PerDay, Reference, RunEvidence

Verdict = Literal["met", "missed", "undecided"]
Action = Literal["fix_failure", "fix_data", "ship", "stop_tuning", "collect_more_data", "improve_model"]

ACTION_TITLES: dict[str, str] = {
    "fix_failure": "Fix the failure",
    "fix_data": "Fix the data",
    "ship": "Ship",
    "stop_tuning": "Stop tuning",
    "collect_more_data": "Collect more data",
    "improve_model": "Improve the model",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rules(_Model):
    """Thresholds of the next-step rules (all on the audit's or the test's own scale)."""

    label_noise_high: float = 0.05
    """Estimated share of wrong train labels from which the data needs fixing first."""
    test_overlap_high: float = 0.01
    """Share of test samples with a copy in train/val from which the test figures are not trustworthy."""
    more_data_gain: float = 0.01
    """Learning-curve error reduction at twice the data from which more data is worth collecting."""
    near_reference: float = 0.01
    """Within this much of the best human/literature reference counts as "near" (stop tuning)."""


class MetricVerdict(_Model):
    """One acceptance bar: met when the whole 95% interval clears it, missed when none of it does."""

    metric: str
    bar: float
    higher_is_better: bool = True
    value: float | None = None
    ci95: tuple[float, float] | None = None
    verdict: Verdict | Literal["not_measured"] = "not_measured"
    evaluated_on: str = "test"


class BaselineVerdict(_Model):
    """The gate's comparison with the best baseline, as the gate reported it."""

    metric: str
    baseline: str | None
    delta: float
    ci95: tuple[float, float] | None
    p_reported: float | None
    correction: str
    n_configs: int | None
    significant: bool
    evaluated_on: str


class ConstraintVerdict(_Model):
    name: Literal["latency", "size"]
    limit: float
    value: float | None = None
    unit: str
    met: bool | None = None
    detail: str = ""


class AuditLine(_Model):
    severity: Literal["error", "warning"]
    check: str
    message: str


class NextStep(_Model):
    action: Action
    title: str
    reasons: list[str] = Field(default_factory=list)


class Decision(_Model):
    """What the first screen of the report says."""

    name: str
    status: str
    metrics: list[MetricVerdict] = Field(default_factory=list)
    metrics_note: str = ""
    baseline: BaselineVerdict | None = None
    baseline_note: str = ""
    shipped_variant: str | None = None
    blessed: bool | None = None
    constraints: list[ConstraintVerdict] = Field(default_factory=list)
    constraints_note: str = ""
    per_day: PerDay | None = None
    per_day_note: str = ""
    audit: list[AuditLine] = Field(default_factory=list)
    audit_note: str = ""
    gap_note: str = ""
    """When test falls below what validation and the selection bias predict: what the gap means."""
    human: Reference | None = None
    """The measured human level with its paired comparison (``closedloop human-baseline``), if any."""
    next_step: NextStep


# -- the parts -----------------------------------------------------------------------------------------
def verdict(est: Estimate | None, bar: float, higher_is_better: bool) -> Verdict | Literal["not_measured"]:
    """met / missed / undecided from the interval (the point value when there is no interval)."""
    if est is None:
        return "not_measured"
    lo, hi = est.ci95 if est.ci95 is not None else (est.value, est.value)
    if not higher_is_better:
        lo, hi, bar = -hi, -lo, -bar
    if lo >= bar:
        return "met"
    if hi < bar:
        return "missed"
    return "undecided"


def metric_verdicts(ev: RunEvidence) -> list[MetricVerdict]:
    out = []
    for m, bar in ev.acceptance.items():
        hib = m not in ev.lower_is_better
        est = ev.test.get(m)
        out.append(
            MetricVerdict(
                metric=m,
                bar=bar,
                higher_is_better=hib,
                value=est.value if est else None,
                ci95=est.ci95 if est else None,
                verdict=verdict(est, bar, hib),
                evaluated_on=est.evaluated_on if est else "test",
            )
        )
    return out


def baseline_verdict(g: GateEvidence) -> BaselineVerdict:
    return BaselineVerdict(
        metric=g.metric,
        baseline=g.baseline,
        delta=g.delta,
        ci95=g.ci95,
        p_reported=g.p_reported,
        correction=g.correction,
        n_configs=g.n_configs,
        significant=g.significant,
        evaluated_on=g.evaluated_on,
    )


def constraint_verdicts(ev: RunEvidence) -> list[ConstraintVerdict]:
    c, s = ev.constraints, ev.shipped
    out = []
    if c.max_latency_ms is not None:
        v = s.latency_p95_ms if s else None
        out.append(
            ConstraintVerdict(
                name="latency",
                limit=c.max_latency_ms,
                value=v,
                unit="ms",
                met=None if v is None else v <= c.max_latency_ms,
                detail=f"p95 at batch {c.latency_batch_size}",
            )
        )
    if c.max_model_size_mb is not None:
        v = s.size_mb if s else None
        out.append(
            ConstraintVerdict(
                name="size",
                limit=c.max_model_size_mb,
                value=v,
                unit="MB",
                met=None if v is None else v <= c.max_model_size_mb,
                detail="model file",
            )
        )
    return out


def audit_lines(ev: RunEvidence) -> list[AuditLine]:
    if ev.audit is None:
        return []
    order = {"error": 0, "warning": 1}
    lines = [
        AuditLine(severity=f.severity, check=f.check, message=f.message)  # type: ignore[arg-type]
        for f in ev.audit.findings
        if f.severity in order
    ]
    return sorted(lines, key=lambda x: order[x.severity])


def near_reference(ev: RunEvidence, rules: Rules) -> str | None:
    """A sentence when the primary test metric is at or near the best human/literature reference."""
    m = ev.primary_metric
    est = ev.test.get(m) if m else None
    refs = [(r.name, r.metrics[m]) for r in ev.references if m in r.metrics and r.level != "current_system"]
    if est is None or not refs:
        return None
    hib = m not in ev.lower_is_better
    name, best = max(refs, key=lambda x: x[1]) if hib else min(refs, key=lambda x: x[1])
    lo, hi = est.ci95 or (est.value, est.value)
    gap = (best - est.value) if hib else (est.value - best)
    if gap <= rules.near_reference or lo <= best <= hi:
        return (
            f"test {m} {est.value:.3f} is at or near the best reference, {name} ({best:.3f}): "
            "further tuning is unlikely to pay off"
        )
    return None


def next_step(
    ev: RunEvidence,
    metrics: list[MetricVerdict],
    constraints: list[ConstraintVerdict],
    audit: list[AuditLine],
    rules: Rules,
) -> NextStep:
    """The first rule that applies: failure, data problems, ship, near the reference, more data, else
    improve the model. Every reason that holds is listed, so the reader sees why."""
    if ev.failed:
        stage, err = next(iter(ev.failed.items()))
        return NextStep(
            action="fix_failure", title=ACTION_TITLES["fix_failure"], reasons=[f"stage {stage} failed: {err}"]
        )
    data_reasons = []
    a = ev.audit
    if a is not None:
        noise = a.estimated_noise_rate if a.label_noise_is_evidence is not False else None
        if noise is not None and noise >= rules.label_noise_high:
            near = a.label_suspects_one_rank_off
            data_reasons.append(
                f"about {a.estimated_noise_rate:.0%} of train labels look wrong (label-issue check; "
                f"bar {rules.label_noise_high:.0%})"
                + (
                    f"; {near:.0%} of the suspects are one rank from the suggested grade: neighbouring grades "
                    "the features cannot separate, as likely as wrong labels"
                    if near is not None
                    else ""
                )
            )
        if a.entity_shared is not None and a.entity_shared[1] >= rules.test_overlap_high:
            column, share = a.entity_shared
            data_reasons.append(
                f"{share:.0%} of test rows share their {column!r} with train rows, and rows sharing it share "
                f"their label: test figures measure recall of seen entities (declare data: {{group: {column}}})"
            )
        if a.test_overlap is not None and a.test_overlap >= rules.test_overlap_high:
            data_reasons.append(
                f"up to {a.test_overlap:.0%} of test samples have a copy in train/val: test figures are optimistic"
            )
    errors = [x for x in audit if x.severity == "error"]
    if errors:
        data_reasons.append(
            f"the audit reports {len(errors)} error(s): " + "; ".join(e.check for e in errors)
        )
    if data_reasons:
        return NextStep(action="fix_data", title=ACTION_TITLES["fix_data"], reasons=data_reasons)

    blockers, good = [], []
    for mv in metrics:
        if mv.verdict == "met":
            good.append(f"{mv.metric} meets its bar {mv.bar:g}")
        else:
            blockers.append(f"{mv.metric} {mv.verdict.replace('_', ' ')} against its bar {mv.bar:g}")
    if ev.gate is None:
        blockers.append("no comparison with a baseline on test")
    elif ev.gate.significant:
        good.append(f"beats the best baseline ({ev.gate.metric} {ev.gate.delta:+.3f})")
    else:
        blockers.append("does not beat the best baseline significantly")
    for c in constraints:
        if c.met is False:
            blockers.append(f"{c.name} {c.value:.3g} {c.unit} exceeds {c.limit:g} {c.unit}")
        elif c.met is None:
            blockers.append(f"{c.name} not measured")
    if ev.shipped is not None and not ev.shipped.blessed:
        blockers.append(f"the export did not bless the {ev.shipped.variant} variant")
    near = near_reference(ev, rules)
    if not blockers and ev.test:
        return NextStep(action="ship", title=ACTION_TITLES["ship"], reasons=good + ([near] if near else []))
    if near:
        return NextStep(action="stop_tuning", title=ACTION_TITLES["stop_tuning"], reasons=[near, *blockers])
    if a is not None and a.gain_at_2x is not None and a.gain_at_2x >= rules.more_data_gain:
        lo = a.gain_ci[0] if a.gain_ci else None
        if lo is None or lo > 0:
            why = f"the learning curve predicts {a.gain_at_2x:.3f} lower error with twice the training data"
            return NextStep(
                action="collect_more_data", title=ACTION_TITLES["collect_more_data"], reasons=[why, *blockers]
            )
    return NextStep(
        action="improve_model",
        title=ACTION_TITLES["improve_model"],
        reasons=blockers or ["no test result yet"],
    )


SHIFT_AUC = 0.6
"""Adversarial AUC above which the audit's split-shift check warns (its default ``warning_auc``)."""


def val_test_gap(ev: RunEvidence) -> str:
    """A sentence when the test score falls outside what validation, corrected for the selection,
    predicts, read next to the audit's split-shift finding; empty otherwise."""
    if ev.selection is None:
        return ""
    m, expect = ev.selection.metric, ev.selection.corrected_value
    est = ev.test.get(m)
    if est is None:
        return ""
    lo, hi = est.ci95 or (est.value, est.value)
    hib = m not in ev.lower_is_better
    if (hi >= expect) if hib else (lo <= expect):
        return ""
    head = (
        f"Test {m} {est.value:.4f} [{lo:.4f}, {hi:.4f}] is {'below' if hib else 'above'} what validation and the "
        f"selection bias predict ({expect:.4f}): the gap is not the selection."
    )
    auc = ev.audit.test_shift_auc if ev.audit else None
    if auc is not None and auc > SHIFT_AUC:
        return (
            f"{head} Validation does not represent test: the audit found them distinguishable (adversarial AUC "
            f"{auc:.2f}). Expect production to look like test, not validation; plan for spot checks and "
            "adaptation (closedloop adapt)."
        )
    if auc is not None:
        return (
            f"{head} The audit did not tell test from train (adversarial AUC {auc:.2f}): look for label or "
            "acquisition differences the image statistics miss; plan for spot checks."
        )
    return f"{head} No split-shift audit ran to say whether test differs from train; plan for spot checks."


def decide(ev: RunEvidence, rules: Rules | None = None) -> Decision:
    """Compute the run's :class:`Decision` from its evidence."""
    rules = rules or Rules()
    metrics = metric_verdicts(ev)
    constraints = constraint_verdicts(ev)
    audit = audit_lines(ev)
    d = Decision(
        name=ev.name,
        status=ev.status,
        metrics=metrics,
        baseline=baseline_verdict(ev.gate) if ev.gate else None,
        shipped_variant=ev.shipped.variant if ev.shipped else None,
        blessed=ev.shipped.blessed if ev.shipped else None,
        constraints=constraints,
        per_day=ev.per_day,
        audit=audit,
        human=next((r for r in ev.references if r.level == "human" and r.comparison is not None), None),
        next_step=next_step(ev, metrics, constraints, audit, rules),
    )
    if not ev.acceptance:
        d.metrics_note = "no acceptance bar declared (task.acceptance)"
    elif not ev.test:
        d.metrics_note = ev.test_missing_reason or "not evaluated on test"
    if ev.gate is None:
        d.baseline_note = (
            ev.test_missing_reason
            if not ev.test
            else "no baseline stage: the model was not compared with one"
        ) or ""
    if not constraints:
        d.constraints_note = "no latency or size constraint declared (task.constraints)"
    elif ev.shipped is None:
        d.constraints_note = "not measured: no export stage finished"
    if ev.per_day is None:
        if ev.problem_type not in (None, "binary"):
            d.per_day_note = f"per-day counts apply to binary tasks; this task is {ev.problem_type}"
        elif not ev.test:
            d.per_day_note = ev.test_missing_reason or "not evaluated on test"
        elif not ev.business_declared:
            d.per_day_note = "no business.cases_per_day declared in the task"
        else:
            d.per_day_note = "not computed in this run (the training stage recorded no per-day counts)"
    if ev.audit is None:
        d.audit_note = "no audit stage in this run"
    elif not audit:
        d.audit_note = "no errors or warnings"
    d.gap_note = val_test_gap(ev)
    return d


def decision_of(run_dir: str | Path) -> Decision:
    """The decision of a finished run directory (what its report's first screen shows)."""
    from closedloop.report.evidence import gather

    return decide(gather(run_dir))
