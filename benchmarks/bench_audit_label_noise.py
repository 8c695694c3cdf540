"""Label issues on scikit-learn digits with 5/10/20% uniformly flipped labels: precision, recall and F1
of the flagged set against the truth, for the audit's default (SVC + kNN out-of-fold probabilities)
and the plain 5-fold logistic-regression baseline, in the same run.

Run: .venv/bin/python benchmarks/bench_audit_label_noise.py
"""

from __future__ import annotations

import time

import numpy as np
from cleanlab.filter import find_label_issues
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from closedloop.core.stage import RunContext
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.stages.audit.base import AuditContext
from closedloop.stages.audit.label_issues import LabelIssues


def flip(y: np.ndarray, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(y), int(round(rate * len(y))), replace=False)
    yn = y.copy()
    yn[idx] = (y[idx] + rng.integers(1, 10, len(idx))) % 10  # a different class, uniformly
    return yn, idx


def prf(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    tp = len(np.intersect1d(flagged, truth))
    p, r = tp / max(len(flagged), 1), tp / len(truth)
    return p, r, 2 * p * r / max(p + r, 1e-9)


def main() -> None:
    X, y = load_digits(return_X_y=True)
    imgs = np.round(X * 255 / 16).astype(np.uint8).reshape(-1, 8, 8, 1)
    meta = DatasetMeta(
        name="digits", source="sklearn", kind="images", label_names=[str(i) for i in range(10)]
    )
    print(f"digits: {len(y)} images; label issues flagged on all of them (train = everything, val empty)")
    print(
        f"{'noise':>6} {'seed':>4} | {'audit P':>8} {'R':>6} {'F1':>6} {'sec':>5} | {'logreg P':>8} {'R':>6} {'F1':>6}"
    )
    agg: dict[float, list[tuple[float, float]]] = {}
    for rate in (0.05, 0.10, 0.20):
        for seed in (0, 1, 2):
            yn, truth = flip(y, rate, seed)
            empty = Split(imgs[:0], yn[:0])
            b = DatasetBundle(meta=meta, splits={"train": Split(imgs, yn), "val": empty, "test": empty})
            ctx = AuditContext(
                RunContext(stage_name="audit", stage_dir=__import__("pathlib").Path("/tmp"), seed=seed), b
            )
            t0 = time.perf_counter()
            res = LabelIssues({"max_samples": 5000}).run(b, None, ctx)
            dt = time.perf_counter() - t0
            ours = prf(res.tables["label_issues"]["index"].to_numpy(), truth)
            cv = StratifiedKFold(5, shuffle=True, random_state=seed)
            lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            P = cross_val_predict(lr, X, yn, cv=cv, method="predict_proba")
            base = prf(np.flatnonzero(find_label_issues(yn, P)), truth)
            agg.setdefault(rate, []).append((ours[2], base[2]))
            print(
                f"{rate:6.0%} {seed:4d} | {ours[0]:8.3f} {ours[1]:6.3f} {ours[2]:6.3f} {dt:5.1f} | {base[0]:8.3f} {base[1]:6.3f} {base[2]:6.3f}"
            )
    for rate, v in agg.items():
        a = np.array(v)
        print(
            f"mean F1 at {rate:.0%}: audit {a[:, 0].mean():.3f} vs 5-fold logistic regression {a[:, 1].mean():.3f} "
            f"(ratio {a[:, 0].mean() / a[:, 1].mean():.2f})"
        )


if __name__ == "__main__":
    main()
