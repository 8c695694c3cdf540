"""Fitting baselines: the configured list for a task, one fit on a split, and the fitted model's
``predict_proba`` in the package's prediction convention."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from closedloop.core.config import PluginSpec
from closedloop.core.errors import ConfigError
from closedloop.data.bundle import Split
from closedloop.stages.baseline.base import BASELINES, Baseline, resolve_baseline
from closedloop.stages.baseline.builtin import PersistenceModel
from closedloop.stages.baseline.config import FitBaselinesConfig
from closedloop.stages.task import TaskSpec


def _features(X: Any) -> np.ndarray:
    if isinstance(X, Split):
        return X.features()
    return Split(X=X, y=np.zeros(len(X))).features()


def _concat(a: Split, b: Split) -> Split:
    if isinstance(a.X, pd.DataFrame):
        X: Any = pd.concat([a.X, b.X], ignore_index=True)
    else:
        X = np.concatenate([a.X, b.X])
    return Split(X=X, y=np.concatenate([a.y, b.y]))


def _proba_columns(p: Any, classes: np.ndarray, k: int) -> np.ndarray:
    """sklearn's predict_proba (columns = classes seen in fit) -> (N, k) columns 0..k-1."""
    p = np.asarray(p, dtype=np.float64)
    out = np.zeros((p.shape[0], k))
    out[:, np.asarray(classes, dtype=np.int64)] = p
    return out


class BaselineModel:
    """A fitted baseline: ``predict_proba(X)`` on raw inputs (uint8 images or a DataFrame), in the
    package's prediction convention (binary (N, 2); multi-class (N, K); multi-label (N, L);
    regression (N, 1))."""

    def __init__(self, name: str, estimator: Any, problem_type: str, n_outputs: int) -> None:
        self.name = name
        self.estimator = estimator
        self.problem_type = problem_type
        self.n_outputs = n_outputs

    def __repr__(self) -> str:
        return f"BaselineModel({self.name!r}, {type(self.estimator).__name__})"

    def predict_proba(self, X: Any) -> np.ndarray:
        if isinstance(self.estimator, PersistenceModel):
            return self.estimator.predict(X)
        F = _features(X)
        est = self.estimator
        if self.problem_type == "regression":
            return np.asarray(est.predict(F), dtype=np.float64).reshape(len(F), 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = est.predict_proba(F)
        if self.problem_type == "multilabel":
            if isinstance(p, list):  # one (N, 2) array per label
                cols = []
                for j, pj in enumerate(p):
                    classes = _label_classes(est, j)
                    cols.append(_proba_columns(pj, classes, 2)[:, 1])
                return np.stack(cols, axis=1)
            return np.asarray(p, dtype=np.float64)
        k = 2 if self.problem_type == "binary" else self.n_outputs
        return _proba_columns(p, _classes(est), k)


def _classes(est: Any) -> np.ndarray:
    return est.classes_ if hasattr(est, "classes_") else est[-1].classes_


def _label_classes(est: Any, j: int) -> np.ndarray:
    c = _classes(est)
    return c[j] if isinstance(c, list) else c


def _subsample(split: Split, n_max: int | None, seed: int, stratify: bool) -> Split:
    n = len(split)
    if n_max is None or n <= n_max:
        return split
    rng = np.random.default_rng([seed, 7919])
    if stratify:
        y = np.asarray(split.y).reshape(n)
        idx = np.concatenate(
            [
                rng.choice(np.flatnonzero(y == c), max(1, round(n_max * np.mean(y == c))), replace=False)
                for c in np.unique(y)
            ]
        )
    else:
        idx = rng.choice(n, n_max, replace=False)
    idx = np.sort(idx)
    X = split.X.iloc[idx].reset_index(drop=True) if isinstance(split.X, pd.DataFrame) else split.X[idx]
    return Split(X=X, y=np.asarray(split.y)[idx])


def configured_baselines(task: TaskSpec, cfg: FitBaselinesConfig, time_column: str | None) -> list[Baseline]:
    """The baselines that apply to this task, simplest first (ties in the bar go to the simpler one):
    the built-ins switched on in the config, then the config's ``extra`` ones."""
    out: list[Baseline] = []
    for cls in BASELINES.items(sort=False).values():
        switched_on = cls.switch == "always" or (cls.switch is not None and getattr(cfg, cls.switch))
        if not switched_on or not cls.applies(task):
            continue
        if cls.needs_time_column and time_column is None:
            continue
        out.append(cls({field: getattr(cfg, src) for field, src in cls.stage_params.items()}))
    for i, spec in enumerate(cfg.extra):
        name, params = PluginSpec.parts(spec)
        cls = resolve_baseline(name, where=f"stage 'baseline': extra[{i}]")
        if cls.applies(task):
            out.append(cls(params))
    return out


def candidate_names(task: TaskSpec, cfg: FitBaselinesConfig, time_column: str | None) -> list[str]:
    """Names of :func:`configured_baselines`."""
    return [b.name for b in configured_baselines(task, cfg, time_column)]


def fit_baseline(
    name: str,
    split: Split,
    task: TaskSpec,
    cfg: FitBaselinesConfig,
    *,
    seed: int,
    time_column: str | None = None,
) -> BaselineModel:
    """Fit one configured baseline on ``split`` (deterministic given ``seed``)."""
    by_name = {b.name: b for b in configured_baselines(task, cfg, time_column)}
    if name not in by_name:
        if name == "persistence":
            raise ConfigError("baseline 'persistence' needs a time column (config time_column)")
        raise ConfigError(
            f"baseline {name!r} is not configured for this task; configured: {', '.join(by_name)}"
        )
    return fit_one(by_name[name], split, task, cfg, seed=seed, time_column=time_column)


def fit_one(
    baseline: Baseline,
    split: Split,
    task: TaskSpec,
    cfg: FitBaselinesConfig,
    *,
    seed: int,
    time_column: str | None = None,
) -> BaselineModel:
    """Fit ``baseline`` on ``split``: subsampled to ``max_train`` unless it is trivial."""
    pt = task.problem_type
    clf = pt != "regression"
    y = np.asarray(split.y)
    y = y.reshape(len(y), -1) if pt == "multilabel" else y.reshape(len(y))
    if clf:
        y = y.astype(np.int64)
    if baseline.needs_time_column:
        assert time_column is not None
        model = PersistenceModel(time_column, pt, task.n_outputs, cfg.entity_column).fit(split.X, y)
        return BaselineModel(baseline.name, model, pt, task.n_outputs)
    if baseline.subsample:
        split = _subsample(split, cfg.max_train, seed, stratify=pt in ("binary", "multiclass", "ordinal"))
        y = np.asarray(split.y)
        y = y.reshape(len(y), -1).astype(np.int64) if pt == "multilabel" else y.reshape(len(y))
        if clf and pt != "multilabel":
            y = y.astype(np.int64)
    F = _features(split)
    est = baseline.build(task, seed, len(F))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of a baseline are not actionable
        est.fit(F, y)
    return BaselineModel(baseline.name, est, pt, task.n_outputs)
