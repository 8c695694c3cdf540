"""The label-free estimate of an ordinal task's rank metrics (quadratic weighted kappa, mean absolute rank
error): when the probabilities are calibrated, the window's realized value falls in the estimate's interval."""

from __future__ import annotations

import numpy as np

from closedloop.monitoring.estimate import estimate, realized


def _calibrated_ranks(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    centre = rng.uniform(0, k - 1, n)
    P = np.exp(-0.8 * (np.arange(k)[None, :] - centre[:, None]) ** 2)
    return P / P.sum(axis=1, keepdims=True)


def test_rank_metrics_are_estimated_without_labels_and_cover_the_realized_value() -> None:
    rng = np.random.default_rng(0)
    P = _calibrated_ranks(400, 5, rng)
    est = estimate(P, "ordinal", 0.5, ["qwk", "mae", "acc"], draws=200, rng=np.random.default_rng(1))
    assert set(est) == {"qwk", "mae", "acc"}
    covered = {"qwk": 0, "mae": 0}
    far = {"qwk": 0.0, "mae": 0.0}
    for _ in range(100):  # windows whose labels are drawn from the probabilities: the estimate's premise
        y = (rng.random((400, 1)) > np.cumsum(P, axis=1)).sum(axis=1)
        real = realized(["qwk", "mae"], y, P, "ordinal", 0.5)
        for m in covered:
            covered[m] += est[m]["low"] <= real[m] <= est[m]["high"]
            far[m] = max(far[m], abs(real[m] - est[m]["value"]))
    assert covered["qwk"] >= 85 and covered["mae"] >= 85, covered
    assert far["qwk"] < 0.08 and far["mae"] < 0.1, far
    # a shifted window (true ranks one higher than the model thinks): the realized error is outside
    y_shift = np.minimum((rng.random((400, 1)) > np.cumsum(P, axis=1)).sum(axis=1) + 1, 4)
    assert realized(["mae"], y_shift, P, "ordinal", 0.5)["mae"] > est["mae"]["high"]


def test_rank_metrics_are_left_out_where_the_classes_have_no_order() -> None:
    rng = np.random.default_rng(0)
    P = _calibrated_ranks(100, 4, rng)
    assert set(estimate(P, "multiclass", 0.5, ["qwk", "mae", "acc"])) == {"acc"}
    y = P.argmax(axis=1)
    assert np.isnan(realized(["qwk"], y, P, "multiclass", 0.5)["qwk"])
