"""A plain permutation p-value for planted near-copies, against the audit's corrected Fisher p (issue #25).

Diabetes (scikit-learn), planted copies as in bench_audit_density.py (5% of test, train rows with noise sd
1% of each float column's sd, seed 1): the train/test close-rate difference of each look, and how often
train and test dealt again at random at their sizes (400 times) reach or beat it - no Fisher, no design
effect. Shows whether four copy pairs are strong evidence under the random-split null at all. Also
(session 15) the floor no test can go under at that null: the chance that a random deal at the same sizes
splits all k copy pairs across the two sides, whatever statistic reads it (the copy and its source are two
rows like any others; a deal that splits every pair looks the same as the planted split).

Run: .venv/bin/python benchmarks/bench_audit_permutation.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_audit_density as bd  # noqa: E402

from closedloop.stages.audit.duplicates import content_hashes  # noqa: E402
from closedloop.stages.audit.features import _raw_rows, table_stats  # noqa: E402
from closedloop.stages.audit.near_density import _fisher, _Looks, _measure, near_excess  # noqa: E402

REDEALS = 400


def all_pairs_split(n_ref: int, n_query: int, k: int) -> float:
    """Chance that dealing n_ref + n_query rows at random at those sizes puts the two ends of each of k
    disjoint pairs on different sides."""
    from math import comb

    n = n_ref + n_query
    return 2**k * comb(n - 2 * k, n_ref - k) / comb(n, n_ref)


def main() -> None:
    b = bd.sklearn_table("diabetes")
    for seed in (1,):
        planted, truth = bd.plant(b, seed)
        k, n_tr = len(truth), len(planted.train)
        n_te, n_va = len(planted.splits["test"]), len(planted.val)
        print(
            f"diabetes planted seed {seed}: the floor of any test at the random-split null (all {k} copy pairs split "
            f"across, the most extreme deal): train/test ({n_tr} vs {n_te} rows) "
            f"{all_pairs_split(n_tr, n_te, k):.4f} against test's own level 0.0125; train/val+test ({n_tr} vs "
            f"{n_va + n_te}) {all_pairs_split(n_tr, n_va + n_te, k):.4f} against the pooled level 0.025"
        )
        center, scale = table_stats(planted.train)
        tr, te = (_raw_rows(planted.splits[k], "table", center, scale) for k in ("train", "test"))
        h_tr, h_te = content_hashes(planted.train), content_hashes(planted.splits["test"])
        exact = np.array([h in set(h_tr) for h in h_te])
        m = _measure(tr, te, h_tr, exact, np.random.default_rng(0), _Looks(0.125, 2000, 0.01, False))
        observed = {k: v[2] / v[0] - v[3] / v[1] for k, v in m.looks.items()}
        ne = near_excess(
            tr, te, h_tr, exact, 0.125, 2000, np.random.default_rng(0), 0.01, False, h_te, 50, 0.05
        )
        pool, hashes = np.concatenate([tr, te]), h_tr + h_te
        rng = np.random.default_rng(7)
        reached = dict.fromkeys(observed, 0)
        for _ in range(REDEALS):
            perm = rng.permutation(len(pool))
            r, q = perm[: len(tr)], perm[len(tr) :]
            r_h = [hashes[i] for i in r]
            in_ref = set(r_h)
            mm = _measure(
                pool[r],
                pool[q],
                r_h,
                np.array([hashes[i] in in_ref for i in q]),
                rng,
                _Looks(0.125, 2000, 0.01, False),
            )
            for k, v in mm.looks.items():
                if k in observed and v[0] and v[1]:
                    reached[k] += (v[2] / v[0] - v[3] / v[1]) >= observed[k] - 1e-12
        looks = "; ".join(
            f"{k}: counts (test rows, train null rows, close test, close null) {m.looks[k][:4]}, Fisher p "
            f"{_fisher(m.looks[k]):.2g}, permutation p {(reached[k] + 1) / (REDEALS + 1):.4f}"
            for k in observed
        )
        print(
            f"diabetes planted seed {seed} ({len(truth)} copies in {len(te)} test rows), train/test, {REDEALS} "
            f"re-deals: {looks}; the audit's p (corrected, looks by their joint null: counted as {ne.looks_counted:.2f}) {ne.p_value:.3g}, design effect "
            f"{ne.design_effect:.2f} (test's own look warns at p < 0.0125)"
        )


if __name__ == "__main__":
    main()
