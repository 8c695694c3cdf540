"""``benchmarks/bench_tables.py``'s helpers for development-only diagnoses (issue #25, session 18): a
re-split of the development part (``development_bundle(resplit=...)``) holds the same development rows and
never a row of the split seed's test part, and the reference's search can be fixed to a trial count
(``tuned_lightgbm(n_trials=...)``) so the machine's load does not choose it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .test_bench_table_rows import _bench_tables


def _table(n: int = 500) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=n), "row": np.arange(n, dtype=np.float64)})
    return X, (X["a"] + rng.normal(0, 0.5, n) > 0).to_numpy().astype(np.int64)


def test_a_resplit_partitions_the_same_development_rows_and_never_the_test_part() -> None:
    bt = _bench_tables()
    X, y = _table()
    _, X_dev, _ = bt.bundle(X, y, [], "t", 0)
    dev = set(X_dev["row"])
    assert len(dev) == 400  # the split seed's test part (100 rows) is not in it

    def rows(d, k: str) -> set[float]:  # type: ignore[no-untyped-def]
        return set(d.splits[k].X["row"])

    base, _ = bt.development_bundle(X, y, [], "t", 0, "t_dev")
    same, _ = bt.development_bundle(X, y, [], "t", 0, "t_dev", resplit=0)
    again, _ = bt.development_bundle(X, y, [], "t", 0, "t_dev", resplit=100)
    for d in (base, again):
        parts = [rows(d, k) for k in ("train", "val", "test")]
        assert set().union(*parts) == dev and sum(map(len, parts)) == len(dev)  # a partition of dev
    assert all(rows(base, k) == rows(same, k) for k in ("train", "val", "test"))  # default: the split seed
    assert rows(again, "test") != rows(base, "test")  # another partition


def test_the_references_search_can_be_fixed_to_a_trial_count() -> None:
    pytest.importorskip("lightgbm")
    pytest.importorskip("optuna")
    bt = _bench_tables()
    X, y = _table(300)
    # a generous time budget: the trial count, not the clock, ends the search
    model, info, rounds = bt.tuned_lightgbm(X, y, seconds=600, seed=0, n_trials=2)
    assert info["trials"] == 2 and rounds >= 1 and model.predict(X).shape == (300,)


def test_the_family_choice_line_says_the_choices_paired_interval(tmp_path: Path) -> None:
    import json
    from types import SimpleNamespace

    bt = _bench_tables()
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "stage.json").write_text(json.dumps({"timings": {}}))
    fam = {"evaluated_on": "validation", "metric": "auc", "chosen": "lgbm", "difference": 0.0026}
    fam |= {"rows": [{"family": "lgbm", "score": 0.9155}, {"family": "mlp", "score": 0.9129}]}
    res = SimpleNamespace(run_dir=tmp_path, summary={"stages": {"train": {"dir": "train", "families": fam}}})
    bt.family_choice(res, "x")
    assert bt.LINES[-1].startswith(
        "family choice on validation auc (x): trees 0.9155, MLP 0.9129 -> chose lgbm"
    )
    assert "(difference +0.0026)" in bt.LINES[-1]  # no interval in the summary: the line as before
    bt.family_choice(
        SimpleNamespace(
            run_dir=tmp_path,
            summary={
                "stages": {"train": {"dir": "train", "families": fam | {"paired_ci95": [-0.0006, 0.0059]}}}
            },
        ),
        "x",
    )
    assert "(difference +0.0026; paired 95% interval [-0.0006, +0.0059])" in bt.LINES[-1]
