"""The dataset audit stage: one module per check, registered by subclassing :class:`AuditCheck`."""

from closedloop.stages.audit.balance import ClassBalance
from closedloop.stages.audit.base import (
    CHECKS,
    AuditCheck,
    AuditContext,
    CheckConfig,
    CheckResult,
    CheckSkipped,
    Finding,
)
from closedloop.stages.audit.duplicates import Duplicates
from closedloop.stages.audit.entities import RepeatedEntities
from closedloop.stages.audit.label_issues import LabelIssues
from closedloop.stages.audit.leakage import TargetLeakage
from closedloop.stages.audit.learning_curve import LearningCurve
from closedloop.stages.audit.provenance import Provenance
from closedloop.stages.audit.quality import FeatureQuality
from closedloop.stages.audit.report import AuditReport
from closedloop.stages.audit.samples import LookAtSamples
from closedloop.stages.audit.shift import SplitShift
from closedloop.stages.audit.stage import AuditDataset, AuditDatasetConfig

__all__ = [
    "CHECKS",
    "AuditCheck",
    "AuditContext",
    "AuditDataset",
    "AuditDatasetConfig",
    "AuditReport",
    "CheckConfig",
    "CheckResult",
    "CheckSkipped",
    "ClassBalance",
    "Duplicates",
    "FeatureQuality",
    "Finding",
    "LabelIssues",
    "LearningCurve",
    "LookAtSamples",
    "Provenance",
    "RepeatedEntities",
    "SplitShift",
    "TargetLeakage",
]
