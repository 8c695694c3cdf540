"""The audit benchmarks' runner leaves nothing behind: one ``tempfile.mkdtemp`` per call had left
2,300 empty ``/tmp/audit-*`` folders on the machine (a re-split benchmark calls it hundreds of times)."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load_bench(name: str):  # type: ignore[no-untyped-def]
    """A script of benchmarks/ as a module (its own imports of sibling scripts resolved)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"{name}_under_test", BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def test_the_benchmark_runner_removes_its_temporary_stage_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=90), "b": rng.normal(size=90)})
    y = rng.integers(0, 2, 90)
    meta = DatasetMeta(
        name="t", source="synthetic", kind="table", label_names=["0", "1"], feature_names=["a", "b"]
    )
    b = DatasetBundle(
        meta=meta,
        splits={
            k: Split(X=X.iloc[s].reset_index(drop=True), y=y[s])
            for k, s in (("train", slice(0, 50)), ("val", slice(50, 70)), ("test", slice(70, 90)))
        },
    )
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out, _, _ = load_bench("bench_audit_common").run_audit(b, checks=["duplicates"], stop_on=[])
    assert "duplicates" in out.audit.results  # it ran
    assert list(scratch.iterdir()) == []
