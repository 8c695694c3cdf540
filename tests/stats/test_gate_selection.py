"""The test gate's correction, the selection bias of the winner's validation score, the promotion rule."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.stats.errors import StatsError
from closedloop.stats.gate import apply_policy, beats_baseline, gate_on_test
from closedloop.stats.multiple import holm
from closedloop.stats.promotion import Check, decide_promotion
from closedloop.stats.selection import selection_bias


class _Task:
    """The few TaskSpec fields the gate reads."""

    def __init__(self, metric: str = "auc", pt: str = "binary") -> None:
        self.primary_metric = metric
        self.problem_type = pt
        self.metric_convention = "standard"


def _breast_like(seed: int = 10):
    """156 test cases where the model beats the baseline by about +0.08 AUC (one-sided p ~ 0.01),
    like BreastMNIST's shipped run (+0.081, 95% CI [0.025, 0.142], n = 156)."""
    rng = np.random.default_rng(seed)
    n = 156
    y = rng.integers(0, 2, n)
    shared = rng.normal(size=n) * 1.5
    model = y + shared + rng.normal(size=n) * 0.3
    base = y + shared + rng.normal(size=n) * 1.6
    return y, model, base


def test_single_declared_comparison_is_not_multiplied_by_the_number_of_configs() -> None:
    y, model, base = _breast_like()
    res = beats_baseline(y, model, base, _Task(), n_configs=14, n_resamples=300)
    assert 0.05 / 14 < res.p_value < 0.05  # Holm over 14 configurations would have hidden it
    assert res.p_adjusted == res.p_value
    assert res.significant and res.correction == "none" and res.n_test_comparisons == 1
    assert res.n_configs == 14 and res.evaluated_on == "test"
    assert res.ci95[0] > 0 and res.ci95[0] <= res.bound95 <= res.delta
    assert "one-sided 95% bound > +0.0" in res.sentence
    assert "no correction for the 14 configurations" in res.sentence
    assert "NOT" not in res.sentence
    # n_configs changes nothing in the decision
    other = beats_baseline(y, model, base, _Task(), n_configs=1000, n_resamples=300)
    assert other.p_adjusted == res.p_adjusted and other.significant
    apply_policy(res, "fail")


def test_holm_over_the_comparisons_made_on_test() -> None:
    y, model, base = _breast_like()
    rng = np.random.default_rng(1)
    weak = rng.random(len(y))
    res = gate_on_test(y, model, {"logreg": base, "knn": weak}, _Task(), metrics=["acc"], n_resamples=300)
    assert res.n_test_comparisons == 4 and res.correction == "Holm over 4 test comparisons"
    assert [(c.metric, c.baseline) for c in res.comparisons] == [
        ("auc", "logreg"),
        ("auc", "knn"),
        ("acc", "logreg"),
        ("acc", "knn"),
    ]
    expected = holm([c.p_value for c in res.comparisons])
    assert [c.p_adjusted for c in res.comparisons] == pytest.approx(expected)
    assert res.p_adjusted == pytest.approx(expected[0]) and res.p_adjusted >= res.p_value
    assert res.metric == "auc" and res.baseline == "logreg"  # the declared comparison decides
    assert "Holm adjustment over the 4 comparisons made on test" in res.sentence
    assert res.significant == (res.p_adjusted < 0.05)


def test_gate_not_significant_and_lower_is_better() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    base = np.clip(0.3 * y + 0.7 * rng.random(400), 0, 1)
    worse = np.clip(0.1 * y + 0.9 * rng.random(400), 0, 1)
    res = beats_baseline(y, worse, base, _Task(), n_resamples=200)
    assert not res.significant and "NOT" in res.sentence and "worse than" in res.sentence
    yr = rng.normal(size=300)
    res3 = beats_baseline(
        yr, yr + 0.1 * rng.normal(size=300), np.zeros(300), _Task("rmse", "regression"), n_resamples=200
    )
    assert res3.delta < 0 and res3.significant
    with pytest.raises(StatsError, match="at least one"):
        gate_on_test(y, worse, {}, _Task())


def _equal_configs(n_configs: int, n: int = 150, seed: int = 0):
    """Configurations equally good in truth: the same signal, each with its own noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    signal = y * 1.0
    return y, [signal + rng.normal(size=n) * 1.2 for _ in range(n_configs)]


def test_selection_bias_is_positive_for_many_equal_configs_and_zero_for_one() -> None:
    y, cands = _equal_configs(20)
    many = selection_bias("auc", y, cands, "binary", n_resamples=400)
    assert many.optimism > 0.01 and many.evaluated_on == "validation"
    assert many.corrected_value == pytest.approx(many.winner_value - many.optimism)
    assert many.winner_is_best and many.n_candidates == 20 and many.n_validation == 150
    assert "selected among 20 configurations" in many.sentence
    one = selection_bias("auc", y, cands[:1], "binary", n_resamples=400)
    assert abs(one.optimism) < 0.005 and one.winner_repick_rate == 1.0
    assert many.optimism > 5 * abs(one.optimism)
    # a winner chosen by another criterion (e.g. cross-validation): flagged, the corrected value is a floor
    worst = int(
        np.argmin([selection_bias("auc", y, [c], "binary", n_resamples=1).winner_value for c in cands])
    )
    other = selection_bias("auc", y, cands, "binary", winner=worst, n_resamples=200)
    assert (
        not other.winner_is_best and "at least" in other.sentence and other.winner == f"configuration {worst}"
    )


def test_selection_bias_tracks_the_realized_gap_with_known_truth() -> None:
    """The estimate is of the size of what the winner actually loses on fresh data from the same
    distribution (averaged over simulated validation sets)."""
    est, gap = [], []
    for s in range(8):
        y, cands = _equal_configs(15, n=200, seed=s)
        sb = selection_bias("auc", y, cands, "binary", n_resamples=200, seed=s)
        y2, fresh = _equal_configs(15, n=4000, seed=100 + s)  # same truth: every config is equally good
        from closedloop.stats.metrics import compute_metric

        est.append(sb.optimism)
        gap.append(sb.winner_value - compute_metric("auc", y2, fresh[0], "binary"))
    assert np.mean(est) > 0 and np.mean(gap) > 0
    assert 0.3 < np.mean(est) / np.mean(gap) < 2.0


def test_selection_bias_lower_is_better_and_bad_input() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    cands = [y + rng.normal(size=200) for _ in range(10)]
    sb = selection_bias("rmse", y, cands, "regression", n_resamples=300)
    assert sb.optimism > 0 and sb.corrected_value > sb.winner_value and not sb.higher_is_better
    with pytest.raises(StatsError, match="at least one"):
        selection_bias("auc", y, [], "binary")
    with pytest.raises(StatsError, match="predictions"):
        yb = rng.integers(0, 2, 50)
        selection_bias("auc", yb, [rng.random(50), rng.random((50, 3))], "binary")
    with pytest.raises(StatsError, match="winner index"):
        selection_bias("rmse", y, cands, "regression", winner=10, n_resamples=10)


def test_promotion_rule() -> None:
    y, model, base = _breast_like()
    d = decide_promotion(y, model, base, metric="auc", problem_type="binary", acceptance={"auc": 0.6})
    assert d.promote and d.p_adjusted == d.p_value and d.correction == "none"
    assert d.challenger_value > d.champion_value and d.evaluated_on == "test"
    assert d.checks[0].name == "acceptance.auc" and d.checks[0].ok
    # the same models, a bar the challenger misses: not promoted, and the reason says which bar
    d2 = decide_promotion(y, model, base, metric="auc", problem_type="binary", acceptance={"auc": 0.99})
    assert not d2.promote and any("acceptance.auc not met" in r for r in d2.reasons)
    # an operational constraint fails
    slow = Check(name="max_latency_ms", value=40.0, bar=20.0, ok=False)
    d3 = decide_promotion(y, model, base, metric="auc", problem_type="binary", constraints=[slow])
    assert not d3.promote and any("max_latency_ms" in r for r in d3.reasons)
    # identical models: not better
    d4 = decide_promotion(y, base, base, metric="auc", problem_type="binary")
    assert not d4.promote and "not better" in d4.reasons[0]
    # the champion is better: never promoted
    d5 = decide_promotion(y, base, model, metric="auc", problem_type="binary", evaluated_on="live")
    assert not d5.promote and not d5.better and d5.evaluated_on == "live"
    # several metrics compared: Holm over them, and the decision uses the adjusted p-value
    d6 = decide_promotion(y, model, base, metric="auc", problem_type="binary", extra_metrics=["acc", "f1"])
    assert len(d6.comparisons) == 3 and d6.correction == "Holm over 3 comparisons"
    assert d6.p_adjusted >= d6.p_value
    assert d6.p_adjusted == pytest.approx(holm([c.p_value for c in d6.comparisons])[0])


def test_promotion_not_significant_small_gain() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 120)
    shared = rng.normal(size=120) * 1.5
    champ = y + shared + rng.normal(size=120) * 0.6
    chall = y + shared + rng.normal(size=120) * 0.55
    d = decide_promotion(y, chall, champ, metric="auc", problem_type="binary")
    if d.better:
        assert not d.promote and "not significant" in d.reasons[0]
    else:
        assert not d.promote and "not better" in d.reasons[0]
