"""Bootstrap intervals, paired comparisons, Holm, business framing and the gate."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from closedloop.stats.bootstrap import bootstrap_ci, metrics_with_ci, weight_chunks
from closedloop.stats.business import choose_threshold, per_day
from closedloop.stats.errors import StatsError
from closedloop.stats.gate import GateFailedError, apply_policy, beats_baseline
from closedloop.stats.metrics import make_metric
from closedloop.stats.multiple import holm
from closedloop.stats.paired import compare, delong, mcnemar


def _data(n: int = 600, signal: float = 0.4, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(signal * y + (1 - signal) * rng.random(n), 0, 1)
    return y, p


def test_weights_are_stratified_and_seeded() -> None:
    y = np.array([0] * 30 + [1] * 10)
    a = np.concatenate(list(weight_chunks(40, 50, 3, y)))
    b = np.concatenate(list(weight_chunks(40, 50, 3, y)))
    assert a.shape == (50, 40) and np.array_equal(a, b)
    assert np.all(a[:, y == 1].sum(1) == 10) and np.all(a[:, y == 0].sum(1) == 30)
    c = np.concatenate(list(weight_chunks(40, 50, 4, y)))
    assert not np.array_equal(a, c)


def test_vectorized_ci_matches_a_loop_over_sklearn() -> None:
    y, p = _data(300)
    m = make_metric("auc", "binary")
    fast = bootstrap_ci(m, y, p, n_resamples=200, seed=1)
    slow = bootstrap_ci(lambda yy, pp: roc_auc_score(yy, pp), y, p, n_resamples=200, seed=1)
    assert fast == pytest.approx(slow, abs=1e-12)
    value = m(y, p)
    assert fast[0] < value < fast[1]


def test_metrics_with_ci_coverage_is_plausible() -> None:
    # the true AUC of the generator; 95% intervals from 40 samples should cover it most of the time
    big_y, big_p = _data(200000, seed=99)
    truth = roc_auc_score(big_y, big_p)
    hits = 0
    for s in range(40):
        y, p = _data(300, seed=s)
        lo, hi = metrics_with_ci(["auc"], y, p, "binary", n_resamples=300, seed=s)["auc"]["ci95"]
        hits += lo <= truth <= hi
    assert hits >= 33


def test_ci_for_multiclass_multilabel_regression() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    P = rng.dirichlet(np.ones(3), 200)
    r = metrics_with_ci(["auc", "acc"], y, P, "multiclass", n_resamples=100)
    assert r["auc"]["ci95"][0] <= r["auc"]["value"] <= r["auc"]["ci95"][1]
    Y = rng.integers(0, 2, (200, 3))
    r = metrics_with_ci(["auc"], Y, rng.random((200, 3)), "multilabel", n_resamples=100)
    assert np.isfinite(r["auc"]["ci95"]).all()
    yr = rng.normal(size=200)
    r = metrics_with_ci(["rmse"], yr, yr + 0.1 * rng.normal(size=200), "regression", n_resamples=100)
    assert 0.05 < r["rmse"]["ci95"][0] < r["rmse"]["value"] < r["rmse"]["ci95"][1] < 0.2


def test_compare_detects_a_real_difference_and_not_a_null_one() -> None:
    y, good = _data(500, 0.5)
    _, weak = _data(500, 0.1, seed=5)
    r = compare("auc", y, good, weak, "binary", n_resamples=300)
    assert r.delta > 0.1 and r.ci95[0] > 0 and r.p_value < 0.01 and r.n == 500
    same = compare("acc", y, good, good, "binary", n_resamples=100)
    assert same.delta == 0 and same.p_value == 1.0
    auto = compare("auc", y, good, weak, "binary", n_resamples=100, method="auto")
    assert auto.method.startswith("DeLong") and auto.p_value < 0.01


def test_delong_agrees_with_bootstrap_and_is_symmetric() -> None:
    y, a = _data(400, 0.3)
    _, b = _data(400, 0.25, seed=8)
    d = delong(y, a, b)
    assert d.auc_a == pytest.approx(roc_auc_score(y, a))
    assert d.delta == pytest.approx(-delong(y, b, a).delta)
    assert d.p_value == pytest.approx(delong(y, b, a).p_value)
    boot = compare("auc", y, a, b, "binary", n_resamples=1000)
    assert boot.p_value == pytest.approx(d.p_value, abs=0.1)
    with pytest.raises(StatsError, match="positives and negatives"):
        delong(np.zeros(10, int), a[:10], b[:10])


def test_mcnemar() -> None:
    y = np.array([1] * 50)
    a = np.ones(50, int)
    b = np.ones(50, int)
    b[:12] = 0  # b wrong on 12 that a gets right
    r = mcnemar(y, a, b)
    assert r.a_only_correct == 12 and r.b_only_correct == 0 and r.method == "exact"
    assert r.p_value == pytest.approx(2 * 0.5**12)
    assert mcnemar(y, a, a).p_value == 1.0


def test_holm() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    with pytest.raises(StatsError):
        holm([0.1, float("nan")])


def test_threshold_by_cost_and_per_day() -> None:
    y, p = _data(2000, 0.3)
    t_equal = choose_threshold(y, p)
    t_fn_costly = choose_threshold(y, p, cost_fn=10)
    assert t_fn_costly < t_equal  # missing a positive costs more: flag more
    # a rare production prevalence raises the threshold
    assert choose_threshold(y, p, prevalence=0.05) > t_equal
    r = per_day(
        y,
        p,
        t_equal,
        {"cases_per_day": 1000, "prevalence": 0.1, "positive_name": "pneumonia"},
        n_resamples=200,
    )
    assert r["caught"]["value"] + r["missed"]["value"] == pytest.approx(100)
    lo, hi = r["false_alarms"]["ci95"]
    assert lo <= r["false_alarms"]["value"] <= hi
    assert (
        r["sentence"].startswith("per day: ")
        and "caught" in r["sentence"]
        and "false alarms" in r["sentence"]
    )
    assert "pneumonia" in r["sentence"]
    r2 = per_day(y, p, t_equal, {}, n_resamples=50)
    assert r2["sentence"].startswith("per 1,000 cases")
    with pytest.raises(StatsError, match="positives and negatives"):
        choose_threshold(np.zeros(10, int), p[:10])


class _Task:
    """The few TaskSpec fields the gate reads."""

    def __init__(self, metric: str = "auc", pt: str = "binary") -> None:
        self.primary_metric = metric
        self.problem_type = pt
        self.metric_convention = "standard"


def test_gate_significant_and_not() -> None:
    y, good = _data(800, 0.5)
    _, base = _data(800, 0.2, seed=3)
    res = beats_baseline(y, good, base, _Task(), n_configs=10, n_resamples=300)
    assert res.significant and res.delta > 0 and res.n_configs == 10
    assert res.p_adjusted == res.p_value
    assert set(res.to_dict()) >= {
        "metric",
        "delta",
        "ci95",
        "p_value",
        "p_adjusted",
        "n_configs",
        "significant",
        "sentence",
    }
    apply_policy(res, "fail")  # no error when significant
    apply_policy(res.to_dict(), "fail")
    # a model barely better than the baseline: not significant
    _, close = _data(800, 0.2005, seed=3)
    res2 = beats_baseline(y, close, base, _Task(), n_configs=50, n_resamples=300)
    assert not res2.significant and "NOT" in res2.sentence
    with pytest.raises(GateFailedError, match="NOT significantly"):
        apply_policy(res2, "fail")
    apply_policy(res2, "warn")
