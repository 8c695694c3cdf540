"""Bad training data the train stage refuses before any fit, each with one clear message (issue #25):
text in a table column that is not declared categorical (it would otherwise silently become missing
values), and a classification validation split holding a single class (no metric could choose a model
on it)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from closedloop.core.errors import ConfigError
from closedloop.data.bundle import DatasetBundle


def check_training_data(data: DatasetBundle, problem_type: str) -> None:
    if data.kind == "table":
        for split in ("train", "val"):
            _numeric_columns(data.splits[split].X, split, data.meta.categorical_features)
    if problem_type in ("binary", "multiclass", "ordinal"):
        y = np.asarray(data.val.y).reshape(len(data.val), -1)[:, 0]
        classes = np.unique(y)
        if len(y) and len(classes) < 2:
            names = data.meta.label_names
            c = int(classes[0])
            shown = names[c] if 0 <= c < len(names) else c
            raise ConfigError(
                f"train: the validation split holds a single class ({shown!r}, all {len(y)} rows): no "
                "metric can compare models on it (AUC is undefined). Re-split the data stratified by the "
                "label (data: val_fraction), or give a validation split with every class"
            )


def _numeric_columns(X: object, split: str, categorical: list[str]) -> None:
    if not isinstance(X, pd.DataFrame):
        return
    for name in X.columns:
        col = X[name]
        if isinstance(col.dtype, pd.CategoricalDtype) or pd.api.types.is_numeric_dtype(col.dtype):
            continue
        as_num = pd.to_numeric(col, errors="coerce")
        bad = col[as_num.isna() & col.notna()]
        if len(bad):
            hint = (
                "it is listed in categorical_features but is not a pandas Categorical"
                if name in categorical
                else "declare it categorical (pd.Categorical, or `categorical:` in a tabular data section) or drop it"
            )
            raise ConfigError(
                f"train: column {name!r} of the {split} split holds text ({len(bad)} rows, e.g. {bad.iloc[0]!r}) "
                f"where a number was expected; {hint}"
            )
