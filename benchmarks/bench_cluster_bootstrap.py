"""Coverage of the test intervals on rows that come in groups: a resample of rows against one of whole groups.

A fixed model (it never trains here) scores test sets drawn from a population of groups. Each group has its
own offset, which the labels follow and the model does not see, so the model is right on some groups and wrong
on others. Per setting, ``--draws`` test sets of ``G`` groups x ``m`` rows are drawn; each gets the 95%
interval of accuracy and AUC from closedloop's bootstrap (``metrics_with_ci``, 1000 resamples) twice: rows
resampled (stratified by class, what every interval did before) and whole groups resampled (``clusters=``, what
a table with ``data.group`` now gets). Printed: how often each interval holds the population value (computed
on 4,000 further groups), with its binomial 95% interval, and the mean width. Settings: strong, weak and no
group effect (the last: groups of independent rows, where both should cover).

    python benchmarks/bench_cluster_bootstrap.py [--draws 200]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import binomtest

from closedloop.stats.bootstrap import metrics_with_ci
from closedloop.stats.metrics import compute_metric

SETTINGS = {
    "very strong group effect (sd 3)": 3.0,
    "strong group effect (sd 1.5)": 1.5,
    "weak group effect (sd 0.5)": 0.5,
    "none (sd 0)": 0.0,
}


def draw(
    rng: np.random.Generator, groups: int, rows: int, sd: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    offset = rng.normal(0, sd, groups)
    g = np.repeat(np.arange(groups), rows)
    x = rng.normal(0, 1, len(g))
    y = (x + offset[g] + rng.logistic(0, 0.5, len(g)) > 0).astype(int)
    p1 = 1 / (1 + np.exp(-2 * x))  # the model reads x only: the group offset is what it gets wrong
    return y, np.stack([1 - p1, p1], 1), g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--groups", type=int, default=40)
    ap.add_argument("--rows", type=int, default=20)
    args = ap.parse_args()
    print(
        f"# bench_cluster_bootstrap: {args.draws} test sets of {args.groups} groups x {args.rows} rows per setting, "
        "1000 resamples, nominal 95%"
    )
    for name, sd in SETTINGS.items():
        rng = np.random.default_rng(12345)
        y, P, _ = draw(rng, 4000, args.rows, sd)
        truth = {m: compute_metric(m, y, P, "binary") for m in ("acc", "auc")}
        hits = {(m, k): 0 for m in truth for k in ("rows", "groups")}
        width = {(m, k): 0.0 for m in truth for k in ("rows", "groups")}
        for i in range(args.draws):
            y, P, g = draw(np.random.default_rng(i), args.groups, args.rows, sd)
            for k, clusters in (("rows", None), ("groups", g)):
                ci = metrics_with_ci(
                    ["acc", "auc"], y, P, "binary", n_resamples=1000, seed=i, clusters=clusters
                )
                for m in truth:
                    lo, hi = ci[m]["ci95"]
                    hits[m, k] += lo <= truth[m] <= hi
                    width[m, k] += (hi - lo) / args.draws
        print(f"{name}: population acc {truth['acc']:.4f}, auc {truth['auc']:.4f}")
        for m in truth:
            for k in ("rows", "groups"):
                c = binomtest(hits[m, k], args.draws).proportion_ci(0.95)
                print(
                    f"  {m:3s} resampling {k:6s}: covers the population value in {hits[m, k]}/{args.draws} "
                    f"({hits[m, k] / args.draws:.1%}, 95% CI {c.low:.1%}-{c.high:.1%}); mean width {width[m, k]:.4f}"
                )


if __name__ == "__main__":
    main()
