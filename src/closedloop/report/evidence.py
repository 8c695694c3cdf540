"""What the decision is computed from, read from a finished run directory (no model is loaded, no
split is opened: every number comes from ``summary.json`` and the stages' saved artifacts).

:func:`gather` turns a run directory into :class:`RunEvidence`; tests build :class:`RunEvidence` by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from closedloop.core.errors import RunDirError
from closedloop.core.io import read_json
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
    test_overlap: float | None = None
    """Share of test samples with an exact or near copy in train/val (upper bound: pairs / test size)."""
    gain_at_2x: float | None = None
    """Error reduction the learning curve predicts with twice the training data."""
    gain_ci: tuple[float, float] | None = None
    test_shift_auc: float | None = None
    """Adversarial AUC of train vs test (split-shift check): 0.5 when test looks like train."""


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
    selection: dict[str, Any] | None = None
    """The train stage's selection-bias estimate (metric, corrected_value: what validation predicts)."""
    references: list[Reference] = Field(default_factory=list)
    tracking: dict[str, Any] | None = None


# -- reading a run directory ---------------------------------------------------------------------------
def _first_json(dirs: list[Path], name: str) -> dict[str, Any] | None:
    for d in dirs:
        if (d / name).is_file():
            return read_json(d / name)
    return None


def _ci(v: Any) -> tuple[float, float] | None:
    if isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, int | float) for x in v):
        return (float(v[0]), float(v[1]))
    return None


def gate_evidence(bb: dict[str, Any]) -> GateEvidence:
    """Read the gate's own fields; whichever adjusted p-value it reports is the one it decided on."""
    n = bb.get("n_configs")
    if bb.get("p_gate") is not None:
        p, corr = bb["p_gate"], str(bb.get("correction") or "")
    elif bb.get("p_adjusted") is not None:
        p, corr = bb["p_adjusted"], str(bb.get("correction") or "adjusted")
    elif bb.get("p_holm") is not None and not bb.get("correction"):
        p, corr = bb["p_holm"], f"Holm over {n} configurations" if n else "Holm"
    else:
        p, corr = bb.get("p_value"), str(bb.get("correction") or "none")
    return GateEvidence(
        metric=str(bb.get("metric")),
        baseline=bb.get("baseline"),
        delta=float(bb.get("delta", 0.0)),
        ci95=_ci(bb.get("ci95")),
        p_value=bb.get("p_value"),
        p_reported=p,
        correction=corr,
        n_configs=n,
        significant=bool(bb.get("significant")),
        sentence=str(bb.get("sentence") or ""),
        evaluated_on=str(bb.get("evaluated_on") or "test"),
    )


def _on_test(v: dict[str, Any]) -> str:
    """``test``, plus the decision rule of a threshold-dependent figure (shipped threshold or 0.5)."""
    at = v.get("decided_at")
    return "test" if not at or at == "threshold-free" else f"test, at {at}"


def _per_day(d: dict[str, Any] | None) -> PerDay | None:
    if not d:
        return None

    def est(k: str) -> Estimate:
        x = d[k]
        return Estimate(value=x["value"], ci95=_ci(x.get("ci95")), evaluated_on=d.get("evaluated_on", "test"))

    return PerDay(
        unit=d.get("unit", "day"),
        caught=est("caught"),
        missed=est("missed"),
        false_alarms=est("false_alarms"),
        positive_name=d.get("positive_name"),
        cases=d.get("cases"),
        prevalence=d.get("prevalence"),
        evaluated_on=d.get("evaluated_on", "test")
        + (f", at the shipped threshold {d['threshold']:.4g}" if d.get("threshold") is not None else ""),
    )


def _audit(report: dict[str, Any] | None, n_test: int | None) -> AuditEvidence | None:
    if report is None:
        return None
    res = report.get("results") or {}

    def metric(check: str, key: str) -> Any:
        return ((res.get(check) or {}).get("metrics") or {}).get(key)

    # exact copies + near pairs in excess of the data's density; older reports: every close pair
    pairs = metric("duplicates", "overlap") or metric("duplicates", "pairs") or {}
    overlap = None
    if pairs and n_test:
        overlap = min(1.0, (pairs.get("train-test", 0) + pairs.get("val-test", 0)) / n_test)
    return AuditEvidence(
        findings=[
            Finding(check=f["check"], severity=f["severity"], message=f["message"])
            for f in report.get("findings", [])
        ],
        estimated_noise_rate=metric("label_issues", "estimated_noise_rate"),
        test_overlap=overlap,
        gain_at_2x=metric("learning_curve", "gain_at_2x"),
        gain_ci=_ci(metric("learning_curve", "gain_90ci")),
        test_shift_auc=metric("split_shift", "adversarial_auc_test"),
    )


def gather(run_dir: str | Path, summary: dict[str, Any] | None = None) -> RunEvidence:
    """Read a run directory into :class:`RunEvidence` (``summary`` defaults to its summary.json)."""
    run_dir = Path(run_dir)
    if summary is None:
        if not (run_dir / "summary.json").is_file():
            raise RunDirError(f"{run_dir}: no summary.json; it is not a finished closedloop run directory")
        summary = read_json(run_dir / "summary.json")
    run = RunDir(run_dir)
    stages = summary.get("stages") or {}
    ev = RunEvidence(
        name=str(summary.get("name", "")),
        run_dir=str(run_dir),
        status=str(summary.get("status", "?")),
        failed={k: str(v.get("error") or "failed") for k, v in stages.items() if v.get("status") == "failed"},
        tracking=summary.get("tracking"),
    )
    task = _first_json(run.artifact_dirs("TaskSpec"), "artifact.json")
    if task:
        from closedloop.stats.metrics import higher_is_better

        ev.problem_type = task.get("problem_type")
        ev.primary_metric = task.get("primary_metric")
        ev.acceptance = dict(task.get("acceptance") or {})
        names = set(task.get("metrics") or []) | set(ev.acceptance)
        ev.lower_is_better = sorted(m for m in names if not higher_is_better(m))
        c = task.get("constraints") or {}
        ev.constraints = ConstraintsEvidence(
            max_latency_ms=c.get("max_latency_ms"),
            latency_batch_size=c.get("latency_batch_size", 1),
            max_model_size_mb=c.get("max_model_size_mb"),
        )
        ev.business_declared = bool((task.get("business") or {}).get("cases_per_day"))
        ev.references = [
            Reference(
                name=r["name"],
                level=r.get("level", "literature"),
                metrics=r.get("metrics") or {},
                ci95={k: c for k, v in (r.get("ci95") or {}).items() if (c := _ci(v)) is not None},
                n=r.get("n"),
                comparison=HumanLevel.model_validate(r["comparison"]) if r.get("comparison") else None,
            )
            for r in task.get("references") or []
        ]
    evaluation = _first_json(run.artifact_dirs("EvaluationReport"), "artifact.json")
    if evaluation:
        for k, v in (evaluation.get("test") or {}).items():
            ev.test[k] = Estimate(value=v["value"], ci95=_ci(v.get("ci95")), evaluated_on=_on_test(v))
        if evaluation.get("beats_baseline"):
            ev.gate = gate_evidence(evaluation["beats_baseline"])
        final = (evaluation.get("phases") or {}).get("final") or {}
        ev.per_day = _per_day(evaluation.get("per_day") or final.get("per_day"))
    else:
        train = next((v for v in stages.values() if isinstance(v.get("test"), dict)), None)
        if train:
            for k, v in train["test"].items():
                ev.test[k] = Estimate(value=v["value"], ci95=_ci(v.get("ci95")), evaluated_on=_on_test(v))
            if train.get("beats_baseline"):
                ev.gate = gate_evidence(train["beats_baseline"])
    if not ev.test:
        ev.test_missing_reason = (
            "the run failed before the test evaluation" if ev.failed else "no stage evaluated a model on test"
        )
    meas = _first_json(run.artifact_dirs("ExportBundle"), "measurements.json")
    if meas:
        shipped = meas.get("shipped")
        var = (meas.get("variants") or {}).get(shipped) or {}
        p95 = ((meas.get("latency_ms") or {}).get(shipped) or {}).get("p95")  # runs before timings moved
        if p95 is None:  # measured latencies are stage timings (summary.json), not hashed artifact content
            key = f"latency_ms.{shipped}.p95"
            timed = [v.get("timings") or {} for v in stages.values() if v.get("shipped") == shipped]
            p95 = next((t[key] for t in timed if key in t), None)
        ev.shipped = ShippedEvidence(
            variant=str(shipped),
            blessed=bool(meas.get("blessed")),
            latency_p95_ms=p95,
            size_mb=var["size_bytes"] / 1e6 if var.get("size_bytes") else None,
            checks={str(k): bool(v) for k, v in (meas.get("checks") or {}).items()},
        )
    n_test = next((v["sizes"].get("test") for v in stages.values() if isinstance(v.get("sizes"), dict)), None)
    audit_dirs = run.artifact_dirs("AuditReport")
    ev.audit = _audit(_first_json(audit_dirs, "report.json"), n_test)
    ev.selection = next(
        (v["selection"] for v in stages.values() if isinstance(v.get("selection"), dict)), None
    )
    return ev
