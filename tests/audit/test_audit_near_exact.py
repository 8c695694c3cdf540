"""The near-exact look: in a table whose rows are all distinct, a copy a little off is reported like an
exact copy when it sits closer to train than train's own nearest-neighbour distances allow (diabetes:
4 planted copies among 93 test rows, which no count against the random-split null can find)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.audit.test_audit_near_columns import car_like
from tests.audit.test_audit_near_density import planted_bundle
from tests.audit.test_audit_stage import run

from closedloop.core.errors import DataError
from closedloop.data.bundle import DatasetBundle
from closedloop.stages.audit.near_density import NEAR_EXACT, NearExactRule, near_exact_cut


def diabetes_like(planted: int = 0, seed: int = 0) -> tuple[DatasetBundle, set[int]]:
    """450 rows of 10 continuous columns (all distinct), 60/20/20; ``planted`` extra test rows are train
    rows with noise of sd 1% of each column's sd."""
    rng = np.random.default_rng(seed)
    n = 450
    X = pd.DataFrame(rng.normal(0, 1, (n, 10)), columns=[f"c{j}" for j in range(10)])
    y = (X["c0"] + rng.normal(0, 1, n) > 0).astype(int).to_numpy()
    src = rng.choice(int(n * 0.6), planted, replace=False)
    copies = X.iloc[src].copy()
    for c in X.columns:
        copies[c] += rng.normal(0, 0.01 * X[c].std(), planted)
    return planted_bundle("diabetes_like", X, y, src, copies)


def test_near_exact_copies_among_few_rows_are_an_overlap_error(tmp_path: Path) -> None:
    """As released: no near-exact row and no near finding above info. Four copies among 94 test rows:
    an overlap error naming near-exact copies, all four (and nothing else) marked excess with kind
    near_exact; off the look, no near_exact pair. The setting reaches metrics, summary.json and the report."""
    from closedloop.core.blocks import KeyValues, Section

    on = {"name": "duplicates", "params": {"near_exact_look": True}}
    off = {"name": "duplicates", "params": {"near_exact_look": False}}
    clean, _ = diabetes_like()
    stage, out = run(clean, tmp_path / "clean", checks=[on])  # must not stop
    m = out.audit.results["duplicates"]["metrics"]
    assert m["near_exact_look"] is True and m["n_near_exact"] == 0
    assert m["near_density"]["train-test"]["near_exact_cut"] > 0
    assert not [f for f in out.audit.findings if f["severity"] != "info" and "n_excess" in f["evidence"]]
    assert stage.summarize(out)["near_exact_look"] is True
    sec = next(
        b for b in stage.report(out, tmp_path / "clean") if isinstance(b, Section) and b.title == "duplicates"
    )
    assert any(isinstance(k, KeyValues) and k.items.get("near_exact_look") is True for k in sec.blocks)

    leaked, truth = diabetes_like(planted=4)
    with pytest.raises(DataError, match=r"train/test overlap: 4 test row\(s\) .* are near-exact copies"):
        run(leaked, tmp_path / "a", checks=[on])
    _, out = run(leaked, tmp_path / "b", checks=[on], stop_on=[])
    d = out.audit.duplicates
    exact_near = d[(d.split_a == "train") & (d.split_b == "test") & (d.kind == "near_exact")]
    assert set(exact_near.index_b) == truth and exact_near.excess.all()
    finding = next(f for f in out.audit.findings if "near_exact" in f["evidence"])
    assert finding["severity"] == "error" and finding["evidence"]["near_exact"] == 4
    assert finding["evidence"]["tail_exponent"] <= 10  # at most the number of columns
    _, out = run(leaked, tmp_path / "c", checks=[off], stop_on=[])
    assert not (out.audit.duplicates.kind == "near_exact").any()
    assert out.audit.results["duplicates"]["metrics"]["near_exact_look"] is False


def test_the_near_exact_look_does_not_apply_to_a_table_that_repeats_rows(tmp_path: Path) -> None:
    """Car-like data repeat rows: the look does not apply there (the non-zero and columns looks do)."""
    clean, _ = car_like()
    _, out = run(clean, tmp_path / "a", checks=["duplicates"])
    m = out.audit.results["duplicates"]["metrics"]
    assert m["near_exact_look"] is False and m["near_density"]["train-test"]["near_exact_cut"] is None


def test_the_cut_reads_the_lower_tail_as_a_power_law() -> None:
    """Uniform points in 3 dimensions: Hill's exponent near 3 (the shipped rule lowers it to its 95%
    bound); the cut solves n_query (k / n) (cut / t)^m = alpha; capped at the number of columns; no cut
    with ties at 0, too few distances or no query rows."""
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    U = rng.uniform(0, 1, (2000, 3))
    null = NearestNeighbors(n_neighbors=2).fit(U).kneighbors(U)[0][:, 1]
    point = near_exact_cut(null, 500, 0.001, 3, NearExactRule(0.05, False))
    assert point is not None and 2.3 < point.exponent <= 3.0 and point.rows == 100
    assert np.isclose(500 * (point.rows / 2000) * (point.cut / point.edge) ** point.exponent, 0.001)
    shipped = near_exact_cut(null, 500, 0.001, 3, NEAR_EXACT)
    assert shipped is not None and shipped.exponent < point.exponent and shipped.cut < point.cut
    assert near_exact_cut(null, 500, 0.001, 2, NearExactRule(0.05, False)).exponent == 2.0  # type: ignore[union-attr]
    assert near_exact_cut(np.r_[0.0, null], 500, 0.001, 3, NEAR_EXACT) is None
    assert near_exact_cut(null[:15], 500, 0.001, 3, NEAR_EXACT) is None
    assert near_exact_cut(null, 0, 0.001, 3, NEAR_EXACT) is None


def test_bad_near_exact_look_value_names_the_field() -> None:
    from closedloop.core.errors import ConfigError
    from closedloop.stages.audit import AuditDataset

    with pytest.raises(ConfigError, match="near_exact_look"):
        AuditDataset(checks=[{"name": "duplicates", "params": {"near_exact_look": "often"}}])
