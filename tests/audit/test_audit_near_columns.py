"""The columns look: a noisy copy differs a little in every column, a natural close pair by whole steps
in a few (Car: copies differ from their source in 56-57 of 69 columns, natural close pairs in 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.audit.test_audit_near_density import planted_bundle
from tests.audit.test_audit_stage import run

from closedloop.core.errors import DataError
from closedloop.data.bundle import DatasetBundle
from closedloop.stages.audit.near_density import near_excess


def car_like(n: int = 2000, planted: int = 0, seed: int = 0) -> tuple[DatasetBundle, set[int]]:
    """Car-like: rows from 120 designs of 60 three-level columns, and six prices that move together (one
    price level per row), so train repeats rows and a natural close pair differs in the six prices only.
    ``planted`` extra test rows are train rows with noise of sd 1% of each column's sd in every column:
    over 66 columns it adds up past the non-zero look's cut (the smallest price step)."""
    rng = np.random.default_rng(seed)
    designs = rng.integers(0, 3, (120, 60)).astype(float)
    base = rng.uniform(0.5, 1.5, (120, 6))
    k, level = rng.integers(0, 120, n), rng.integers(0, 30, n)
    X = pd.DataFrame(designs[k], columns=[f"g{j}" for j in range(60)])
    for j in range(6):
        X[f"price{j}"] = base[k, j] * (1 + 0.01 * level)
    y = (designs[k, 0] + rng.normal(0, 1, n) > 1).astype(int)
    a = int(n * 0.6)
    src = rng.choice(a, planted, replace=False)
    copies = X.iloc[src].copy()
    for c in X.columns:
        copies[c] += rng.normal(0, 0.01 * X[c].iloc[:a].std(), planted)
    return planted_bundle("car_like", X, y, src, copies)


def _flagged(out) -> set[int]:  # type: ignore[no-untyped-def]
    d = out.audit.duplicates
    return set(d[(d.split_a == "train") & (d.split_b == "test") & d.excess].index_b)


def test_noisy_copies_over_many_grid_columns_are_found_by_how_many_columns_differ(tmp_path: Path) -> None:
    """Without the look the copies are missed (their distance is a natural neighbour's); with it they
    are an overlap error naming the count, with recall >= 0.9; as released no near finding either way;
    the setting reaches metrics, summary.json and the report."""
    from closedloop.core.blocks import KeyValues, Section

    on = {"name": "duplicates", "params": {"columns_look": True}}
    off = {"name": "duplicates", "params": {"columns_look": False}}
    clean, _ = car_like()
    for i, check in enumerate((on, off)):
        stage, out = run(clean, tmp_path / f"clean{i}", checks=[check])  # must not stop
        assert not [f for f in out.audit.findings if f["severity"] != "info" and "n_excess" in f["evidence"]]
    stage, out = run(clean, tmp_path / "clean_on", checks=[on])
    assert out.audit.results["duplicates"]["metrics"]["columns_look"] is True
    assert stage.summarize(out)["near_columns_look"] is True
    sec = next(
        b
        for b in stage.report(out, tmp_path / "clean_on")
        if isinstance(b, Section) and b.title == "duplicates"
    )
    assert any(isinstance(k, KeyValues) and k.items.get("columns_look") is True for k in sec.blocks)

    leaked, truth = car_like(planted=25)
    with pytest.raises(
        DataError, match=r"train/test overlap: .*differing from that neighbour in more than 6 columns"
    ):
        run(leaked, tmp_path / "a", checks=[on])
    _, out = run(leaked, tmp_path / "b", checks=[on], stop_on=[])
    flagged = _flagged(out)
    assert len(flagged & truth) >= 0.9 * len(truth) and len(flagged - truth) <= 2
    assert out.audit.results["duplicates"]["metrics"]["near_density"]["train-test"]["columns_cut"] == 6.0
    _, out = run(leaked, tmp_path / "c", checks=[off], stop_on=[])
    assert len(_flagged(out) & truth) < 0.5 * len(truth)
    assert out.audit.results["duplicates"]["metrics"]["columns_look"] is False


def test_the_columns_look_counts_columns_against_the_references_own_close_pairs() -> None:
    """The cut is the reference's own 99% quantile of the count among its close pairs; a query at
    distance 0 (a tie) is never close; a query close by distance but moved in as few columns as the
    reference's pairs is not close; images-like data without close null pairs get no look."""
    rng = np.random.default_rng(0)
    ref = np.repeat(rng.integers(0, 5, (100, 10)).astype(np.float32), 2, axis=0)
    ref[1::2, 0] += 0.05  # each reference row has a partner differing in one column
    hashes = [i.to_bytes(4, "little") for i in range(len(ref))]
    copies = ref[::2][:10] + rng.normal(0, 0.005, (10, 10)).astype(np.float32)  # every column moved
    one_col = ref[::2][10:20].copy()
    one_col[:, 1] += 0.05  # a natural-looking neighbour: one column a step away
    query = np.concatenate([copies, one_col, ref[::2][20:25]])
    exact = np.zeros(len(query), bool)
    exact[20:] = True  # exact twins: the exact check's business
    ne = near_excess(ref, query, hashes, exact, 0.125, 1000, np.random.default_rng(0), columns_look=True)
    assert ne.columns_cut == 1.0 and set(np.flatnonzero(ne.close)) == set(range(10))
    assert ne.n_null_close == 0 and ne.moved is not None and (ne.moved[:10] == 10).all()
    assert "more than 1 columns" in ne.criterion
    off = near_excess(ref, query, hashes, exact, 0.125, 1000, np.random.default_rng(0))
    assert off.columns_cut is None and off.p_value > ne.p_value


def test_bad_columns_look_value_names_the_field() -> None:
    from closedloop.core.errors import ConfigError
    from closedloop.stages.audit import AuditDataset

    with pytest.raises(ConfigError, match="columns_look"):
        AuditDataset(checks=[{"name": "duplicates", "params": {"columns_look": "often"}}])
