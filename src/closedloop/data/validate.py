"""Checks every data source runs on its bundle before returning it.

Each failed check raises :class:`~closedloop.core.errors.DataError` naming the dataset (and file),
the split, what was found and what was expected. Problems that do not stop a run (a checksum that
differs from the release) are warnings in ``meta.warnings`` instead, and the audit reports them.

Checked: X/y lengths agree; no split is empty; images are finite ``uint8`` ``(N, H, W, C)`` arrays of
one shape; table features hold no infinities (missing values are allowed and kept); tables have the
same columns in every split; labels are present, integer, within ``0..K-1`` (0/1 for multi-label);
the train target has at least two distinct values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from closedloop.core.errors import DataError
from closedloop.data.bundle import SPLITS, DatasetBundle, Split
from closedloop.data.splits import is_continuous


def _rows(mask: np.ndarray, limit: int = 5) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return shown + (f", ... ({len(rows)} in all)" if len(rows) > limit else "")


def check_image_values(X: np.ndarray, *, where: str, split: str) -> None:
    """Raise if a float image array holds NaN or infinity (call before casting to ``uint8``)."""
    X = np.asarray(X)
    if X.dtype.kind in "fc":
        bad = ~np.isfinite(X.reshape(len(X), -1)).all(axis=1) if len(X) else np.zeros(0, bool)
        if bad.any():
            raise DataError(
                f"{where}: split {split!r}: {int(bad.sum())} image(s) contain NaN or infinite pixel values "
                f"(rows {_rows(bad)}); expected finite pixel values"
            )


def target_kind(y: np.ndarray, task_hint: str | None = None) -> str:
    """'multilabel', 'regression' or 'classes' for a target array."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1 or (task_hint or "").startswith("multi-label"):
        return "multilabel"
    if y.dtype.kind == "f" and (task_hint == "regression" or is_continuous(y.reshape(len(y)))):
        return "regression"
    return "classes"


def _check_lengths(split: Split, *, where: str, name: str) -> None:
    n_x, n_y = len(split.X), len(split.y)
    if n_x != n_y:
        raise DataError(
            f"{where}: split {name!r}: X has {n_x} rows but y has {n_y} labels; expected one label per row"
        )
    if n_x == 0:
        raise DataError(f"{where}: split {name!r} is empty; expected at least one example in every split")


def _check_images(split: Split, *, where: str, name: str, shape: tuple[int, ...] | None) -> tuple[int, ...]:
    X = split.X
    if not isinstance(X, np.ndarray):
        raise DataError(f"{where}: split {name!r}: images must be a numpy array, got {type(X).__name__}")
    check_image_values(X, where=where, split=name)
    if X.ndim != 4:
        raise DataError(
            f"{where}: split {name!r}: images have shape {X.shape}; expected (N, H, W, C) "
            "(grayscale images need C=1)"
        )
    if X.dtype != np.uint8:
        raise DataError(f"{where}: split {name!r}: images have dtype {X.dtype}; expected uint8 (0..255)")
    if shape is not None and X.shape[1:] != shape:
        raise DataError(
            f"{where}: split {name!r}: images are {X.shape[1:]} (H, W, C) but the train images are "
            f"{shape}; expected one image shape in all splits"
        )
    return X.shape[1:]


def _check_table(split: Split, *, where: str, name: str, columns: list[str] | None) -> list[str]:
    X = split.X
    if not isinstance(X, pd.DataFrame):
        raise DataError(
            f"{where}: split {name!r}: a table must be a pandas DataFrame, got {type(X).__name__}"
        )
    cols = [str(c) for c in X.columns]
    if columns is not None and cols != columns:
        raise DataError(
            f"{where}: split {name!r}: columns {cols} differ from the train columns {columns}; "
            "expected the same columns in every split"
        )
    for col in X.columns:
        series = X[col]
        if pd.api.types.is_numeric_dtype(series.dtype) and not isinstance(series.dtype, pd.CategoricalDtype):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
            inf = np.isinf(values)
            if inf.any():
                raise DataError(
                    f"{where}: split {name!r}: column {col!r} has {int(inf.sum())} infinite value(s) "
                    f"(rows {_rows(inf)}); expected finite numbers or missing values (NaN is kept as missing)"
                )
    return cols


def _check_labels(y: np.ndarray, *, where: str, name: str, kind: str, n_labels: int) -> None:
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: split {name!r}: labels have dtype {y.dtype}; expected numbers")
    flat = y.reshape(len(y), -1).astype(np.float64)
    missing = ~np.isfinite(flat).all(axis=1)
    if missing.any():
        raise DataError(
            f"{where}: split {name!r}: {int(missing.sum())} label(s) are missing or not finite "
            f"(rows {_rows(missing)}); expected a label for every example"
        )
    if kind == "regression":
        return
    if kind == "multilabel":
        if y.ndim != 2:
            raise DataError(
                f"{where}: split {name!r}: multi-label targets have shape {y.shape}; expected (N, L)"
            )
        if n_labels and y.shape[1] != n_labels:
            raise DataError(
                f"{where}: split {name!r}: labels have {y.shape[1]} columns; expected {n_labels} (one per label)"
            )
        bad = ~np.isin(flat, (0, 1)).all(axis=1)
        if bad.any():
            raise DataError(
                f"{where}: split {name!r}: multi-label values outside {{0, 1}} (rows {_rows(bad)}); "
                "expected 0/1 per label"
            )
        return
    if flat.shape[1] != 1:
        raise DataError(f"{where}: split {name!r}: labels have shape {y.shape}; expected (N,) class indices")
    col = flat[:, 0]
    bad = (col != np.round(col)) | (col < 0) | ((col >= n_labels) if n_labels else False)
    if bad.any():
        expected = f"0..{n_labels - 1}" if n_labels else "0 or more"
        found = sorted({float(v) if v != int(v) else int(v) for v in col[bad][:10]})
        raise DataError(
            f"{where}: split {name!r}: labels out of range: found {found} (rows {_rows(bad)}); "
            f"expected integer class indices in {expected}"
        )


def _check_train_target(y: np.ndarray, *, where: str, kind: str, label_names: list[str]) -> None:
    y = np.asarray(y)
    flat = y.reshape(len(y), -1)
    distinct = np.unique(flat, axis=0)
    if len(distinct) >= 2:
        return
    if kind == "classes":
        value = int(distinct[0, 0])
        label = label_names[value] if 0 <= value < len(label_names) else str(value)
        raise DataError(
            f"{where}: split 'train': every example has the same class ({label!r}); expected at least two "
            "classes to learn from"
        )
    what = "target value" if kind == "regression" else "label vector"
    raise DataError(
        f"{where}: split 'train': every example has the same {what}; expected at least two distinct values"
    )


def validate_bundle(bundle: DatasetBundle, *, where: str | None = None) -> DatasetBundle:
    """Run every check on ``bundle``; return it unchanged or raise :class:`DataError`.

    Args:
        bundle: The bundle a source is about to return.
        where: How messages name the data (default: ``dataset '<name>'``); sources add the file path.
    """
    meta = bundle.meta
    where = where or f"dataset {meta.name!r}"
    kind = target_kind(bundle.splits["train"].y, meta.task_hint)
    n_labels = 0 if kind == "regression" else len(meta.label_names)
    shape: tuple[int, ...] | None = None
    columns: list[str] | None = None
    for name in SPLITS:
        split = bundle.splits[name]
        _check_lengths(split, where=where, name=name)
        if meta.kind == "images":
            shape = _check_images(split, where=where, name=name, shape=shape)
        else:
            columns = _check_table(split, where=where, name=name, columns=columns)
        _check_labels(split.y, where=where, name=name, kind=kind, n_labels=n_labels)
    _check_train_target(bundle.splits["train"].y, where=where, kind=kind, label_names=meta.label_names)
    return bundle
