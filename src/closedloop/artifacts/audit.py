"""The audit's artifact: findings, each check's result, fixes applied, and the side tables.

Written by the ``audit`` stage (:mod:`closedloop.stages.audit`); read back by the report as this type
(``RunDir(path).artifact(AuditReport)``). A check's ``metrics`` are the check's own (a plug-in check
names its own), so they stay a mapping on disk; the finding and the check's status are typed records,
and a reader outside the audit reads a built-in check's metrics through its typed view
(:class:`DuplicateMetrics`, :class:`LabelIssueMetrics`, :class:`LearningCurveMetrics`,
:class:`SplitShiftMetrics`; ``report.metrics_of("duplicates", DuplicateMetrics)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import pandas as pd  # the side tables (and pydantic reads the dataclass's field types when it checks a port)
from pydantic import BaseModel, ConfigDict, Field

from closedloop.core.artifacts import Artifact
from closedloop.core.io import atomic_path, read_json, to_json, write_text_atomic


class AuditFinding(BaseModel):
    """One thing the audit says about the data (``report.json: findings``)."""

    model_config = ConfigDict(extra="forbid")

    check: str
    severity: str
    """``info``, ``warning`` or ``error``."""
    message: str
    evidence: dict[str, Any] = Field(default_factory=dict)


class CheckRecord(BaseModel):
    """One check's result (``report.json: results.<check>``)."""

    model_config = ConfigDict(extra="allow")

    status: str
    """``ok``, ``skipped`` or ``failed``."""
    metrics: dict[str, Any] = Field(default_factory=dict)
    """The check's own headline numbers (each check documents its keys)."""
    figures: dict[str, str] = Field(default_factory=dict)
    tables: list[str] = Field(default_factory=list)
    note: str | None = None


class CheckMetrics(BaseModel):
    """A typed view of one built-in check's ``metrics`` (the fields a reader outside the audit uses;
    the check's other keys are kept, unread). Every field is optional: a report from a version whose
    check did not write it reads as ``None``."""

    model_config = ConfigDict(extra="allow", frozen=True)


class SplitPairs(BaseModel):
    """Counts per pair of splits (``"train-test"``: between train and test, and so on)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    train_val: int = Field(0, alias="train-val")
    train_test: int = Field(0, alias="train-test")
    val_test: int = Field(0, alias="val-test")

    @property
    def counted(self) -> bool:
        """Whether the check wrote any pair count here (an empty mapping counts nothing)."""
        return bool(self.model_fields_set or self.model_extra)


class DuplicateMetrics(CheckMetrics):
    """The duplicates check (:mod:`closedloop.stages.audit.duplicates`)."""

    overlap: SplitPairs | None = None
    """Held-out rows with an exact copy, or a near copy in excess of the data's own density, per pair."""
    pairs: SplitPairs | None = None
    """Every close pair per pair of splits (an upper bound; all older reports have)."""

    def held_out_copies(self) -> SplitPairs | None:
        """The overlap counts, or every close pair where the report has no overlap (older format)."""
        return next((p for p in (self.overlap, self.pairs) if p is not None and p.counted), None)


class LabelIssueMetrics(CheckMetrics):
    """The label-issue check (:mod:`closedloop.stages.audit.label_issues`)."""

    estimated_noise_rate: float | None = None
    """Estimated share of wrong labels in train."""
    noise_is_evidence: bool | None = None
    """False when the estimate is at or above ``uninformative_ratio`` of its shuffled-label null: the
    models know too little about the labels, so the rate is not evidence of label noise."""
    n_flagged: int | None = None
    one_rank_from_suggested: int | None = None
    """Ordinal tasks: the suspects one rank from the grade suggested (neighbouring grades)."""

    @property
    def one_rank_share(self) -> float | None:
        """Ordinal tasks: the share of suspects one rank from the suggested grade."""
        if self.one_rank_from_suggested is None or not self.n_flagged:
            return None
        return self.one_rank_from_suggested / self.n_flagged


class LearningCurveMetrics(CheckMetrics):
    """The learning-curve check (:mod:`closedloop.stages.audit.learning_curve`)."""

    gain_at_2x: float | None = None
    """The error reduction predicted with twice the training data."""
    gain_90ci: list[float | None] | None = None
    """Its bootstrap 90% interval ``[low, high]`` (a bound is None where it was undefined: NaN)."""


class RepeatedEntitiesMetrics(CheckMetrics):
    """The repeated-entities check (:mod:`closedloop.stages.audit.entities`)."""

    entity_columns: list[str] | None = None
    """Columns that look like the id of an entity whose rows share their label (strongest first)."""
    test_share_sharing: dict[str, float] | None = None
    """Per such column, the share of test rows whose value also names train rows."""

    def worst(self) -> tuple[str, float] | None:
        """The column with the largest share of test rows sharing an entity with train, and that share."""
        shares = self.test_share_sharing or {}
        if not shares:
            return None
        column = max(shares, key=lambda c: shares[c])
        return column, shares[column]


class SplitShiftMetrics(CheckMetrics):
    """The split-shift check (:mod:`closedloop.stages.audit.split_shift`)."""

    adversarial_auc_test: float | None = None
    """The adversarial AUC of train against test (0.5: test looks like train)."""


M = TypeVar("M", bound=CheckMetrics)

METRIC_VIEWS: dict[str, type[CheckMetrics]] = {
    "duplicates": DuplicateMetrics,
    "label_issues": LabelIssueMetrics,
    "learning_curve": LearningCurveMetrics,
    "repeated_entities": RepeatedEntitiesMetrics,
    "split_shift": SplitShiftMetrics,
}
"""The built-in checks whose metrics are read outside the audit, and their views: checked when a report
is loaded, so a record these views cannot read is the run reader's one clear error (the file, its
layout version, what to do), not a failure later inside the report."""


SIDE_COLUMNS = {
    "duplicates": ["split_a", "index_a", "split_b", "index_b", "distance", "kind"],
    "label_issues": ["split", "index", "given_label", "suggested_label", "score"],
}


@dataclass
class AuditReport(Artifact):
    """Findings, per-check results, failed checks, fixes applied, and tables.

    Layout: ``<dir>/report.json`` (findings, results, failed, fixes, config),
    ``<dir>/duplicates.csv`` (split_a, index_a, split_b, index_b, distance, kind),
    ``<dir>/label_issues.csv`` (split, index, given_label, suggested_label, score = 1 - out-of-fold
    probability of the given label), and ``<dir>/<table>.csv`` for each other table a check produced.
    """

    findings: list[dict[str, Any]] = field(default_factory=list)
    """``{check, severity, message, evidence}``, in check order."""
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    """check -> ``{status: ok|skipped|failed, metrics, figures: {file: caption}, tables: [names], note}``
    (wall times are in the stage's ``timings``, not here)."""
    failed: dict[str, str] = field(default_factory=dict)
    """check -> error message, for checks that raised."""
    fixes: list[dict[str, Any]] = field(default_factory=list)
    """Explicit fix steps applied to a *copy* of the data (e.g. drop_duplicates)."""
    config: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    record_file: ClassVar[str] = "report.json"

    def table(self, name: str) -> pd.DataFrame:
        if name in self.tables:
            return self.tables[name]
        return pd.DataFrame(columns=SIDE_COLUMNS.get(name, []))

    def finding_records(self) -> list[AuditFinding]:
        """The findings as typed records, in check order."""
        return [AuditFinding.model_validate(f) for f in self.findings]

    def check(self, name: str) -> CheckRecord | None:
        """One check's result as a typed record (None when the check did not run)."""
        entry = self.results.get(name)
        return None if entry is None else CheckRecord.model_validate(entry)

    def metrics_of(self, name: str, view: type[M]) -> M:
        """Check ``name``'s metrics read as ``view`` (every field ``None`` when the check did not run)."""
        rec = self.check(name)
        return view.model_validate({} if rec is None else rec.metrics)

    @property
    def duplicates(self) -> pd.DataFrame:
        return self.table("duplicates")

    @property
    def label_issues(self) -> pd.DataFrame:
        return self.table("label_issues")

    def count(self, severity: str) -> int:
        return sum(f["severity"] == severity for f in self.findings)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        names = sorted(set(self.tables) | set(SIDE_COLUMNS))
        for name in names:
            with atomic_path(directory / f"{name}.csv") as tmp:
                self.table(name).to_csv(tmp, index=False)
        body = {
            "findings": self.findings,
            "results": self.results,
            "failed": self.failed,
            "fixes": self.fixes,
            "config": self.config,
            "tables": names,
        }
        write_text_atomic(directory / "report.json", to_json(body))

    @classmethod
    def load(cls, directory: Path) -> Self:
        directory = Path(directory)
        body = read_json(directory / "report.json")
        tables = {}
        for name in body.get("tables", []):
            p = directory / f"{name}.csv"
            if p.is_file():
                try:
                    tables[name] = pd.read_csv(p)
                except pd.errors.EmptyDataError:
                    tables[name] = pd.DataFrame(columns=SIDE_COLUMNS.get(name, []))
        report = cls(
            findings=body["findings"],
            results=body["results"],
            failed=body["failed"],
            fixes=body.get("fixes", []),
            config=body.get("config", {}),
            tables=tables,
        )
        for name, view in METRIC_VIEWS.items():
            report.metrics_of(name, view)  # a ValidationError here: the record is not this layout's
        return report

    def files(self, directory: Path) -> dict[str, str]:
        return {"report": "report.json", "duplicates": "duplicates.csv", "label_issues": "label_issues.csv"}
