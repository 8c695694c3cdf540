"""``check_audit_check``: the battery every audit check passes (like scikit-learn's ``check_estimator``).

``tests/test_common_plugins.py`` runs it over every built-in check, on a tiny image set and a tiny
table; run it on your own check with your own small data::

    from closedloop.stages.audit.checks import check_audit_check
    check_audit_check("my_pkg.checks:MinRows", bundle, workdir="check-tmp")

It raises ``AssertionError`` naming what failed and returns the check's result, or the reason it gave
for declining the data (``CheckSkipped``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from closedloop.core.checks import check_plugin_naming
from closedloop.core.ledger import TestLedger
from closedloop.core.stage import RunContext
from closedloop.data.bundle import DatasetBundle
from closedloop.stages.audit.base import (
    CHECKS,
    SEVERITIES,
    AuditCheck,
    AuditContext,
    CheckResult,
    CheckSkipped,
    Finding,
)
from closedloop.stages.task import DefineTaskConfig, build_task_spec


def bundle_digest(data: DatasetBundle) -> str:
    """A hash of every split's inputs (values and dtypes) and labels: equal before and after = untouched."""
    h = hashlib.sha256()
    for name, split in sorted(data.splits.items()):
        X = split.X
        if isinstance(X, pd.DataFrame):  # values and dtypes (object arrays have no stable bytes)
            X = pd.util.hash_pandas_object(X).to_numpy()
            h.update(str(split.X.dtypes.to_dict()).encode())
        h.update(name.encode() + np.ascontiguousarray(X).tobytes() + np.asarray(split.y).tobytes())
    return h.hexdigest()


def run_check(
    cls: type[AuditCheck], data: DatasetBundle, workdir: Path
) -> tuple[CheckResult | str, RunContext]:
    """Run one check as the audit stage does (one OpenMP thread, its own test ledger); a declined
    check gives ``"skipped: <reason>"``."""
    ctx = RunContext(
        stage_name="audit",
        stage_dir=Path(workdir),
        seed=0,
        test_ledger=TestLedger(Path(workdir) / "g.jsonl", Path(workdir) / "r.jsonl", run_id="r"),
    )
    actx = AuditContext(ctx, data)
    actx.current_check = cls.name
    task = build_task_spec(DefineTaskConfig(), data)
    try:
        with threadpool_limits(limits=1, user_api="openmp"):
            return cls().run(data, task, actx), ctx
    except CheckSkipped as exc:
        return f"skipped: {exc}", ctx


def check_audit_check(
    check: str | type[AuditCheck], data: DatasetBundle, workdir: str | Path
) -> CheckResult | str:
    """Check an audit check (registered name, import path or class) on ``data`` (small: it runs twice).

    The data is not modified; findings name the check, carry a known severity and a message and are
    JSON-able; figures are written to the stage's figures folder; tables are DataFrames; metrics are
    JSON-able; a check that opens the test split declares ``needs_test``; the same data and seed give
    the same findings and metrics; an unknown config key fails naming it; the class resolves by its
    import path. A check may decline data it cannot judge, with a reason (returned as a string).
    """
    cls = CHECKS.resolve(check, where="check_audit_check") if isinstance(check, str) else check
    name = cls.name
    assert data.kind in cls.applies_to, f"{name} applies to {sorted(cls.applies_to)}, not {data.kind!r} data"
    workdir = Path(workdir)
    before = bundle_digest(data)
    res, ctx = run_check(cls, data, workdir / "a")
    assert bundle_digest(data) == before, f"{name}: a check must not modify the data"
    if isinstance(res, str):
        assert len(res) > len("skipped: "), f"{name}: declined the data without a reason"
        return res
    assert isinstance(res, CheckResult), f"{name}: run() returned {type(res).__name__}, not CheckResult"
    for f in res.findings:
        assert isinstance(f, Finding) and f.check == name, f"{name}: a finding names check {f.check!r}"
        assert f.severity in SEVERITIES and f.message, f"{name}: severity {f.severity!r} / empty message"
        json.dumps(f.to_dict(), sort_keys=True, default=str)
    for fig in res.figures:
        assert (ctx.figures_dir / fig).is_file(), f"{name}: figure {fig} not written to ctx.figures_dir"
    assert all(isinstance(t, pd.DataFrame) for t in res.tables.values()), (
        f"{name}: a table is not a DataFrame"
    )
    json.dumps(res.metrics, default=float)
    opened = [e for e in ctx.test_ledger.entries() if name in e["reason"]]  # type: ignore[union-attr]
    assert not opened or cls.needs_test, f"{name} opens the test split but declares needs_test = False"
    again, _ = run_check(cls, data, workdir / "b")
    assert isinstance(again, CheckResult), f"{name}: declined the same data the second time"

    def as_json(value: object) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    same = as_json([f.to_dict() for f in again.findings]) == as_json([f.to_dict() for f in res.findings])
    assert same, f"{name}: same data and seed must give the same findings"
    assert as_json(again.metrics) == as_json(res.metrics), (
        f"{name}: same data and seed must give the same metrics"
    )
    check_plugin_naming(cls, CHECKS.resolve, name)
    return res
