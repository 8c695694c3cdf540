"""The built-in baselines, simplest first (the stage keeps this order; ties in the bar go to the
simpler one). Each is one class; defining it registers it."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import Field

from closedloop.core.errors import DataError
from closedloop.stages.baseline.base import CLASSIFICATION, Baseline, BaselineParams

_CLASSIFY = frozenset(CLASSIFICATION)
_REGRESS = frozenset({"regression"})


class _Dummy(Baseline):
    __abstract__ = True
    kind = "trivial"
    switch = "trivial"
    subsample = False

    def build(self, task: Any, seed: int, n_rows: int) -> Any:
        from sklearn.dummy import DummyClassifier, DummyRegressor

        if task.problem_type == "regression":
            return DummyRegressor(strategy=self.name)
        return DummyClassifier(strategy=self.name, random_state=seed)


class MostFrequent(_Dummy):
    name = "most_frequent"
    description = "always the most frequent class (per label for multi-label)"
    problems = _CLASSIFY


class Prior(_Dummy):
    name = "prior"
    description = "the training class shares as probabilities"
    problems = _CLASSIFY


class Stratified(_Dummy):
    name = "stratified"
    description = "a random class drawn with the training class shares"
    problems = _CLASSIFY


class Mean(_Dummy):
    name = "mean"
    description = "the training mean"
    problems = _REGRESS


class Median(_Dummy):
    name = "median"
    description = "the training median"
    problems = _REGRESS


class Persistence(Baseline):
    name = "persistence"
    kind = "trivial"
    description = (
        "the previous observation's target (ordered by the time column; per entity with entity_column)"
    )
    data_kinds = frozenset({"table"})
    subsample = False
    needs_time_column = True
    switch = "always"  # whenever the table declares a time column

    def build(self, task: Any, seed: int, n_rows: int) -> Any:
        raise NotImplementedError("persistence is built by the stage with the time column")


class Logistic(Baseline):
    name = "logistic"
    description = "L2-regularized logistic regression on scaled features"
    problems = _CLASSIFY
    switch = "linear"
    stage_params: ClassVar[dict[str, str]] = {"C": "C"}

    class Config(BaselineParams):
        C: float = Field(0.01, gt=0)
        """Inverse L2 strength."""

    def build(self, task: Any, seed: int, n_rows: int) -> Any:
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        lr = LogisticRegression(C=self.config.C, max_iter=200, tol=1e-3, random_state=seed)
        return self.scaled(task, OneVsRestClassifier(lr) if task.problem_type == "multilabel" else lr)


class Ridge(Baseline):
    name = "ridge"
    description = "ridge (L2) linear regression on scaled features"
    problems = _REGRESS
    switch = "linear"
    stage_params: ClassVar[dict[str, str]] = {"alpha": "ridge_alpha"}

    class Config(BaselineParams):
        alpha: float = Field(1.0, gt=0)

    def build(self, task: Any, seed: int, n_rows: int) -> Any:
        from sklearn.linear_model import Ridge as SkRidge

        return self.scaled(task, SkRidge(alpha=self.config.alpha))


class Knn(Baseline):
    name = "knn"
    description = "k-nearest neighbours on scaled features"
    switch = "knn"
    stage_params: ClassVar[dict[str, str]] = {"n_neighbors": "knn_neighbors"}

    class Config(BaselineParams):
        n_neighbors: int = Field(15, ge=1)

    def build(self, task: Any, seed: int, n_rows: int) -> Any:
        from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

        k = min(self.config.n_neighbors, n_rows)
        clf = task.problem_type != "regression"
        return self.scaled(
            task, KNeighborsClassifier(n_neighbors=k) if clf else KNeighborsRegressor(n_neighbors=k)
        )


class TreeEnsemble(Baseline):
    name = "tree_ensemble"
    description = "histogram gradient-boosted trees"
    data_kinds = frozenset({"table"})
    switch = "tree_ensemble"

    def build(self, task: Any, seed: int, n_rows: int) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        from sklearn.multiclass import OneVsRestClassifier

        if task.problem_type == "regression":
            return HistGradientBoostingRegressor(random_state=seed)
        if task.problem_type == "multilabel":
            return OneVsRestClassifier(HistGradientBoostingClassifier(random_state=seed))
        return HistGradientBoostingClassifier(random_state=seed)


class PersistenceModel:
    """Predicts the target of the latest earlier row (by time) seen in fit; before any, the prior."""

    def __init__(
        self, time_column: str, problem_type: str, n_outputs: int, entity_column: str | None = None
    ) -> None:
        self.time_column = time_column
        self.problem_type = problem_type
        self.n_outputs = n_outputs
        self.entity_column = entity_column

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> PersistenceModel:
        t = _time_values(X, self.time_column)
        order = np.argsort(t, kind="mergesort")
        self.t_ = t[order]
        self.y_ = np.asarray(y)[order]
        self.fallback_ = self._encode(self.y_).mean(axis=0)
        self.entities_: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.entity_column is not None:  # each entity's own rows, in time order
            e = _entity_values(X, self.entity_column)[order]
            for key in np.unique(e):
                rows = np.flatnonzero(e == key)
                self.entities_[key] = (self.t_[rows], self._encode(self.y_[rows]))
        return self

    def _encode(self, y: np.ndarray) -> np.ndarray:
        if self.problem_type == "regression":
            return np.asarray(y, dtype=np.float64).reshape(len(y), 1)
        if self.problem_type == "multilabel":
            return np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        k = 2 if self.problem_type == "binary" else self.n_outputs
        return np.eye(k)[np.asarray(y).reshape(-1).astype(np.int64)]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        t = _time_values(X, self.time_column)
        idx = np.searchsorted(self.t_, t, side="left") - 1  # strictly earlier rows only
        enc = self._encode(self.y_)
        out = np.where((idx >= 0)[:, None], enc[np.clip(idx, 0, None)], self.fallback_[None, :])
        if self.entity_column is not None:  # an entity's own latest earlier row, where it has one
            e = _entity_values(X, self.entity_column)
            for key in np.unique(e):
                if key not in self.entities_:
                    continue
                rows = np.flatnonzero(e == key)
                times, values = self.entities_[key]
                j = np.searchsorted(times, t[rows], side="left") - 1
                seen = j >= 0
                out[rows[seen]] = values[j[seen]]
        return out


def _entity_values(X: Any, col: str) -> np.ndarray:
    if not isinstance(X, pd.DataFrame) or col not in X.columns:
        cols = list(X.columns)[:20] if isinstance(X, pd.DataFrame) else "images"
        raise DataError(f"baseline 'persistence': entity column {col!r} not found; columns: {cols}")
    return X[col].astype(str).to_numpy()


def _time_values(X: Any, col: str) -> np.ndarray:
    if not isinstance(X, pd.DataFrame) or col not in X.columns:
        cols = list(X.columns)[:20] if isinstance(X, pd.DataFrame) else "images"
        raise DataError(f"baseline 'persistence': time column {col!r} not found; columns: {cols}")
    v = X[col]
    if pd.api.types.is_datetime64_any_dtype(v):
        return v.to_numpy().astype("datetime64[ns]").astype(np.int64).astype(np.float64)
    num = pd.to_numeric(v, errors="coerce")
    if num.isna().any():
        conv = pd.to_datetime(v, errors="coerce")
        if conv.isna().any():
            raise DataError(f"baseline 'persistence': time column {col!r} has missing or unparsable values")
        return conv.to_numpy().astype("datetime64[ns]").astype(np.int64).astype(np.float64)
    return num.to_numpy(dtype=np.float64)
