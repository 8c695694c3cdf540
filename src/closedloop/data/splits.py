"""Seeded, stratified train/val/test splitting for sources whose data comes without splits.

Classes keep their share in every split (up to rounding). Stratification falls back to a plain
seeded shuffle, with a note saying why, when the target is continuous (regression) or a class is too
small to appear in all three splits. Multi-label targets are stratified on their rarest usable label.

Example:
    >>> import numpy as np
    >>> y = np.array([0] * 80 + [1] * 20)
    >>> plan = stratified_split(y, val_fraction=0.2, test_fraction=0.2, seed=0)
    >>> {k: len(v) for k, v in plan.indices.items()}
    {'train': 60, 'val': 20, 'test': 20}
    >>> int(y[plan.indices["val"]].sum())
    4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from closedloop.data.bundle import Split

#: A class needs this many members to be placed in train, val and test.
MIN_CLASS_COUNT = 3
#: Numeric targets with more distinct values than this are treated as continuous.
MAX_CLASSES = 20


@dataclass
class SplitPlan:
    """Row indices of each split plus how they were made (recorded in ``meta.provenance``)."""

    indices: dict[str, np.ndarray]
    stratified_on: str | None
    """'class', 'label <name>' for multi-label, or None for a plain shuffle."""
    note: str | None
    """Why stratification was not used, if it was not."""
    small_classes: bool = False
    """True when the fallback happened because classes were too small (worth a warning)."""

    def provenance(self, seed: int, val_fraction: float, test_fraction: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seed": seed,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "stratified_on": self.stratified_on,
        }
        if self.note:
            out["note"] = self.note
        return out


def is_continuous(y: np.ndarray) -> bool:
    """True for a regression-like target: non-integer floats, or more than ``MAX_CLASSES`` values."""
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iuf":
        return False
    finite = y[np.isfinite(y)] if y.dtype.kind == "f" else y
    if y.dtype.kind == "f" and not np.all(np.mod(finite, 1) == 0):
        return True
    return len(np.unique(finite)) > MAX_CLASSES


def _strata(y: np.ndarray, label_names: list[str] | None) -> tuple[np.ndarray | None, str | None, str | None]:
    """Return (stratum per row, what it is, note when None)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        positives = y.sum(axis=0)
        n = len(y)
        usable = [
            j
            for j in np.argsort(positives, kind="stable")
            if positives[j] >= MIN_CLASS_COUNT and n - positives[j] >= MIN_CLASS_COUNT
        ]
        if not usable:
            return None, None, f"multi-label target: no label has {MIN_CLASS_COUNT}+ positives and negatives"
        j = int(usable[0])
        name = label_names[j] if label_names and j < len(label_names) else str(j)
        return (y[:, j] > 0).astype(np.int64), f"label {name}", None
    y = y.reshape(len(y))
    if is_continuous(y):
        return None, None, "continuous target (regression): plain seeded shuffle"
    _, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.min() < MIN_CLASS_COUNT:
        small = int((counts < MIN_CLASS_COUNT).sum())
        return (
            None,
            None,
            f"{small} class(es) have fewer than {MIN_CLASS_COUNT} examples, too few to appear in every "
            "split: plain seeded shuffle instead of stratified splits",
        )
    return codes.reshape(-1), "class", None


def _allocate(counts: np.ndarray, total: int, min_count: int = MIN_CLASS_COUNT) -> np.ndarray:
    """Split ``total`` over strata proportionally to ``counts`` (largest remainder), at least one
    per stratum of ``min_count`` or more members."""
    n = counts.sum()
    exact = counts * total / n if n else counts * 0.0
    alloc = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - alloc), kind="stable")
    for i in order[: total - alloc.sum()]:
        alloc[i] += 1
    # every stratum gets a member when it has some to spare; taken from the largest allocation
    for i in np.flatnonzero((alloc == 0) & (counts >= min_count)):
        donor = int(np.argmax(alloc))
        if alloc[donor] > 1:
            alloc[donor] -= 1
            alloc[i] += 1
    return alloc


def stratified_split(
    y: np.ndarray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    label_names: list[str] | None = None,
) -> SplitPlan:
    """Seeded train/val/test row indices, stratified by class when possible.

    The same ``y`` and ``seed`` always give the same indices. Each split's indices are in random
    (seeded) order, so a split never comes out sorted by class.
    """
    y = np.asarray(y)
    n = len(y)
    rng = np.random.default_rng(seed)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    strata, what, note = _strata(y, label_names)
    if strata is None:
        perm = rng.permutation(n)
        idx = {"test": perm[:n_test], "val": perm[n_test : n_test + n_val], "train": perm[n_test + n_val :]}
        small = note is not None and "fewer than" in note
    else:
        groups = [np.flatnonzero(strata == s) for s in range(int(strata.max()) + 1)]
        counts = np.array([len(g) for g in groups])
        test_alloc = _allocate(counts, n_test)
        val_alloc = _allocate(counts - test_alloc, n_val, min_count=2)  # 1 left for train
        parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
        for g, t, v in zip(groups, test_alloc, val_alloc, strict=True):
            g = rng.permutation(g)
            parts["test"].append(g[:t])
            parts["val"].append(g[t : t + v])
            parts["train"].append(g[t + v :])
        idx = {k: rng.permutation(np.concatenate(v)) for k, v in parts.items()}
        small = False
    ordered = {k: np.asarray(idx[k], dtype=np.int64) for k in ("train", "val", "test")}
    return SplitPlan(indices=ordered, stratified_on=what, note=note, small_classes=small)


def take(
    X: np.ndarray | pd.DataFrame, y: np.ndarray, rows: np.ndarray, groups: np.ndarray | None = None
) -> Split:
    """Rows of ``X`` and ``y`` (and ``groups``) as a :class:`Split` (DataFrames get a fresh 0..n-1 index)."""
    g = None if groups is None else np.asarray(groups)[rows]
    if isinstance(X, pd.DataFrame):
        return Split(X=X.iloc[rows].reset_index(drop=True), y=np.asarray(y)[rows], groups=g)
    return Split(X=np.ascontiguousarray(X[rows]), y=np.asarray(y)[rows], groups=g)


def group_folds(
    y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_splits`` (kept, held-out) row-index pairs in which no group has rows on both sides, with the class
    shares kept as far as whole groups allow (scikit-learn's ``StratifiedGroupKFold``; a continuous or
    multi-label target: ``GroupKFold`` on shuffled groups). Fewer groups than ``n_splits`` is an error.

    Example:
        >>> import numpy as np
        >>> groups = np.repeat(np.arange(10), 3)
        >>> folds = group_folds(np.arange(30) % 2, groups, 5, seed=0)
        >>> all(not set(groups[a]) & set(groups[b]) for a, b in folds)
        True
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    groups = np.asarray(groups)
    _, codes = np.unique(groups.astype(str), return_inverse=True)
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    if n_groups < n_splits:
        raise ValueError(f"{n_groups} group(s) cannot fill {n_splits} folds")
    flat = np.asarray(y).reshape(len(codes), -1)
    if flat.shape[1] == 1 and not is_continuous(flat[:, 0]):
        _, cls = np.unique(flat[:, 0], return_inverse=True)
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed % (1 << 32))
        return [(a, b) for a, b in splitter.split(np.zeros(len(codes)), cls.reshape(-1), codes)]
    # GroupKFold balances fold sizes deterministically: shuffle the group ids first so the seed matters
    relabel = np.random.default_rng(seed).permutation(n_groups)[codes]
    return [(a, b) for a, b in GroupKFold(n_splits=n_splits).split(np.zeros(len(codes)), groups=relabel)]


def grouped_split(
    y: np.ndarray, groups: np.ndarray, *, val_fraction: float, test_fraction: float, seed: int
) -> SplitPlan:
    """Train/val/test row indices with every group in one split: the test split is one fold of about
    ``1 / test_fraction`` group folds, validation one fold of the rest, cut the same way.

    Example:
        >>> import numpy as np
        >>> groups = np.repeat(np.arange(40), 5)
        >>> plan = grouped_split(np.arange(200) % 2, groups, val_fraction=0.15, test_fraction=0.15, seed=0)
        >>> [len(set(groups[plan.indices[a]]) & set(groups[plan.indices[b]])) for a, b in [("train", "test"), ("train", "val"), ("val", "test")]]
        [0, 0, 0]
    """
    n = len(groups)
    rows = np.arange(n)
    keep, test = group_folds(y, groups, max(2, round(1 / test_fraction)), seed)[0]
    k_val = max(2, round((1 - test_fraction) / val_fraction))
    fit, val = group_folds(np.asarray(y)[keep], np.asarray(groups)[keep], k_val, seed + 1)[0]
    flat = np.asarray(y).reshape(n, -1)
    stratified = flat.shape[1] == 1 and not is_continuous(flat[:, 0])
    return SplitPlan(
        indices={"train": np.sort(rows[keep][fit]), "val": np.sort(rows[keep][val]), "test": np.sort(test)},
        stratified_on="class, within whole groups" if stratified else None,
        note=None
        if stratified
        else "whole groups shuffled, not stratified (continuous or multi-label target)",
    )


def split_arrays(
    X: np.ndarray | pd.DataFrame,
    y: np.ndarray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    label_names: list[str] | None = None,
    groups: np.ndarray | None = None,
) -> tuple[dict[str, Split], SplitPlan]:
    """Split ``X``/``y`` into train/val/test with :func:`stratified_split`, or :func:`grouped_split` when
    ``groups`` says which rows belong together (each split then holds whole groups, which it carries)."""
    if groups is not None:
        plan = grouped_split(y, groups, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    else:
        plan = stratified_split(
            y, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, label_names=label_names
        )
    return {k: take(X, y, v, groups) for k, v in plan.indices.items()}, plan


def stratified_subsample(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` row indices keeping class shares (multi-label / continuous: plain sample).

    Indices are returned sorted so the subsample keeps the file's order.
    """
    y = np.asarray(y)
    if n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    flat = y.reshape(len(y), -1)
    if flat.shape[1] != 1 or is_continuous(flat[:, 0]):
        return np.sort(rng.choice(len(y), size=n, replace=False))
    _, codes = np.unique(flat[:, 0], return_inverse=True)
    codes = codes.reshape(-1)
    groups = [np.flatnonzero(codes == c) for c in range(int(codes.max()) + 1)]
    alloc = _allocate(np.array([len(g) for g in groups]), n)
    chosen = [rng.choice(g, size=min(a, len(g)), replace=False) for g, a in zip(groups, alloc, strict=True)]
    return np.sort(np.concatenate(chosen))


def time_order(values: pd.Series, where: str) -> np.ndarray:
    """A column's values as sortable numbers: numbers as they are, dates (datetime or text a date parser reads)
    as nanoseconds. Raises ``ValueError`` naming the rows without a time."""
    if pd.api.types.is_bool_dtype(values):
        raise ValueError(f"{where}: holds true/false values; expected numbers or dates")
    numbers = values if pd.api.types.is_numeric_dtype(values) else pd.to_numeric(values, errors="coerce")
    if numbers.notna().sum() == values.notna().sum():  # numbers, or text that reads as numbers
        t = numbers.to_numpy(dtype=float)
    else:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas warns when it cannot infer one format
            parsed = pd.to_datetime(values, errors="coerce", format="mixed")
        unread = parsed.isna() & values.notna()
        if unread.any():
            first = values[unread].astype(str).unique()[:3].tolist()
            raise ValueError(f"{where}: values {first} are neither numbers nor dates")
        t = np.where(
            parsed.isna(), np.nan, parsed.to_numpy().astype("datetime64[ns]").astype(np.int64).astype(float)
        )
    missing = np.flatnonzero(~np.isfinite(t))
    if len(missing):
        rows = ", ".join(str(i) for i in missing[:5])
        raise ValueError(
            f"{where}: no time in {len(missing)} row(s) (rows {rows}); expected a time on every row"
        )
    return t


def time_split(times: np.ndarray, *, val_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
    """Train/val/test row indices in time order: test is the latest rows, about ``test_fraction`` of them,
    validation about ``val_fraction`` just before, train the rest; the rows of one time stay in one split.

    Production is the future: a random split scores a model on the same periods it trained on, a time split
    on the period after. Raises ``ValueError`` when there are fewer than three distinct times.

    Example (ten years, two rows each):
        >>> import numpy as np
        >>> parts = time_split(np.repeat(np.arange(2000, 2010), 2), val_fraction=0.2, test_fraction=0.2)
        >>> {k: sorted(set((2000 + v // 2).tolist())) for k, v in parts.items()}
        {'train': [2000, 2001, 2002, 2003, 2004, 2005], 'val': [2006, 2007], 'test': [2008, 2009]}
    """
    t = np.asarray(times, dtype=float)
    distinct, counts = np.unique(t, return_counts=True)
    if len(distinct) < 3:
        raise ValueError(
            f"{len(distinct)} distinct time(s) cannot fill train, val and test; expected at least 3"
        )

    def cut(n_times: int, share: float, total: int) -> int:
        """How many of the latest of the first ``n_times`` times hold closest to ``share * total`` rows."""
        tail = np.cumsum(counts[:n_times][::-1])  # rows in the latest 1, 2, ... times
        return int(np.argmin(np.abs(tail - share * total))) + 1

    n = len(t)
    k_test = min(cut(len(distinct), test_fraction, n), len(distinct) - 2)
    k_val = min(cut(len(distinct) - k_test, val_fraction, n), len(distinct) - k_test - 1)
    test_from = distinct[len(distinct) - k_test]
    val_from = distinct[len(distinct) - k_test - k_val]
    return {
        "train": np.flatnonzero(t < val_from),
        "val": np.flatnonzero((t >= val_from) & (t < test_from)),
        "test": np.flatnonzero(t >= test_from),
    }
