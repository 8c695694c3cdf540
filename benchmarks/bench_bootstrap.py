"""Bootstrap speed: 1,000 stratified resamples of 10,000 binary predictions (target: < 1 s per metric).

Run: .venv/bin/python benchmarks/bench_bootstrap.py
"""

from __future__ import annotations

import time

import numpy as np

from closedloop.stats.bootstrap import bootstrap_ci, metrics_with_ci
from closedloop.stats.metrics import make_metric
from closedloop.stats.paired import compare


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    n = 10_000
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    q = np.clip(0.25 * y + 0.75 * rng.random(n), 0, 1)
    print(f"bootstrap: 1,000 stratified resamples of {n:,} binary predictions (best of 3)")
    for name in ("auc", "acc", "pr_auc", "f1", "ece", "log_loss"):
        m = make_metric(name, "binary")
        s = best_of(lambda m=m: bootstrap_ci(m, y, p, n_resamples=1000, seed=0))
        lo, hi = bootstrap_ci(m, y, p, n_resamples=1000, seed=0)
        print(f"  {name:<9} {s:6.3f} s   value {m(y, p):.4f}  95% CI [{lo:.4f}, {hi:.4f}]")
    s = best_of(lambda: metrics_with_ci(["auc", "acc"], y, p, "binary", n_resamples=1000))
    print(f"  auc+acc together (metrics_with_ci): {s:.3f} s")
    s = best_of(lambda: compare("auc", y, p, q, "binary", n_resamples=1000))
    print(f"  paired AUC difference (compare):   {s:.3f} s")

    from sklearn.metrics import roc_auc_score

    idx = rng.integers(0, n, (100, n))
    t = time.perf_counter()
    for row in idx:
        roc_auc_score(y[row], p[row])
    per = (time.perf_counter() - t) / 100
    s_auc = best_of(lambda: bootstrap_ci(make_metric("auc", "binary"), y, p, n_resamples=1000))
    print(f"  reference: 1,000 sklearn roc_auc_score calls ~ {per * 1000:.2f} s (extrapolated from 100)")
    print(f"  speed-up of the vectorized AUC bootstrap: {per * 1000 / s_auc:.1f}x")
    print("(2-core machine shared with other developers: absolute timings are inflated)")


if __name__ == "__main__":
    main()
