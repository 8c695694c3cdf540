"""The target-leakage thresholds against each dataset's own null (issue #25, item 5).

The leakage check calls a feature that alone predicts the label with out-of-fold AUC >= 0.98 an error
and >= 0.9 a strong feature (info). Both are fixed numbers. Their data-relative form is the null: the
largest single-feature AUC when the labels are shuffled (no feature can predict them), over all
features, which grows with the number of features and shrinks with the number of rows. This prints,
per dataset as released and on small subsamples (where the null is widest), the largest real
single-feature AUC and the null's largest over 20 label shuffles (median and maximum), with the same
features, bins and folds as the check, and what each rule says: the fixed thresholds alone, or (the
check's default now) only scores beyond every shuffle's best. One planted leak per line (the label plus
Gaussian noise sd 0.1 as one more column) shows what the null costs in power.

Run: .venv/bin/python benchmarks/bench_audit_leakage_null.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_audit_common import digits_bundle  # noqa: E402
from bench_audit_density import medmnist, sklearn_table  # noqa: E402

from closedloop.stages.audit.features import class_labels, downsample  # noqa: E402
from closedloop.stages.audit.leakage import TargetLeakageConfig, single_feature_scores  # noqa: E402

SHUFFLES = 20


def features(split, kind: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The check's features: a 16-px pixel-block grid plus 4 image statistics, or the table's columns."""
    if kind != "images":
        return split.features()
    X = split.X
    flat = X.reshape(len(X), -1).astype(np.float32)
    extra = np.stack([flat.mean(1), flat.std(1), flat.min(1), flat.max(1)], 1)
    return np.concatenate([downsample(X, max_side=16), extra], 1)


def level(score: float, cfg: TargetLeakageConfig) -> str:
    return "error" if score >= cfg.error_auc else "info (strong)" if score >= cfg.info_auc else "none"


def line(name: str, F: np.ndarray, y: np.ndarray, cfg: TargetLeakageConfig) -> None:
    rng = np.random.default_rng(0)
    scores = single_feature_scores(F, y, True, cfg.bins, cfg.folds, 0)
    real = np.nanmax(scores[:-1])  # the last column is the planted leak
    leak = scores[-1]
    null = [
        np.nanmax(single_feature_scores(F[:, :-1], rng.permutation(y), True, cfg.bins, cfg.folds, k))
        for k in range(SHUFFLES)
    ]
    print(
        f"{name}: {len(y)} rows, {F.shape[1] - 1} features: largest single-feature AUC {real:.3f}; shuffled labels "
        f"({SHUFFLES}x): largest median {np.median(null):.3f}, max {np.max(null):.3f} "
        f"(info {cfg.info_auc}, error {cfg.error_auc}); fixed rule says {level(real, cfg)}, against the null "
        f"{'beyond chance: ' + level(real, cfg) if real > max(null) and real >= cfg.info_auc else 'none'}; planted "
        f"leak (the label + noise sd 0.1) {leak:.3f}: fixed {level(leak, cfg)}, against the null "
        f"{level(leak, cfg) if leak > max(null) else 'within chance (missed)'}",
        flush=True,
    )


def main() -> None:
    cfg = TargetLeakageConfig()
    sets = [
        ("digits", digits_bundle),
        ("pneumoniamnist", lambda: medmnist("pneumoniamnist")),
        ("breastmnist", lambda: medmnist("breastmnist")),
        ("breast_cancer (table)", lambda: sklearn_table("breast_cancer")),
    ]
    for name, load in sets:
        b = load()
        y = class_labels(np.asarray(b.train.y))
        leak = y + np.random.default_rng(2).normal(0, 0.1, len(y))  # a copied outcome, slightly noisy
        F = np.concatenate([features(b.train, b.meta.kind), leak[:, None]], 1)
        line(name, F, y, cfg)
        for n in (100, 30):
            idx = np.random.default_rng(1).choice(len(y), n, replace=False)
            if len(np.unique(y[idx])) > 1 and np.bincount(y[idx]).min() >= 2:
                line(f"  {name}, {n} random train rows", F[idx], y[idx], cfg)


if __name__ == "__main__":
    main()
