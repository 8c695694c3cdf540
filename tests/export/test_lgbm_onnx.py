"""LightGBM -> ONNX: float32 thresholds keep the native predictions and give probability parity."""

from __future__ import annotations

import numpy as np
import pytest

lgb = pytest.importorskip("lightgbm")
pytest.importorskip("onnxmltools")
ort = pytest.importorskip("onnxruntime")

from closedloop.models.lgbm_onnx import float32_thresholds, floor32, lightgbm_to_onnx  # noqa: E402


def test_floor32_is_the_largest_float32_not_above() -> None:
    v = np.array([0.1, 1.0, -0.1, 1e-40, 3.4e38])
    f = floor32(v)
    assert (f <= v).all() and (f.astype(np.float32).astype(np.float64) == f).all()
    up = np.nextafter(f.astype(np.float32), np.float32(np.inf)).astype(np.float64)
    assert (up > v).all()


def test_onnx_parity_with_native_probabilities_including_missing_and_a_categorical() -> None:
    rng = np.random.default_rng(0)
    n = 1500
    X = rng.normal(size=(n, 5)).astype(np.float32)
    X[:, 4] = rng.integers(0, 12, n)  # a native categorical column (codes as floats)
    y = ((X[:, 0] + 1.5 * np.isin(X[:, 4], [1, 4, 6, 9]) + rng.normal(0, 0.5, n)) > 0.8).astype(int)
    X[rng.random((n, 5)) < 0.1] = np.nan
    X[:, 4] = np.where(np.isnan(X[:, 4]), 0, X[:, 4])
    m = lgb.LGBMClassifier(n_estimators=80, n_jobs=1, verbose=-1, min_child_samples=5)
    m.fit(X[:1000], y[:1000], categorical_feature=[4])
    Xt = X[1000:]
    p = m.predict_proba(Xt)[:, 1]
    assert "cat_threshold=" in m.booster_.model_to_string()  # a categorical split is exported too
    b32 = float32_thresholds(m.booster_)
    assert np.array_equal(b32.predict(Xt), p)  # the native model's predictions are unchanged
    sess = ort.InferenceSession(lightgbm_to_onnx(m, 5), providers=["CPUExecutionProvider"])
    po = sess.run(None, {"input": Xt})[1][:, 1]
    assert np.abs(po - p).max() <= 1e-5
