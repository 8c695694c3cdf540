"""What the decision is computed from, read from a finished run directory (no model is loaded, no
split is opened: every number comes from ``summary.json`` and the stages' saved artifacts, read back as
their types through :class:`~closedloop.core.run_reader.RunDir`; an artifact of an older layout is one
clear error naming its file, not a half-read report).

:func:`gather` turns a run directory into :class:`RunEvidence`; tests build :class:`RunEvidence` by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from closedloop.artifacts.audit import (
    AuditReport,
    DuplicateMetrics,
    LabelIssueMetrics,
    LearningCurveMetrics,
    RepeatedEntitiesMetrics,
    SplitShiftMetrics,
)
from closedloop.artifacts.evaluation import EvaluationReport
from closedloop.artifacts.export import ExportBundle
from closedloop.artifacts.figures import Figure as FigureRecord
from closedloop.artifacts.figures import PerDay as PerDayRecord
from closedloop.artifacts.gate import GateResult
from closedloop.artifacts.selection import SelectionBias
from closedloop.artifacts.summary import RunSummary, TrackingStatus
from closedloop.artifacts.task import TaskSpec
from closedloop.artifacts.training import FinalOutcome
from closedloop.core.run_reader import RunDir


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Estimate(_Model):
    """A figure with its 95% interval and the data it was computed on."""

    value: float
    ci95: tuple[float, float] | None = None
    evaluated_on: str = "test"


class GateEvidence(_Model):
    """The test gate's result as the gate reported it (fields are read, never recomputed)."""

    metric: str
    baseline: str | None = None
    delta: float
    ci95: tuple[float, float] | None = None
    p_value: float | None = None
    """The comparison's own one-sided p-value."""
    p_reported: float | None = None
    """The p-value the gate decided on (after its correction, if it applies one)."""
    correction: str = ""
    """How ``p_reported`` was obtained, in words (e.g. ``Holm over 7 configurations``)."""
    n_configs: int | None = None
    significant: bool
    sentence: str = ""
    evaluated_on: str = "test"


class ShippedEvidence(_Model):
    """The exported variant that ships and what was measured on it."""

    variant: str
    blessed: bool
    latency_p95_ms: float | None = None
    size_mb: float | None = None
    checks: dict[str, bool] = Field(default_factory=dict)


class ConstraintsEvidence(_Model):
    max_latency_ms: float | None = None
    latency_batch_size: int = 1
    max_model_size_mb: float | None = None


class PerDay(_Model):
    """Per-day business framing: counts with 95% intervals."""

    unit: str = "day"
    caught: Estimate
    missed: Estimate
    false_alarms: Estimate
    positive_name: str | None = None
    cases: float | None = None
    prevalence: float | None = None
    evaluated_on: str = "test"


class Finding(_Model):
    check: str
    severity: str
    message: str


class AuditEvidence(_Model):
    findings: list[Finding] = Field(default_factory=list)
    estimated_noise_rate: float | None = None
    """Estimated share of wrong labels in train (label-issue check)."""
    label_noise_is_evidence: bool | None = None
    """False when that estimate is a weak model's uncertainty, not evidence of label noise."""
    label_suspects_one_rank_off: float | None = None
    """Ordinal tasks: the share of suspected label errors one rank from the suggested grade."""
    test_overlap: float | None = None
    """Share of test samples with an exact or near copy in train/val (upper bound: pairs / test size)."""
    gain_at_2x: float | None = None
    """Error reduction the learning curve predicts with twice the training data."""
    gain_ci: tuple[float, float] | None = None
    test_shift_auc: float | None = None
    """Adversarial AUC of train vs test (split-shift check): 0.5 when test looks like train."""
    entity_shared: tuple[str, float] | None = None
    """A column naming an entity whose rows share their label, and the share of test rows whose entity has
    train rows (repeated-entities check)."""


class HumanLevel(_Model):
    """A measured human level (``closedloop human-baseline``): the model against the human on the same
    items, paired."""

    metric: str
    model_value: float
    human_value: float
    delta: float
    ci95: tuple[float, float]
    p_value: float
    method: str
    verdict: str
    """better / not_distinguishable / worse (the model against the human)."""
    evaluated_on: str
    model_run: str


class Reference(_Model):
    name: str
    level: str
    metrics: dict[str, float] = Field(default_factory=dict)
    ci95: dict[str, tuple[float, float]] = Field(default_factory=dict)
    n: int | None = None
    comparison: HumanLevel | None = None


class RunEvidence(_Model):
    """Everything the decision needs, from one run."""

    name: str
    run_dir: str = ""
    status: str = "ok"
    failed: dict[str, str] = Field(default_factory=dict)
    """Stage name -> error, for stages that failed."""
    problem_type: str | None = None
    primary_metric: str | None = None
    acceptance: dict[str, float] = Field(default_factory=dict)
    lower_is_better: list[str] = Field(default_factory=list)
    test: dict[str, Estimate] = Field(default_factory=dict)
    test_missing_reason: str | None = None
    gate: GateEvidence | None = None
    constraints: ConstraintsEvidence = Field(default_factory=ConstraintsEvidence)
    shipped: ShippedEvidence | None = None
    business_declared: bool = False
    per_day: PerDay | None = None
    audit: AuditEvidence | None = None
    selection: SelectionBias | None = None
    """The train stage's selection-bias estimate (metric, corrected_value: what validation predicts)."""
    references: list[Reference] = Field(default_factory=list)
    tracking: TrackingStatus | None = None


# -- reading a run directory ---------------------------------------------------------------------------
def gate_evidence(gate: GateResult) -> GateEvidence:
    """The gate's own fields: the p-value it decided on and its correction, as it reported them."""
    return GateEvidence(
        metric=gate.metric,
        baseline=gate.baseline,
        delta=gate.delta,
        ci95=_pair(gate.ci95),
        p_value=gate.p_value,
        p_reported=gate.p_adjusted,
        correction=gate.correction,
        n_configs=gate.n_configs,
        significant=gate.significant,
        sentence=gate.sentence,
        evaluated_on=gate.evaluated_on
        + (f", {gate.n_groups} groups resampled whole" if gate.n_groups is not None else ""),
    )


def _pair(v: list[float | None] | tuple[float, float] | None) -> tuple[float, float] | None:
    """Two bounds as numbers; None without two, or with an undefined one (NaN is written as null)."""
    if v is None or len(v) != 2 or v[0] is None or v[1] is None:
        return None
    return (float(v[0]), float(v[1]))


def _estimate(f: FigureRecord, evaluated_on: str) -> Estimate | None:
    return None if f.value is None else Estimate(value=f.value, ci95=f.interval, evaluated_on=evaluated_on)


def _on_test(f: FigureRecord) -> str:
    """``test``, plus the decision rule of a threshold-dependent figure (shipped threshold or 0.5)."""
    return "test" if not f.decided_at or f.decided_at == "threshold-free" else f"test, at {f.decided_at}"


def _per_day(d: PerDayRecord | None) -> PerDay | None:
    if d is None:
        return None

    def est(x: FigureRecord | Any) -> Estimate:
        return Estimate(value=x.value, ci95=x.interval, evaluated_on=d.evaluated_on)

    return PerDay(
        unit=d.unit,
        caught=est(d.caught),
        missed=est(d.missed),
        false_alarms=est(d.false_alarms),
        positive_name=d.positive_name,
        cases=d.cases,
        prevalence=d.prevalence,
        evaluated_on=f"{d.evaluated_on}, at the shipped threshold {d.threshold:.4g}",
    )


def _audit(report: AuditReport | None, n_test: int | None) -> AuditEvidence | None:
    if report is None:
        return None
    # exact copies + near pairs in excess of the data's density (every close pair: a bound, older reports)
    pairs = report.metrics_of("duplicates", DuplicateMetrics).held_out_copies()
    overlap = None
    if pairs is not None and n_test:
        overlap = min(1.0, (pairs.train_test + pairs.val_test) / n_test)
    curve = report.metrics_of("learning_curve", LearningCurveMetrics)
    labels = report.metrics_of("label_issues", LabelIssueMetrics)
    return AuditEvidence(
        findings=[
            Finding(check=f.check, severity=f.severity, message=f.message) for f in report.finding_records()
        ],
        estimated_noise_rate=labels.estimated_noise_rate,
        label_noise_is_evidence=labels.noise_is_evidence,
        label_suspects_one_rank_off=labels.one_rank_share,
        test_overlap=overlap,
        gain_at_2x=curve.gain_at_2x,
        gain_ci=_pair(curve.gain_90ci),
        test_shift_auc=report.metrics_of("split_shift", SplitShiftMetrics).adversarial_auc_test,
        entity_shared=report.metrics_of("repeated_entities", RepeatedEntitiesMetrics).worst(),
    )


def _task(ev: RunEvidence, task: TaskSpec) -> None:
    from closedloop.stats.metrics import higher_is_better

    ev.problem_type = task.problem_type
    ev.primary_metric = task.primary_metric
    ev.acceptance = dict(task.acceptance)
    ev.lower_is_better = sorted(m for m in set(task.metrics) | set(ev.acceptance) if not higher_is_better(m))
    c = task.constraints
    ev.constraints = ConstraintsEvidence(
        max_latency_ms=c.max_latency_ms,
        latency_batch_size=c.latency_batch_size,
        max_model_size_mb=c.max_model_size_mb,
    )
    ev.business_declared = bool(task.business.cases_per_day)
    ev.references = [
        Reference(
            name=r.name,
            level=r.level,
            metrics=dict(r.metrics),
            ci95={k: c for k, v in r.ci95.items() if (c := _pair(v)) is not None},
            n=r.n,
            comparison=None if r.comparison is None else HumanLevel.model_validate(r.comparison.model_dump()),
        )
        for r in task.references
    ]


def _evaluation(ev: RunEvidence, evaluation: EvaluationReport) -> None:
    for k, f in evaluation.test.items():
        if (est := _estimate(f, _on_test(f))) is not None:
            ev.test[k] = est
    if evaluation.beats_baseline is not None:
        ev.gate = gate_evidence(evaluation.beats_baseline)
    final = evaluation.outcome(FinalOutcome)
    ev.per_day = _per_day(None if final is None else final.per_day)
    ev.selection = evaluation.selection


def _shipped(ev: RunEvidence, exported: ExportBundle, summary: RunSummary) -> None:
    m = exported.measurements
    shipped = m.shipped_variant
    # measured latencies are stage timings (summary.json), never hashed artifact content
    key = f"latency_ms.{m.shipped}.p95"
    p95 = next(
        (s.timings[key] for s in summary.stages.values() if s.shipped == m.shipped and key in s.timings), None
    )
    ev.shipped = ShippedEvidence(
        variant=m.shipped,
        blessed=m.blessed,
        latency_p95_ms=p95,
        size_mb=shipped.size_bytes / 1e6 if shipped.size_bytes else None,
        checks=dict(m.checks),
    )


def gather(run_dir: str | Path, summary: RunSummary | dict[str, Any] | None = None) -> RunEvidence:
    """Read a run directory into :class:`RunEvidence` (``summary`` defaults to its summary.json)."""
    run_dir = Path(run_dir)
    if summary is None:
        summary = RunSummary.read(run_dir)
    elif not isinstance(summary, RunSummary):
        summary = RunSummary.model_validate(summary)
    run = RunDir(run_dir)
    ev = RunEvidence(
        name=summary.name,
        run_dir=str(run_dir),
        status=summary.status,
        failed={k: s.error or "failed" for k, s in summary.stages.items() if s.status == "failed"},
        tracking=summary.tracking,
    )
    if run.artifact_dir(TaskSpec) is not None:
        _task(ev, run.artifact(TaskSpec))
    if run.artifact_dir(EvaluationReport) is not None:
        _evaluation(ev, run.artifact(EvaluationReport))
    if not ev.test:
        ev.test_missing_reason = (
            "the run failed before the test evaluation" if ev.failed else "no stage evaluated a model on test"
        )
    if run.artifact_dir(ExportBundle) is not None:
        _shipped(ev, run.artifact(ExportBundle), summary)
    sizes = next((s.sizes for s in summary.stages.values() if s.sizes is not None), None)
    audit = run.artifact(AuditReport) if run.artifact_dir(AuditReport) is not None else None
    ev.audit = _audit(audit, None if sizes is None else sizes.test)
    return ev
