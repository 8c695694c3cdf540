"""The audit's output artifact lives below the stages, in :mod:`closedloop.artifacts.audit`, so the
report reads it back typed; it is named here too, where the audit has always found it."""

from __future__ import annotations

from closedloop.artifacts.audit import SIDE_COLUMNS, AuditFinding, AuditReport, CheckRecord

__all__ = ["SIDE_COLUMNS", "AuditFinding", "AuditReport", "CheckRecord"]
