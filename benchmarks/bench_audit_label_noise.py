"""Label issues with uniformly flipped labels: precision, recall and F1 of the audit's label-issue check
against the planted flips, side by side with cleanlab's documented recipe (5-fold logistic regression
probabilities -> ``find_label_issues``), in the same run on the same flips.

Cases: PneumoniaMNIST-28 and BreastMNIST-28 (the real files; flips in the train split only, the check
examines train+val as the audit does, flags are scored on train), and scikit-learn digits (8x8; all
1,797 images as train). Times are the check's wall and process CPU seconds (all threads); the machine
is shared, so the load average is printed too.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_audit_label_noise.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cleanlab.filter import find_label_issues
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from threadpoolctl import threadpool_limits

from closedloop.core.stage import RunContext
from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.stages.audit.base import AuditContext
from closedloop.stages.audit.label_issues import LabelIssues

sys.path.insert(0, str(Path(__file__).parent))
from bench_audit_common import MEDMNIST  # noqa: E402


def flip(y: np.ndarray, n_classes: int, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flip ``rate`` of the labels, each to a different class drawn uniformly."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(y), int(round(rate * len(y))), replace=False))
    yn = y.copy()
    yn[idx] = (y[idx] + rng.integers(1, n_classes, len(idx))) % n_classes
    return yn, idx


def prf(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    tp = len(np.intersect1d(flagged, truth))
    p, r = tp / max(len(flagged), 1), tp / len(truth)
    return p, r, 2 * p * r / max(p + r, 1e-9)


def load(case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(train images, train labels, val images, val labels, class names) as uint8 (N, H, W, 1)."""
    if case == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        imgs = np.round(X * 255 / 16).astype(np.uint8).reshape(-1, 8, 8, 1)
        return imgs, y.astype(np.int64), imgs[:0], y[:0].astype(np.int64), [str(i) for i in range(10)]
    d = np.load(MEDMNIST / f"{case}.npz")
    tr, va = d["train_images"][..., None], d["val_images"][..., None]
    ytr, yva = d["train_labels"].reshape(-1).astype(np.int64), d["val_labels"].reshape(-1).astype(np.int64)
    return tr, ytr, va, yva, [str(c) for c in range(int(max(ytr.max(), yva.max())) + 1)]


def audit_check(
    tr: np.ndarray, ytr: np.ndarray, va: np.ndarray, yva: np.ndarray, names: list[str], seed: int
) -> tuple[np.ndarray, float, float, str]:
    """Flagged train indices, wall s, CPU s and the models used, for the check with its defaults."""
    meta = DatasetMeta(name="bench", source="npz", kind="images", label_names=names)
    b = DatasetBundle(
        meta=meta, splits={"train": Split(tr, ytr), "val": Split(va, yva), "test": Split(va[:0], yva[:0])}
    )
    with tempfile.TemporaryDirectory(prefix="audit-") as tmp:  # removed on return, not left in /tmp
        ctx = AuditContext(RunContext(stage_name="audit", stage_dir=Path(tmp), seed=seed), b)
        ctx.current_check = "label_issues"
        t0, c0 = time.perf_counter(), time.process_time()
        with threadpool_limits(limits=1, user_api="openmp"):  # as the audit stage runs its checks
            res = LabelIssues({}).run(b, None, ctx)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    t = res.tables["label_issues"]
    return t[t.split == "train"]["index"].to_numpy(), wall, cpu, res.metrics["models"]


def cleanlab_recipe(
    tr: np.ndarray, ytr: np.ndarray, va: np.ndarray, yva: np.ndarray, seed: int
) -> tuple[np.ndarray, float]:
    """cleanlab's documented recipe: 5-fold logistic regression probabilities on the pixels (in [0, 1])."""
    X = np.concatenate([tr, va]).reshape(len(tr) + len(va), -1).astype(np.float64) / 255.0
    y = np.concatenate([ytr, yva])
    t0 = time.perf_counter()
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    lr = LogisticRegression(max_iter=1000)
    with threadpool_limits(limits=1):  # one BLAS thread: two spinning ones ran slower on the shared machine
        P = cross_val_predict(lr, X, y, cv=cv, method="predict_proba")
    flagged = np.flatnonzero(find_label_issues(y, P))
    return flagged[flagged < len(tr)], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one seed per case (for a smoke run)")
    args = ap.parse_args()
    many = (0,) if args.quick else (0, 1, 2)
    plan = [  # (case, noise rate, seeds): one seed where a run costs minutes on the shared machine
        ("pneumoniamnist", 0.10, many),
        ("pneumoniamnist", 0.05, (0,)),
        ("pneumoniamnist", 0.20, (0,)),
        ("breastmnist", 0.10, many),
        ("digits", 0.10, many),
        ("digits", 0.05, (0,)),
        ("digits", 0.20, (0,)),
    ]
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start (shared); "
        "flips in train only, flags scored on train; audit = the label_issues check with its defaults"
    )
    print(
        f"{'case':>15} {'noise':>5} {'seed':>4} | {'audit P':>7} {'R':>5} {'F1':>5} {'wall s':>6} {'cpu s':>6}"
        f" | {'recipe P':>8} {'R':>5} {'F1':>5} {'s':>5} | models"
    )
    agg: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for case, rate, seeds in plan:
        tr, ytr, va, yva, names = load(case)
        for seed in seeds:
            yn, truth = flip(ytr, len(names), rate, seed)
            flagged, wall, cpu, models = audit_check(tr, yn, va, yva, names, seed)
            ours = prf(flagged, truth)
            base_flags, base_s = cleanlab_recipe(tr, yn, va, yva, seed)
            base = prf(base_flags, truth)
            agg.setdefault((case, rate), []).append((ours[2], base[2]))
            print(
                f"{case:>15} {rate:5.0%} {seed:4d} | {ours[0]:7.3f} {ours[1]:5.3f} {ours[2]:5.3f} {wall:6.1f} {cpu:6.1f}"
                f" | {base[0]:8.3f} {base[1]:5.3f} {base[2]:5.3f} {base_s:5.1f} | {models}",
                flush=True,
            )
    for (case, rate), v in agg.items():
        a = np.array(v)
        print(
            f"mean F1 {case} {rate:.0%} ({len(a)} seed(s)): audit {a[:, 0].mean():.3f} vs cleanlab + 5-fold "
            f"logistic regression {a[:, 1].mean():.3f} (ratio {a[:, 0].mean() / a[:, 1].mean():.2f})"
        )
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
