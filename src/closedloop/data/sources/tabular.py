"""A table from a CSV or Parquet file: one target column, the rest are features.

Missing feature values stay missing (NaN / pandas NA). Text, bool and string columns become pandas
``category`` columns whose categories come from the whole file, so category codes mean the same in
every split. String class targets are encoded to ``0..K-1`` in sorted order (``meta.label_names``
keeps the original values); numeric targets with many distinct values are regression.

YAML::

    data: {source: tabular, path: data/churn.csv, target: churned, drop: [customer_id]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from closedloop.core.errors import DataError
from closedloop.core.registry import register_source
from closedloop.data.bundle import SPLITS, TARGET_COLUMN, DatasetBundle, DatasetMeta
from closedloop.data.sources.base import DataSource, PathStr, SplitFractionsConfig
from closedloop.data.splits import MAX_CLASSES, split_arrays, take, time_order, time_split
from closedloop.data.validate import validate_bundle

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")


class TabularConfig(SplitFractionsConfig):
    """A CSV or Parquet file with a target column."""

    path: PathStr
    """CSV (.csv, .tsv) or Parquet (.parquet, .pq) file; relative to the working directory."""
    target: str | list[str]
    """Name of the column to predict; a list of columns is a multi-label target (each column two values:
    0/1, false/true, or two strings, the later in sorted order being the positive one)."""
    split_column: str | None = None
    """Column whose values (train, val, test) assign each row to a split; without it splits are made
    here (seeded, stratified by class)."""
    categorical: list[str] | None = None
    """Columns to treat as categories; default: every text, bool or string column."""
    drop: list[str] = Field(default_factory=list)
    """Columns to ignore (ids, leaky columns)."""
    target_type: Literal["auto", "classes", "regression"] = "auto"
    """auto: text/bool targets and numeric ones with at most 20 distinct values are classes, others
    regression."""
    na_values: list[str] = Field(default_factory=list)
    """More strings that mark a missing value (besides pandas' defaults: empty, NA, N/A, NaN, null, ...),
    e.g. ``["?"]`` for UCI-style files."""
    class_order: list[str] | None = None
    """The target's classes in this order (class ``i`` is ``class_order[i]``), as their values read in the
    file; default: sorted. An ordinal task needs its ranks in order, which text sorts alphabetically
    (``[low, medium, high]``, not ``high < low < medium``)."""
    group: str | None = None
    """Column saying which rows belong together (a patient's visits, a classroom's pupils): each split holds
    whole groups, and the train stage's folds and held-out rows keep them whole, so no figure is computed on
    a group the model trained on. The column is not a feature."""
    time_column: str | None = None
    """Column ordering the rows in time (numbers such as a year, or dates): test is the latest rows (about
    ``test_fraction``), validation the ``val_fraction`` just before, train the rest, and the rows of one time
    stay in one split. Production is the future: a random split scores the model on the periods it trained
    on. The column stays a feature unless listed in ``drop`` (it still orders the rows)."""
    missing_target: Literal["error", "drop"] = "error"
    """Rows without a target value: ``error`` (the default, naming the rows) or ``drop`` them before the
    splits are made; how many were dropped is in ``meta.provenance`` and the audit's provenance line."""


def _refuse_groups_across_splits(splits: dict[str, Any], column: str | None, where: str) -> None:
    """A ``split_column`` that puts one group's rows in two splits would test on groups the model trained on."""
    seen: dict[str, str] = {}
    for name, split in splits.items():
        for g in sorted(set(np.asarray(split.groups).tolist())):
            if seen.setdefault(g, name) != name:
                raise DataError(
                    f"{where}: group {g!r} of column {column!r} has rows in both {seen[g]} and {name} "
                    "(split_column); expected each group in one split"
                )


def read_table(path: Path, na_values: list[str] | None = None) -> pd.DataFrame:
    """A CSV/TSV or Parquet file as a DataFrame, ``na_values`` read as missing (besides pandas' defaults);
    a file that cannot be parsed is a :class:`DataError` naming it."""
    na_values = list(na_values or [])
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in PARQUET_SUFFIXES:
            df = pd.read_parquet(path)
            return df.replace(na_values, np.nan) if na_values else df
        if suffix in CSV_SUFFIXES:
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", na_values=na_values or None)
    except Exception as exc:  # noqa: BLE001 - parser errors vary by engine; all get one clear message
        raise DataError(f"table {path}: cannot be read: {exc}") from None
    raise DataError(
        f"table {path}: unknown file type {suffix!r}; expected {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}"
    )


def _require_columns(df: pd.DataFrame, names: list[str], *, where: str, field: str) -> None:
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise DataError(
            f"{where}: {field} column(s) {missing} not found; the file's columns are {list(map(str, df.columns))}"
        )


MAX_PLACEHOLDERS = 3
"""At most this many distinct non-numeric strings in a column of numbers read as placeholders for a missing
value ('?', '-', 'unknown'), not as text."""


def _refuse_numbers_read_as_text(col: pd.Series, where: str) -> None:
    """A column of numbers with a few placeholder strings ('?' for missing, as in UCI files) would be read as
    text, one category per number: refused, naming the strings and both ways out.

    >>> _refuse_numbers_read_as_text(pd.Series(["1.5", "2", "?"] * 10, name="radius"), "table t.csv")
    Traceback (most recent call last):
    ...
    closedloop.core.errors.DataError: table t.csv: column 'radius' holds numbers in 20 of 30 rows and the string(s) ['?'] in the other 10: read as text, every number would be a category of its own. If ['?'] mark a missing value, set na_values: ['?']; to keep the column as text, list it in categorical
    """
    text = col.dropna().astype(str).str.strip()
    if len(text) < 2 * MAX_PLACEHOLDERS:
        return
    numbers = pd.to_numeric(text, errors="coerce")
    other = text[numbers.isna()]
    tokens = sorted(other.unique().tolist())
    if numbers.notna().sum() >= len(text) / 2 and 0 < len(tokens) <= MAX_PLACEHOLDERS:
        raise DataError(
            f"{where}: column {col.name!r} holds numbers in {int(numbers.notna().sum())} of {len(text)} rows and "
            f"the string(s) {tokens} in the other {len(other)}: read as text, every number would be a category "
            f"of its own. If {tokens} mark a missing value, set na_values: {tokens}; to keep the column as text, "
            "list it in categorical"
        )


def _refuse_missing_target(col: pd.Series, where: str) -> None:
    missing = col.isna().to_numpy()
    if missing.any():
        rows = ", ".join(str(i) for i in np.flatnonzero(missing)[:5])
        raise DataError(
            f"{where}: target column {col.name!r} has {int(missing.sum())} missing value(s) (rows {rows}); "
            "expected a label on every row: drop or fill those rows, or set missing_target: drop"
        )


def encode_labels(
    frame: pd.DataFrame, *, where: str, positives: dict[str, Any] | None = None
) -> tuple[np.ndarray, list[str], dict[str, Any], str]:
    """A multi-label target, one column per label: (y as (N, L) 0/1, the column names, each column's positive
    value, how they were read). ``positives`` (the training file's, from its provenance) fixes the positive
    values for new rows, whose columns may hold one value only.

    >>> y, names, positives, how = encode_labels(pd.DataFrame({"asthma": ["no", "yes", "no"], "copd": [0, 0, 1]}), where="t.csv")
    >>> y.tolist(), names, positives
    ([[0, 0], [1, 0], [0, 1]], ['asthma', 'copd'], {'asthma': 'yes', 'copd': 1})
    >>> encode_labels(pd.DataFrame({"asthma": ["yes"], "copd": [0]}), where="new.csv", positives=positives)[0].tolist()
    [[1, 0]]
    """
    cols, said, found = [], [], {}
    for name in frame.columns:
        col = frame[name]
        _refuse_missing_target(col, where)
        values = sorted(col.unique().tolist(), key=lambda v: (str(type(v)), v))
        if len(values) > 2 or (len(values) == 2 and pd.api.types.is_numeric_dtype(col) and values != [0, 1]):
            raise DataError(
                f"{where}: multi-label target column {name!r} holds {values[:6]}; expected two values per label "
                "column (0/1, false/true, or two strings: the later in sorted order is the positive one)"
            )
        positive = (positives or {}).get(str(name), values[-1] if len(values) == 2 else 1)
        found[str(name)] = positive
        cols.append((col == positive).to_numpy(dtype=np.int64))
        said.append(f"{name} ({positive!r} positive)")
    how = "multi-label: " + ", ".join(said)
    return np.stack(cols, axis=1), [str(c) for c in frame.columns], found, how


ALPHABETICAL = "classes encoded in alphabetical order of their text"
"""``provenance['target_encoding']`` of a text target without ``class_order`` (the task stage refuses it for
an ordinal task: alphabetical order is not a rank order)."""


def _encode_target(
    col: pd.Series, *, target_type: str, where: str, class_order: list[str] | None = None
) -> tuple[np.ndarray, list[str], bool, str]:
    """(y, label_names, regression, how) for the target column."""
    _refuse_missing_target(col, where)
    numeric = pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype)
    if target_type == "regression" or (
        target_type == "auto"
        and numeric
        and (not np.all(np.mod(col.to_numpy(dtype=np.float64), 1) == 0) or col.nunique() > MAX_CLASSES)
    ):
        if not numeric:
            raise DataError(f"{where}: target column {col.name!r} is not numeric; regression needs numbers")
        return col.to_numpy(dtype=np.float64), [], True, "regression (numeric target)"
    if class_order is not None:
        text = col.astype(str).str.strip()
        found = set(text)
        unknown = sorted(found - set(class_order))
        absent = [c for c in class_order if c not in found]
        if unknown:
            raise DataError(
                f"{where}: class_order {class_order} must list each of the target's values; the column "
                f"{col.name!r} also holds {unknown}"
            )
        if len(set(class_order)) != len(class_order):
            raise DataError(f"{where}: class_order {class_order} lists a class twice")
        index = {v: i for i, v in enumerate(class_order)}
        how = "classes in the order given by class_order" + (f" ({absent} not in the file)" if absent else "")
        return text.map(index).to_numpy(dtype=np.int64), list(class_order), False, how
    values = sorted(col.unique().tolist(), key=lambda v: (str(type(v)), v))
    if numeric and values == list(range(len(values))):
        return col.to_numpy(dtype=np.int64), [str(v) for v in values], False, "classes 0..K-1 as given"
    index = {v: i for i, v in enumerate(values)}
    y = col.map(index).to_numpy(dtype=np.int64)
    how = "classes encoded in sorted order of their values" if numeric else ALPHABETICAL
    return y, [str(v) for v in values], False, how


@register_source("tabular")
class TabularSource(DataSource):
    """A CSV or Parquet table; splits from ``split_column`` or made here (seeded, stratified)."""

    Config = TabularConfig
    config: TabularConfig

    def load(self, seed: int) -> DatasetBundle:
        cfg = self.config
        path = Path(cfg.path).expanduser().resolve()
        where = f"table {path}"
        if not path.is_file():
            raise DataError(f"{where}: file not found; expected a CSV or Parquet file")
        df = read_table(path, cfg.na_values)
        if len(df) == 0:
            raise DataError(
                f"{where}: the file has a header ({', '.join(map(str, df.columns))}) but no data rows; "
                "expected one row per example"
            )
        df.columns = [str(c) for c in df.columns]
        targets = [cfg.target] if isinstance(cfg.target, str) else list(cfg.target)
        missing_targets = [t for t in targets if t not in df.columns]
        if missing_targets:
            raise DataError(
                f"{where}: target column {', '.join(map(repr, missing_targets))} not found; the file's columns are "
                f"{list(df.columns)}"
            )
        _require_columns(df, cfg.drop, where=where, field="drop")
        _require_columns(df, list(cfg.categorical or []), where=where, field="categorical")
        if cfg.split_column is not None:
            _require_columns(df, [cfg.split_column], where=where, field="split_column")
        if cfg.time_column is not None:
            _require_columns(df, [cfg.time_column], where=where, field="time_column")
            both = [f for f, v in (("split_column", cfg.split_column), ("group", cfg.group)) if v is not None]
            if both:
                raise DataError(
                    f"{where}: time_column {cfg.time_column!r} and {both[0]} {getattr(cfg, both[0])!r} both say "
                    "how to split; expected one (an entity observed over time, split by time, has rows in "
                    "train and test: that is the production case a time split measures)"
                )
        if cfg.group is not None:
            _require_columns(df, [cfg.group], where=where, field="group")
            if cfg.group in targets:
                raise DataError(f"{where}: group {cfg.group!r} is the target; expected a column of group ids")
        if TARGET_COLUMN in df.columns:
            raise DataError(f"{where}: column name {TARGET_COLUMN!r} is reserved; rename that column")
        unlabeled = df[targets].isna().any(axis=1)
        dropped = int(unlabeled.sum()) if cfg.missing_target == "drop" else 0
        df = (df[~unlabeled] if dropped else df).reset_index(drop=True)
        if len(df) == 0:
            raise DataError(f"{where}: every row's target {cfg.target!r} is missing; expected labeled rows")

        groups = None
        if cfg.group is not None:
            no_group = df[cfg.group].isna().to_numpy()
            if no_group.any():
                rows = ", ".join(str(i) for i in np.flatnonzero(no_group)[:5])
                raise DataError(
                    f"{where}: group column {cfg.group!r} is missing in {int(no_group.sum())} row(s) (rows {rows}); "
                    "expected a group id on every row"
                )
            groups = df[cfg.group].astype(str).to_numpy()
        excluded = {*targets, *cfg.drop, *(c for c in (cfg.split_column, cfg.group) if c)}
        features = [c for c in df.columns if c not in excluded]
        if not features:
            raise DataError(f"{where}: no feature columns left after removing target, split_column and drop")
        X = df[features].copy()
        if cfg.categorical is None:
            categorical = [
                c
                for c in features
                if X[c].dtype == object
                or pd.api.types.is_bool_dtype(X[c].dtype)
                or pd.api.types.is_string_dtype(X[c].dtype)
                or isinstance(X[c].dtype, pd.CategoricalDtype)
            ]
            for c in categorical:
                _refuse_numbers_read_as_text(X[c], where)
        else:
            categorical = [c for c in cfg.categorical if c in features]
        for c in categorical:
            # categories from the whole file (sorted), so codes agree across splits
            cats = sorted(X[c].dropna().unique().tolist(), key=lambda v: (str(type(v)), v))
            X[c] = pd.Categorical(X[c], categories=cats)
        for c in features:
            if c not in categorical and (X[c].dtype == object or pd.api.types.is_string_dtype(X[c].dtype)):
                raise DataError(f"{where}: column {c!r} holds text; list it in `categorical` or `drop`")

        if len(targets) > 1:
            y, label_names, positives, how = encode_labels(df[targets], where=where)
            regression = False
        else:
            y, label_names, regression, how = _encode_target(
                df[targets[0]], target_type=cfg.target_type, where=where, class_order=cfg.class_order
            )
        provenance: dict[str, Any] = {
            "file": str(path),
            "rows": len(df),
            "target": cfg.target,
            "target_encoding": how,
        }
        if len(targets) > 1:  # new rows (retrain --add-labeled) read each label with the same positive value
            provenance["label_positives"] = positives
        if cfg.na_values:  # new rows in this file's format (retrain --add-labeled) are read the same way
            provenance["na_values"] = list(cfg.na_values)
        warnings: list[str] = []
        if dropped:
            provenance["unlabeled_rows_dropped"] = dropped
            warnings.append(
                f"{path.name}: {dropped} row(s) without a value in target column {cfg.target!r} dropped "
                "(missing_target: drop); every split and figure is on the labeled rows only"
            )
        if cfg.split_column is not None:
            labels = df[cfg.split_column].astype("string").str.strip().str.lower()
            bad = ~labels.isin(SPLITS).fillna(False).to_numpy(dtype=bool)
            if bad.any():
                found = sorted({str(v) for v in df[cfg.split_column][bad].unique().tolist()})[:10]
                rows = ", ".join(str(i) for i in np.flatnonzero(bad)[:5])
                raise DataError(
                    f"{where}: split_column {cfg.split_column!r} has values {found} (rows {rows}); "
                    "expected train, val or test on every row"
                )
            splits = {
                s: take(X, y, np.flatnonzero((labels == s).to_numpy(dtype=bool)), groups) for s in SPLITS
            }
            split_origin = "source"
            provenance["split_column"] = cfg.split_column
            if groups is not None:
                _refuse_groups_across_splits(splits, cfg.group, where)
        elif cfg.time_column is not None:
            try:
                times = time_order(df[cfg.time_column], f"{where}: time_column {cfg.time_column!r}")
                parts = time_split(times, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction)
            except ValueError as exc:
                raise DataError(
                    str(exc)
                    if str(exc).startswith(where)
                    else f"{where}: time_column {cfg.time_column!r}: {exc}"
                ) from None
            splits = {s: take(X, y, parts[s]) for s in SPLITS}
            split_origin = "time_ordered"
            values = df[cfg.time_column].astype(str).to_numpy()

            def span(rows: np.ndarray) -> list[str]:  # first and last time as written in the file
                return [values[rows[np.argmin(times[rows])]], values[rows[np.argmax(times[rows])]]]

            provenance["time_split"] = {"column": cfg.time_column, **{s: span(parts[s]) for s in SPLITS}}
        else:
            try:
                splits, plan = split_arrays(
                    X,
                    y,
                    val_fraction=cfg.val_fraction,
                    test_fraction=cfg.test_fraction,
                    seed=seed,
                    label_names=label_names,
                    groups=groups,
                )
            except ValueError as exc:  # too few groups for whole-group splits
                raise DataError(f"{where}: group column {cfg.group!r}: {exc}; expected more groups") from exc
            split_origin = "seeded_stratified"
            provenance["splits"] = plan.provenance(seed, cfg.val_fraction, cfg.test_fraction)
            if plan.small_classes and plan.note:
                warnings.append(f"{path.name}: {plan.note}")
        if groups is not None:
            provenance["group"] = {
                "column": cfg.group,
                "groups": int(len(set(groups.tolist()))),
                "rows_per_group_max": int(pd.Series(groups).value_counts().max()),
            }
        meta = DatasetMeta(
            name=path.stem,
            source="tabular",
            kind="table",
            task_hint="regression" if regression else "multilabel" if len(targets) > 1 else None,
            label_names=label_names,
            feature_names=features,
            categorical_features=categorical,
            split_origin=split_origin,
            time_column=cfg.time_column if cfg.time_column in features else None,
            provenance=provenance,
            warnings=warnings,
        )
        bundle = DatasetBundle(meta=meta, splits=splits)
        return validate_bundle(bundle, where=where)
