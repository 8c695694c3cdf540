"""The audit check contract and registry.

A check is one class (like cleanlab's issue managers): it declares ``name``, the data kinds it
``applies_to`` (``{"images", "table"}``), a pydantic ``Config``, and implements
``run(data, task, ctx) -> CheckResult``. Defining a subclass registers it, so a user adds a check by
subclassing and naming it in YAML (``checks: [my_check]`` or ``checks: ["my_pkg.checks:MyCheck"]``).

Example:
    >>> from closedloop.stages.audit.base import AuditCheck, CheckConfig, CheckResult, Finding
    >>> class CountRows(AuditCheck):
    ...     name = "doc_count_rows"
    ...     applies_to = frozenset({"images", "table"})
    ...     class Config(CheckConfig):
    ...         minimum: int = 10
    ...     def run(self, data, task, ctx):
    ...         n = len(data.train)
    ...         sev = "warning" if n < self.config.minimum else "info"
    ...         return CheckResult(findings=[Finding(self.name, sev, f"{n} training rows")])
    >>> CountRows({"minimum": 5}).config.minimum
    5
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from closedloop.core.config import validate_model
from closedloop.core.errors import ConfigError
from closedloop.core.registry import Registry
from closedloop.core.stage import RunContext
from closedloop.data.bundle import DatasetBundle, Split

Severity = Literal["info", "warning", "error"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "error")

CHECKS = Registry("audit check", builtin_modules=("closedloop.stages.audit",))
"""Every defined :class:`AuditCheck` subclass, by ``name``."""


class CheckConfig(BaseModel):
    """Base of every check's config: unknown keys fail."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


@dataclass
class Finding:
    """One thing the audit says about the data."""

    check: str
    severity: Severity
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "evidence": self.evidence,
        }


@dataclass
class CheckResult:
    """What a check returns: findings, figure files (name in ``ctx.figures_dir`` -> caption),
    tables (saved as ``<name>.csv`` in the report) and headline numbers."""

    findings: list[Finding] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


class CheckSkipped(Exception):
    """Raised by a check that cannot run on this data (e.g. label issues on regression): it is
    reported as skipped with this message, not as a failure."""


class AuditCheck:
    """Base class of an audit check. Subclasses set ``name``, ``applies_to``, optionally ``Config``,
    and implement :meth:`run`. Incomplete subclasses are rejected when defined."""

    name: ClassVar[str] = ""
    applies_to: ClassVar[frozenset[str]] = frozenset()
    Config: ClassVar[type[CheckConfig]] = CheckConfig
    needs_test: ClassVar[bool] = False
    """Whether the check reads the test split's inputs (recorded in the test ledger, purpose audit)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("__abstract__", False) or inspect.isabstract(cls):
            return
        where = f"audit check {cls.__qualname__}"
        if not cls.name or not isinstance(cls.name, str):
            raise TypeError(f"{where}: set a class attribute name = '<snake_case_name>'")
        kinds = set(cls.applies_to)
        if not kinds or not kinds <= {"images", "table"}:
            raise TypeError(
                f"{where}: applies_to must be a non-empty subset of {{'images', 'table'}}, got {kinds}"
            )
        if not (isinstance(cls.Config, type) and issubclass(cls.Config, CheckConfig)):
            raise TypeError(f"{where}: Config must subclass CheckConfig")
        if cls.run is AuditCheck.run:
            raise TypeError(f"{where}: implement run(self, data, task, ctx) -> CheckResult")
        cls.applies_to = frozenset(kinds)
        CHECKS.register(cls.name)(cls)

    def __init__(self, params: dict[str, Any] | CheckConfig | None = None, *, where: str = "") -> None:
        if isinstance(params, CheckConfig):
            params = params.model_dump()
        self.config = validate_model(
            type(self).Config, params or {}, where=where or f"audit check {self.name!r}"
        )

    def run(self, data: DatasetBundle, task: Any, ctx: AuditContext) -> CheckResult:
        """Examine the data; never modify it."""
        raise NotImplementedError

    def finding(self, severity: Severity, message: str, **evidence: Any) -> Finding:
        return Finding(self.name, severity, message, evidence)


def resolve_check(name: str, *, where: str = "") -> type[AuditCheck]:
    """A registered check name or an import path ``pkg.module:Class`` -> the check class."""
    cls = CHECKS.resolve(name, where=where)
    if not (isinstance(cls, type) and issubclass(cls, AuditCheck)):
        raise ConfigError(f"{where}: {name!r} is not an AuditCheck subclass (got {cls!r})")
    return cls


class AuditContext:
    """What a check may use: the run context, the test split (opened through the ledger with
    purpose ``audit``), cached feature matrices, and a seeded generator."""

    def __init__(self, run_ctx: RunContext, data: DatasetBundle) -> None:
        self.run = run_ctx
        self.data = data
        self._test: Split | None = None
        self._cache: dict[str, Any] = {}
        self.current_check = ""

    @property
    def figures_dir(self) -> Path:
        return self.run.figures_dir

    @property
    def logger(self) -> Any:
        return self.run.logger

    def rng(self, salt: str = "") -> np.random.Generator:
        return self.run.rng(f"audit/{self.current_check}/{salt}")

    def open_test(self, reason: str) -> Split:
        """The test split, for inputs/label-mix inspection only (no model is scored on it). Every
        check's first opening is recorded in the test ledger with ``purpose="audit"``."""
        key = f"test-opened/{self.current_check}"
        if key not in self._cache:
            self._test = self.run.open_test(
                self.data, reason=f"audit check {self.current_check!r}: {reason}", purpose="audit"
            )
            self._cache[key] = True
        assert self._test is not None
        return self._test

    def splits(self, *, with_test: bool, reason: str = "") -> dict[str, Split]:
        out = {"train": self.data.train, "val": self.data.val}
        if with_test:
            out["test"] = self.open_test(reason or "inspect test inputs")
        return out

    def cached(self, key: str, fn: Any) -> Any:
        """Compute once per audit (e.g. embeddings shared by the duplicate and shift checks)."""
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]
