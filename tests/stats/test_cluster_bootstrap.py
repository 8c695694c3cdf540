"""Intervals on rows that come in groups (``data.group``): a resample draws whole groups. Rows of one group
share their outcome far more than rows of two, so a resample of rows counts each group's rows as independent
evidence and gives an interval too narrow."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from closedloop.stats.bootstrap import metrics_with_ci, weight_chunks
from closedloop.stats.errors import StatsError
from closedloop.stats.gate import beats_baseline
from closedloop.stats.paired import compare


def _clustered(n_groups: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A score that is right for some groups and wrong for others: accuracy varies by group."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), size)
    y = rng.integers(0, 2, len(g))
    right = rng.random(n_groups) < 0.7  # the model works on 70% of the groups
    p1 = np.where(right[g], np.where(y == 1, 0.8, 0.2), np.where(y == 1, 0.3, 0.7))
    return y, np.stack([1 - p1, p1], 1), g


def test_whole_groups_widen_the_interval_of_clustered_rows_and_not_of_independent_ones() -> None:
    y, P, g = _clustered(30, 20, 0)
    rows = metrics_with_ci(["acc"], y, P, "binary", n_resamples=500)["acc"]["ci95"]
    groups = metrics_with_ci(["acc"], y, P, "binary", n_resamples=500, clusters=g)["acc"]["ci95"]
    assert groups[1] - groups[0] > 2.5 * (rows[1] - rows[0])
    single = metrics_with_ci(["acc"], y, P, "binary", n_resamples=2000, clusters=np.arange(len(y)))["acc"][
        "ci95"
    ]
    stratified = metrics_with_ci(["acc"], y, P, "binary", n_resamples=2000)["acc"]["ci95"]
    # groups of one row: the row bootstrap (only not stratified by class), widths within 20%
    assert (single[1] - single[0]) == pytest.approx(stratified[1] - stratified[0], rel=0.2)


def test_each_resample_weighs_a_groups_rows_alike_and_draws_as_many_groups_as_there_are() -> None:
    g = np.array(["a", "a", "b", "c", "c", "c"])
    for W in weight_chunks(6, 300, seed=1, clusters=g):
        assert (W[:, 0] == W[:, 1]).all() and (W[:, 3] == W[:, 4]).all() and (W[:, 4] == W[:, 5]).all()
        groups_drawn = W[:, 0] + W[:, 2] + W[:, 3]
        assert (groups_drawn == 3).all()
    with pytest.raises(StatsError, match="at least 2 groups"):
        next(weight_chunks(3, 10, seed=0, clusters=np.zeros(3)))
    with pytest.raises(StatsError, match="3 ids for 4 rows"):
        next(weight_chunks(4, 10, seed=0, clusters=np.arange(3)))


def test_the_paired_comparison_and_the_gate_say_they_resampled_groups() -> None:
    y, P, g = _clustered(30, 20, 1)
    base = np.full_like(P, 0.5)
    rows = compare("acc", y, P, base, "binary", method="auto", n_resamples=300)
    grouped = compare("acc", y, P, base, "binary", method="auto", n_resamples=300, clusters=g)
    assert rows.method.startswith("McNemar") and grouped.method == "paired bootstrap of whole groups"
    assert grouped.ci95[1] - grouped.ci95[0] > 2 * (rows.ci95[1] - rows.ci95[0])
    task = SimpleNamespace(primary_metric="acc", problem_type="binary", metric_convention="standard")
    gate = beats_baseline(
        y,
        P,
        base,
        task,  # type: ignore[arg-type]
        n_resamples=300,
        clusters=g,
    )
    assert gate.n_groups == 30 and "n = 600 rows in 30 groups, resampled whole" in gate.sentence


def test_the_promotion_rule_resamples_whole_groups_in_both_parts() -> None:
    """``retrain`` on a grouped table: the challenger-vs-champion comparison and the non-inferiority check on
    the test split resample whole groups (``compare_runs`` passes the held-out split's groups)."""
    from closedloop.data.bundle import Split
    from closedloop.stages.monitor.retrain import drop_trained_on
    from closedloop.stats.promotion import PairedCases, decide_promotion

    y, P, g = _clustered(30, 20, 2)
    coin = np.random.default_rng(0).random(len(y))  # a champion that guesses
    worse = np.stack([1 - coin, coin], 1)
    kw = {"metric": "acc", "problem_type": "binary", "n_resamples": 300}
    rows = decide_promotion(y, P, worse, **kw)
    grouped = decide_promotion(y, P, worse, clusters=g, **kw)
    assert grouped.comparisons[0].n_groups == 30 and rows.comparisons[0].n_groups is None
    assert grouped.comparisons[0].method == "paired bootstrap of whole groups"
    ref = PairedCases(y_true=y, challenger_proba=P, champion_proba=worse, groups=g)
    ni = decide_promotion(y, P, worse, reference=ref, margin=0.01, **kw).non_inferiority
    ni_rows = decide_promotion(
        y, P, worse, reference=ref.model_copy(update={"groups": None}), margin=0.01, **kw
    )
    assert ni is not None and ni_rows.non_inferiority is not None
    assert ni.bound95 < ni_rows.non_inferiority.bound95  # the lower bound of whole groups is the wider one
    import pandas as pd

    held = Split(pd.DataFrame({"a": np.arange(6.0)}), np.zeros(6, int), groups=np.array(list("aabbcc")))
    kept, _ = drop_trained_on(held, [("challenger", Split(held.X.iloc[:1], np.zeros(1, int)))])
    assert kept.groups.tolist() == list("abbcc")


def test_the_exports_variant_intervals_resample_whole_groups() -> None:
    """The export judges a variant on the deployed model's held-out rows; on a grouped table its intervals
    resample whole groups too (``HeldOutRows.groups``, from the held-out split)."""
    from closedloop.stages.export.evaluate import compare_metric

    y, P, g = _clustered(30, 20, 3)
    rows = compare_metric("acc", y, P, P, "binary", 0.5, n_boot=300)
    grouped = compare_metric("acc", y, P, P, "binary", 0.5, n_boot=300, groups=g)
    assert grouped.value == rows.value
    assert grouped.ci[1] - grouped.ci[0] > 2 * (rows.ci[1] - rows.ci[0])
