"""Labeled production data (for ``closedloop adapt`` and ``closedloop retrain``): reading and checking it.

An ``.npz`` with ``images`` (or ``X``) and ``labels``, optionally ``selected_by`` (one string per
sample: how the sample was chosen for labeling, e.g. ``random_control`` from the review queue),
``model_version`` (the run id of the model that served it) and ``proba`` (the served P(pos), which
spares running the network); or a CSV/Parquet table with a ``label`` column, the same optional
columns, and the features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.core.errors import DataError

RANDOM_SOURCES = frozenset({"random_control", "random", "spot_check"})
"""``selected_by`` values of samples drawn uniformly at random: the only ones that may judge a model.
Every other value (priority, power, kcenter, ...) was chosen for being uncertain or unusual, so a
score on it is biased."""
META_COLUMNS = ("label", "selected_by", "model_version", "proba")


@dataclass(frozen=True)
class ProductionLabels:
    """Labeled production samples, in the model's input format."""

    X: Any
    y: np.ndarray
    selected_by: np.ndarray | None
    """How each sample was chosen for labeling; ``None`` when the file does not say."""
    model_version: np.ndarray | None
    proba: np.ndarray | None
    path: str

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> ProductionLabels:
        def sub(a: Any) -> Any:
            if a is None:
                return None
            return a.iloc[idx].reset_index(drop=True) if hasattr(a, "iloc") else a[idx]

        return ProductionLabels(
            X=sub(self.X),
            y=self.y[idx],
            selected_by=sub(self.selected_by),
            model_version=sub(self.model_version),
            proba=sub(self.proba),
            path=self.path,
        )

    def randomly_selected(self) -> np.ndarray:
        """Boolean mask of samples chosen uniformly at random (all, when the file does not say)."""
        if self.selected_by is None:
            return np.ones(len(self.y), bool)
        return np.isin(self.selected_by.astype(str), list(RANDOM_SOURCES))


def labels_to_index(raw: np.ndarray, names: list[str], path: Path) -> np.ndarray:
    """Class indices from labels given as class names (``Premium``) or indices; anything else is refused,
    naming the file and the task's classes.

    >>> labels_to_index(np.array(["Good", "Fair"]), ["Fair", "Good"], Path("prod.csv")).tolist()
    [1, 0]
    """
    raw = np.asarray(raw).reshape(-1)
    if raw.dtype.kind in "OUS":
        text = raw.astype(str)
        bad = sorted({str(t) for t in text} - set(names) - {str(i) for i in range(len(names))})
        if bad:
            raise DataError(
                f"{path}: label(s) {bad[:5]} are not classes of this task; expected one of {names} "
                f"(or 0..{len(names) - 1})"
            )
        return np.array([names.index(t) if t in names else int(t) for t in text])
    if raw.dtype.kind == "f" and not np.all(raw == np.round(raw)):
        raise DataError(f"{path}: labels must be class indices or names; got fractional values")
    y = raw.astype(int)
    bad = sorted(int(v) for v in set(np.unique(y)) - set(range(len(names))))
    if bad:
        raise DataError(
            f"{path}: label value(s) {bad[:5]} are not classes of this task; expected 0..{len(names) - 1} "
            f"({', '.join(names)})"
        )
    return y


def read_production_labels(path: str | Path, label_names: list[str]) -> ProductionLabels:
    """Read and check labeled production data (module docstring)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            xkey = "images" if "images" in keys else "X" if "X" in keys else None
            if xkey is None or "labels" not in keys:
                raise DataError(
                    f"{path}: expected arrays 'images' (or 'X') and 'labels'; arrays present: {sorted(keys)}"
                )
            X, raw = z[xkey], z["labels"]
            extra = {k: z[k] for k in ("selected_by", "model_version", "proba") if k in keys}
        if X.ndim == 3:
            X = X[..., None]
    elif path.suffix in (".csv", ".parquet"):
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        if "label" not in df:
            raise DataError(f"{path}: no 'label' column; columns: {list(df.columns)[:10]}")
        raw = df["label"].to_numpy()
        extra = {k: df[k].to_numpy() for k in ("selected_by", "model_version", "proba") if k in df}
        X = df.drop(columns=[c for c in META_COLUMNS if c in df])
    else:
        raise DataError(f"{path}: unsupported labels file; expected .npz, .csv or .parquet")
    n = len(raw)
    if len(X) != n:
        raise DataError(f"{path}: {len(X)} samples but {n} labels")
    if n == 0:
        raise DataError(f"{path}: no labeled samples")
    y = labels_to_index(raw, label_names, path)
    for k, v in extra.items():
        if np.ndim(v) != 0 and len(v) != n:
            raise DataError(f"{path}: '{k}' has {len(v)} entries for {n} samples")
    mv = extra.get("model_version")
    if mv is not None:
        mv = np.full(n, str(mv)) if np.ndim(mv) == 0 else np.asarray(mv).astype(str)
    sb = extra.get("selected_by")
    proba = extra.get("proba")
    return ProductionLabels(
        X=X,
        y=y,
        selected_by=None if sb is None else np.asarray(sb).astype(str),
        model_version=mv,
        proba=None if proba is None else np.asarray(proba, dtype=np.float64),
        path=str(path),
    )


def check_version(labels: ProductionLabels, run_dir: Path, what: str) -> None:
    """Production labels must come from requests the deployed model (this run) served."""
    if labels.model_version is None:
        return
    versions = sorted(set(labels.model_version.tolist()))
    ok = {run_dir.name, run_dir.resolve().name}
    wrong = [v for v in versions if v not in ok]
    if wrong:
        n_wrong = int(np.isin(labels.model_version, wrong).sum())
        raise DataError(
            f"{labels.path}: {what} were served by model version(s) {wrong[:3]}, not by {run_dir.name} "
            f"(the run being adapted): {n_wrong} of {len(labels.y)} rows; adapt the model that served them, or "
            "drop those rows"
        )
