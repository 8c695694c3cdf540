"""The two-part promotion rule: better on production (each model at its own threshold), and not worse
than a declared margin on the original test split."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.stats.errors import StatsError
from closedloop.stats.promotion import PairedCases, at_own_threshold, cost_comparison, decide_promotion


def _scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(2.5 * (y - 0.5) + rng.normal(size=n)) - 2.0))  # ranks well, too high
    return y, p


def test_own_threshold_mapping_keeps_decisions_and_ranking() -> None:
    p = np.array([0.01, 0.06, 0.07, 0.2, 0.9])
    q = at_own_threshold(p, 0.07)
    np.testing.assert_array_equal(q >= 0.5, p >= 0.07)
    assert np.all(np.diff(q) > 0)


def test_a_better_threshold_is_promoted_on_cost_and_balanced_accuracy() -> None:
    y, p = _scores(300, 0)
    # same probabilities: the champion flags almost everything (threshold 0.05), the challenger's
    # threshold was refitted where it now works
    d = decide_promotion(
        y, p, p, metric="expected_cost", problem_type="binary", threshold=0.85, champion_threshold=0.05,
        costs=(1.0, 2.0), extra_metrics=["balanced_accuracy"],
    )  # fmt: skip
    assert d.comparisons[0].metric == "expected_cost" and not d.higher_is_better
    assert d.challenger_value < d.champion_value and d.promote, d.reasons
    assert d.threshold == 0.85 and d.champion_threshold == 0.05
    assert d.comparisons[1].metric == "balanced_accuracy" and d.comparisons[1].delta > 0
    # identical decisions: not better
    same = decide_promotion(
        y, p, p, metric="expected_cost", problem_type="binary", threshold=0.3, costs=(1.0, 2.0)
    )
    assert not same.promote and "not better" in same.reasons[0]


def test_non_inferiority_on_the_original_test_blocks_a_challenger_worse_there() -> None:
    y, p = _scores(300, 1)
    y_old, p_old = _scores(300, 2)
    p_bad = np.where(y_old == 1, p_old * 0.2, p_old)  # the challenger misses most positives there
    ref_bad = PairedCases(y_true=y_old, challenger_proba=p_bad, champion_proba=p_old, evaluated_on="test")
    d = decide_promotion(
        y, p, p, metric="balanced_accuracy", problem_type="binary", threshold=0.85, champion_threshold=0.05,
        reference=ref_bad, margin=0.02, evaluated_on="production evaluation part",
    )  # fmt: skip
    assert d.significant and not d.promote
    assert d.non_inferiority is not None and not d.non_inferiority.ok
    assert any("NOT non-inferior" in r for r in d.reasons)
    ref_same = PairedCases(y_true=y_old, challenger_proba=p_old, champion_proba=p_old)
    ok = decide_promotion(
        y, p, p, metric="balanced_accuracy", problem_type="binary", threshold=0.85, champion_threshold=0.05,
        reference=ref_same, margin=0.02,
    )  # fmt: skip
    assert ok.promote and ok.non_inferiority.ok and "non-inferior within" in ok.reasons[-1]


def test_bad_input() -> None:
    y, p = _scores(50, 3)
    with pytest.raises(StatsError, match="costs"):
        decide_promotion(y, p, p, metric="expected_cost", problem_type="binary")
    with pytest.raises(StatsError, match="margin"):
        decide_promotion(
            y, p, p, metric="acc", problem_type="binary", margin=-1,
            reference=PairedCases(y_true=y, challenger_proba=p, champion_proba=p),
        )  # fmt: skip
    with pytest.raises(StatsError, match="equal"):
        cost_comparison(y, p[:10] > 0.5, p > 0.5, (1, 1))


def test_recalibration_methods_and_the_choice() -> None:
    from closedloop.stats.recalibration import choose_recalibration, expected_cost, fit_recalibration

    y, p = _scores(200, 4)  # ranks well, scores too high: the 0.5 threshold flags most negatives
    costs = (1.0, 1.0)
    base = expected_cost(y, p >= 0.5, costs)
    for method in ("threshold", "platt", "temperature"):
        r = fit_recalibration(y, p, method, costs=costs)
        assert r.n_fit == 200 and expected_cost(y, r.decide(p), costs) <= base
        assert np.all(np.diff(r.apply(np.sort(p))) >= 0)  # monotone: the ranking is untouched
    c = choose_recalibration(y, p, costs=costs, seed=0)
    assert set(c.cv_cost) == {"threshold", "platt", "temperature"} and c.folds == 5
    assert c.cv_cost[c.chosen.method] == min(c.cv_cost.values())
    with pytest.raises(StatsError, match="all equal"):
        fit_recalibration(y, np.full(200, 0.9999), "platt", costs=costs)
    with pytest.raises(StatsError, match="both classes"):
        fit_recalibration(np.ones(20, int), p[:20], "threshold", costs=costs)
    with pytest.raises(StatsError, match="at least 2 labels of each class"):
        choose_recalibration(np.r_[np.ones(20, int), 0], p[:21], costs=costs)


def test_row_weights_score_the_test_split_at_another_class_mix() -> None:
    """Weighted rows give the per-class accuracies mixed at the weights' shares, in the comparison and in
    non-inferiority (for acc and for the binary expected cost); bad weights are refused."""
    from closedloop.stats.paired import compare
    from closedloop.stats.promotion import PairedCases, cost_comparison, non_inferiority

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [300, 300, 400])
    champ = np.eye(3)[np.where(rng.random(1000) < 0.8, y, (y + 1) % 3)]
    chall = np.eye(3)[np.where(rng.random(1000) < np.array([0.95, 0.65, 0.65])[y], y, (y + 1) % 3)]
    mix = np.array([0.8, 0.1, 0.1])
    w = (mix / np.bincount(y) * len(y))[y]
    r = compare("acc", y, chall, champ, "multiclass", row_weights=w, n_resamples=300)

    def at_mix(p: np.ndarray) -> float:
        return float(sum(mix[c] * np.mean(p[y == c].argmax(1) == c) for c in range(3)))

    assert r.delta == pytest.approx(at_mix(chall) - at_mix(champ)) and "rows weighted" in r.method
    assert r.delta > 0 > compare("acc", y, chall, champ, "multiclass", n_resamples=300).delta
    cases = PairedCases(y_true=y, challenger_proba=chall, champion_proba=champ, weights=w)
    assert non_inferiority(cases, metric="acc", margin=0.0, problem_type="multiclass").ok
    assert not non_inferiority(
        cases.model_copy(update={"weights": None}), metric="acc", margin=0.0, problem_type="multiclass"
    ).ok
    with pytest.raises(StatsError, match="row_weights"):
        compare("acc", y, chall, champ, "multiclass", row_weights=-w)
    yb = (y > 0).astype(int)
    a, b = chall.argmax(1) > 0, champ.argmax(1) > 0
    wb = np.where(yb == 1, 0.25, 4.0)
    c = cost_comparison(yb, a, b, (1.0, 1.0), weights=wb, n_resamples=200)
    per = lambda d: np.where(d != yb, 1.0, 0.0)  # noqa: E731
    assert c.delta == pytest.approx(float(np.sum(wb * (per(a) - per(b))) / wb.sum()))
