"""Which gradient-boosted tree library for closedloop's tree family (issue #25, item 1): LightGBM or
scikit-learn's HistGradientBoosting, measured on this machine in one run.

Per table (scikit-learn's breast_cancer; a synthetic table with a categorical column and 10% missing
values): fit time with one OpenMP thread (early stopping on a validation part), test ROC AUC with a
bootstrap 95% interval, ONNX conversion (LightGBM: onnxmltools with ai.onnx.ml 3; HGB: skl2onnx) and
probability parity with the native model on test rows (max abs difference), ONNX size and latency.
Both models see the same rows; categoricals are native (LightGBM categorical_feature / HGB
categorical_features), missing values stay NaN. Timings: the machine is shared (2 cores, 7 users).

Run: .venv/bin/python benchmarks/bench_trees_choice.py
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

OPSET = {"": 17, "ai.onnx.ml": 3}
"""skl2onnx takes a per-domain dict; onnxmltools 1.16's convert_lightgbm takes an int only (a dict
fails with a TypeError) and at most 15 (17: "higher than ... the converter support (15)")."""
LGBM_OPSET = 15


def tables() -> list[tuple[str, pd.DataFrame, np.ndarray, list[int]]]:
    from sklearn.datasets import load_breast_cancer, make_classification

    d = load_breast_cancer(as_frame=True)
    out = [("breast_cancer", d.data.astype(np.float32), d.target.to_numpy(), [])]
    X, y = make_classification(n_samples=6000, n_features=12, n_informative=6, random_state=0)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(12)]).astype(np.float32)
    rng = np.random.default_rng(0)
    site = rng.integers(0, 6, len(y))
    y = np.where(rng.random(len(y)) < 0.15, (site % 2), y)  # the category carries signal
    df["site"] = site.astype(np.float32)  # category codes as floats (the raw-input convention)
    mask = rng.random(df.shape) < 0.10
    mask[:, -1] = False
    df = df.mask(mask)
    out.append(("synthetic (categorical + 10% missing)", df, y, [df.shape[1] - 1]))
    return out


def auc_ci(y: np.ndarray, p: np.ndarray, n: int = 1000) -> tuple[float, float, float]:
    rng = np.random.default_rng(0)
    stats = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        if len(set(y[i])) == 2:
            stats.append(roc_auc_score(y[i], p[i]))
    return roc_auc_score(y, p), float(np.quantile(stats, 0.025)), float(np.quantile(stats, 0.975))


def onnx_run(model_bytes: bytes, X: np.ndarray) -> tuple[np.ndarray, float]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = sess.run(None, {name: X})
    t0 = time.perf_counter()
    for _ in range(20):
        sess.run(None, {name: X[:1]})
    lat = (time.perf_counter() - t0) / 20 * 1000
    return np.asarray(outs[1])[:, 1], lat


def fit_lightgbm(Xtr, ytr, Xva, yva, cat):  # type: ignore[no-untyped-def]
    import lightgbm as lgb

    m = lgb.LGBMClassifier(n_estimators=1000, learning_rate=0.05, num_leaves=31, n_jobs=1, verbose=-1)
    m.fit(
        Xtr,
        ytr,
        eval_X=(Xva,),
        eval_y=(yva,),
        categorical_feature=cat or "auto",
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )
    return m


def fit_hgb(Xtr, ytr, Xva, yva, cat):  # type: ignore[no-untyped-def]
    from sklearn.ensemble import HistGradientBoostingClassifier

    # HGB's early stopping takes its own validation share of the rows it is given; give it train+val
    # so both libraries stop on a part of the same rows
    X = np.concatenate([Xtr, Xva])
    y = np.concatenate([ytr, yva])
    m = HistGradientBoostingClassifier(
        max_iter=1000,
        learning_rate=0.05,
        max_leaf_nodes=31,
        early_stopping=True,
        validation_fraction=len(Xva) / len(X),
        n_iter_no_change=50,
        categorical_features=cat or None,
        random_state=0,
    )
    return m.fit(X, y)


def to_onnx(kind: str, m, F: int, fix_thresholds: bool = True) -> bytes:  # type: ignore[no-untyped-def]
    if kind == "lightgbm":
        if fix_thresholds:  # closedloop's export: float32 thresholds (closedloop.models.lgbm_onnx)
            from closedloop.models.lgbm_onnx import lightgbm_to_onnx

            return lightgbm_to_onnx(m, F)
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType

        onx = onnxmltools.convert_lightgbm(
            m, initial_types=[("input", FloatTensorType([None, F]))], target_opset=LGBM_OPSET, zipmap=False
        )
    else:
        from skl2onnx import to_onnx as skl_to_onnx

        onx = skl_to_onnx(
            m,
            np.zeros((1, F), np.float32),
            target_opset=OPSET,
            options={id(m): {"zipmap": False}},
        )
    return onx.SerializeToString()


def main() -> None:
    import lightgbm
    import onnxruntime
    import sklearn

    print(
        f"lightgbm {lightgbm.__version__}, scikit-learn {sklearn.__version__}, onnxruntime {onnxruntime.__version__}; "
        "one OpenMP thread; shared 2-core machine"
    )
    for name, df, y, cat in tables():
        X = df.to_numpy(np.float32)
        Xa, Xte, ya, yte = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
        Xtr, Xva, ytr, yva = train_test_split(Xa, ya, test_size=0.25, stratify=ya, random_state=0)
        print(f"== {name}: {len(Xtr)} train / {len(Xva)} val / {len(Xte)} test rows, {X.shape[1]} columns")
        for kind, fit in (("lightgbm", fit_lightgbm), ("hgb", fit_hgb)):
            t0 = time.perf_counter()
            m = fit(Xtr, ytr, Xva, yva, cat)
            fit_s = time.perf_counter() - t0
            p = m.predict_proba(Xte)[:, 1]
            auc, lo, hi = auc_ci(yte, p)
            try:
                b = to_onnx(kind, m, X.shape[1])
                po, lat = onnx_run(b, Xte)
                onnx = f"parity max|dp| {np.abs(po - p).max():.2e}, {len(b) / 1024:.0f} KiB, {lat:.2f} ms/row"
                if kind == "lightgbm":  # the plain conversion, thresholds rounded to nearest by ONNX
                    plain, _ = onnx_run(to_onnx(kind, m, X.shape[1], fix_thresholds=False), Xte)
                    onnx += f" (plain onnxmltools conversion: {np.abs(plain - p).max():.2e})"
            except Exception as e:  # report, keep measuring the other library
                onnx = f"ONNX conversion failed: {type(e).__name__}: {str(e)[:120]}"
            iters = getattr(m, "best_iteration_", None) or getattr(m, "n_iter_", None)
            print(
                f"   {kind:8s}: fit {fit_s:.2f}s ({iters} trees), test AUC {auc:.4f} [{lo:.4f}, {hi:.4f}]; {onnx}"
            )


if __name__ == "__main__":
    main()
