"""Metrics against MedMNIST's own evaluator and scikit-learn on random data; bad input."""

from __future__ import annotations

import numpy as np
import pytest
from medmnist.evaluator import getACC, getAUC
from sklearn import metrics as skm

from closedloop.core.errors import ClosedLoopError, DataError
from closedloop.stats.errors import StatsError
from closedloop.stats.metrics import METRICS, compute_metric, compute_metrics, make_metric

RNG = np.random.default_rng(42)


def _binary(n: int = 400, ties: bool = True):
    y = RNG.integers(0, 2, n)
    p = RNG.random(n)
    if ties:
        p = np.round(p, 2)  # ties and exact 0.5 values exercise the tie and threshold rules
    return y, np.stack([1 - p, p], axis=1)


@pytest.mark.parametrize("seed", range(3))
def test_binary_matches_medmnist(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300), 1)
    P = np.stack([1 - p, p], axis=1)
    r = compute_metrics(["auc", "acc"], y, P, "binary", convention="medmnist")
    assert r["auc"] == pytest.approx(getAUC(y[:, None], P, "binary-class"), abs=1e-12)
    assert r["acc"] == pytest.approx(getACC(y[:, None], P, "binary-class"), abs=1e-12)
    # (N,) and (N,1) scores are the same predictions
    assert compute_metric("auc", y, p, "binary", convention="medmnist") == pytest.approx(r["auc"], abs=1e-12)
    assert compute_metric("acc", y, p[:, None], "binary", convention="medmnist") == r["acc"]


@pytest.mark.parametrize("task,pt", [("multi-class", "multiclass"), ("ordinal-regression", "ordinal")])
def test_multiclass_matches_medmnist(task: str, pt: str) -> None:
    y = RNG.integers(0, 5, 500)
    P = RNG.dirichlet(np.ones(5), 500)
    r = compute_metrics(["auc", "acc"], y, P, pt, convention="medmnist")
    assert r["auc"] == pytest.approx(getAUC(y[:, None], P, task), abs=1e-12)
    assert r["acc"] == pytest.approx(getACC(y[:, None], P, task), abs=1e-12)


def test_multilabel_matches_medmnist() -> None:
    y = RNG.integers(0, 2, (300, 6))
    P = np.round(RNG.random((300, 6)), 2)
    r = compute_metrics(["auc", "acc"], y, P, "multilabel", convention="medmnist")
    assert r["auc"] == pytest.approx(getAUC(y, P, "multi-label, binary-class"), abs=1e-12)
    assert r["acc"] == pytest.approx(getACC(y, P, "multi-label, binary-class"), abs=1e-12)


def test_binary_matches_sklearn() -> None:
    y, P = _binary()
    p = P[:, 1]
    pred = p >= 0.5
    r = compute_metrics(list(METRICS.keys() - {"rmse", "mae", "qwk"}), y, P, "binary")
    assert r["auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert r["pr_auc"] == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    assert r["acc"] == pytest.approx(skm.accuracy_score(y, pred))
    assert r["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert r["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert r["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert r["log_loss"] == pytest.approx(skm.log_loss(y, P), rel=1e-9)
    # threshold moves the decision rule
    r2 = compute_metric("recall", y, P, "binary", threshold=0.2)
    assert r2 == pytest.approx(skm.recall_score(y, p >= 0.2))


def test_multiclass_matches_sklearn() -> None:
    y = RNG.integers(0, 4, 600)
    P = RNG.dirichlet(np.ones(4), 600)
    pred = P.argmax(1)
    r = compute_metrics(
        ["auc", "acc", "f1", "precision", "recall", "balanced_accuracy", "log_loss", "pr_auc"],
        y,
        P,
        "multiclass",
    )
    assert r["auc"] == pytest.approx(skm.roc_auc_score(y, P, multi_class="ovr"), abs=1e-12)
    assert r["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert r["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert r["recall"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert r["log_loss"] == pytest.approx(skm.log_loss(y, P), rel=1e-9)
    assert r["pr_auc"] == pytest.approx(
        skm.average_precision_score(np.eye(4)[y], P, average="macro"), abs=1e-12
    )


def test_regression_and_ordinal_errors() -> None:
    y = RNG.normal(size=200)
    p = y + RNG.normal(scale=0.5, size=200)
    assert compute_metric("rmse", y, p, "regression") == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)))
    assert compute_metric("mae", y, p[:, None], "regression") == pytest.approx(skm.mean_absolute_error(y, p))
    yo = np.array([0, 1, 2, 2])
    Po = np.eye(3)[[0, 2, 2, 0]]
    assert compute_metric("mae", yo, Po, "ordinal") == pytest.approx(0.75)


def test_ece_perfectly_calibrated_is_small_and_overconfident_is_large() -> None:
    n = 20000
    p = RNG.random(n)
    y = (RNG.random(n) < p).astype(int)
    assert compute_metric("ece", y, p, "binary") < 0.02
    assert compute_metric("ece", y, np.where(p >= 0.5, 0.999, 0.001), "binary") > 0.2


def test_bad_input_messages() -> None:
    y, P = _binary(50)
    with pytest.raises(StatsError, match="valid metrics: auc, acc"):
        compute_metric("accuracy", y, P, "binary")
    with pytest.raises(StatsError, match="did you mean 'f1'"):
        compute_metric("f_1", y, P, "binary")
    with pytest.raises(StatsError, match="shape"):
        compute_metric("auc", y, np.ones((50, 3)), "binary")
    with pytest.raises(StatsError, match="49 rows|rows"):
        compute_metric("auc", y[:49], P, "binary")
    bad = P.copy()
    bad[3, 1] = np.nan
    with pytest.raises(StatsError, match="NaN"):
        compute_metric("acc", y, bad, "binary")
    with pytest.raises(StatsError, match="single class"):
        compute_metric("auc", np.zeros(50, int), P, "binary")
    with pytest.raises(StatsError, match=r"class\(es\) \[2\]"):
        compute_metric("auc", np.array([0, 1, 0, 1]), np.full((4, 3), 1 / 3), "multiclass")
    with pytest.raises(StatsError, match="not defined for regression"):
        compute_metric("auc", np.ones(5), np.ones(5), "regression")
    with pytest.raises(StatsError, match="0/1"):
        compute_metric("acc", np.array([0, 2, 1]), np.ones(3) / 2, "binary")
    # the error is a ValueError for plain callers and a ClosedLoopError/DataError for the CLI
    assert issubclass(StatsError, ValueError) and issubclass(StatsError, DataError)
    assert issubclass(StatsError, ClosedLoopError)


def test_qwk_is_scikit_learns_quadratic_kappa_in_every_bootstrap_row() -> None:
    """The quadratic weighted kappa of an ordinal task: the point value and each weighted (bootstrap) row
    equal scikit-learn's ``cohen_kappa_score(weights="quadratic")`` on the argmax ranks, rows repeated."""
    for k in (3, 5):
        y = RNG.integers(0, k, 250)
        P = RNG.dirichlet(np.ones(k), 250)
        P[np.arange(250), np.clip(y + RNG.integers(-1, 2, 250), 0, k - 1)] += 0.5
        pred = P.argmax(axis=1)
        want = skm.cohen_kappa_score(y, pred, weights="quadratic")
        assert compute_metric("qwk", y, P, "ordinal") == pytest.approx(want, abs=1e-12)
        m = make_metric("qwk", "ordinal")
        W = RNG.multinomial(250, np.full(250, 1 / 250), size=3).astype(float)
        rows = m.weighted(*m.prepare(y, P), W)
        for b in range(3):
            reps = W[b].astype(int)
            want_b = skm.cohen_kappa_score(np.repeat(y, reps), np.repeat(pred, reps), weights="quadratic")
            assert rows[b] == pytest.approx(want_b, abs=1e-12)
    # two ranks off costs four times one rank off: kappa falls further for the farther error
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    near, far = y.copy(), y.copy()
    near[0], far[0] = 1, 2
    eye = np.eye(3)
    assert compute_metric("qwk", y, eye[near], "ordinal") > compute_metric("qwk", y, eye[far], "ordinal")
    assert compute_metric("acc", y, eye[near], "ordinal") == compute_metric("acc", y, eye[far], "ordinal")
    # one class everywhere: chance and skill cannot be told apart
    assert np.isnan(compute_metric("qwk", np.zeros(5, int), np.tile([0.9, 0.1], (5, 1)), "ordinal"))


def test_rank_metrics_are_refused_where_the_classes_have_no_order() -> None:
    for problem in ("binary", "multiclass", "multilabel"):
        with pytest.raises(StatsError, match=rf"'qwk' is not defined for {problem} tasks; valid there: auc"):
            make_metric("qwk", problem)
