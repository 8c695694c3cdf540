"""The baseline stage: the score of the simplest things that could work, i.e. the bar to beat.

Trivial baselines per problem type (most frequent class, class priors, stratified random; mean and
median for regression; persistence when a table declares a time column) and simple models
(regularized logistic / ridge regression and k-nearest neighbours on flattened pixels or table
features, with imputation and scaling; optionally a tree ensemble for tables). Each is fitted on
train and scored on validation with 95% bootstrap intervals, and recorded in the validation ledger.
The best one (by the task's primary metric) sets the bar.

YAML::

    - kind: baseline
      params: {knn_neighbors: 15, tree_ensemble: false, extra: ["my_pkg.baselines:Centroid"]}

Python::

    report = FitBaselines().execute({"data": bundle, "task": task}, ctx).baseline
    report.best, report.bar                      # 'logistic', {'auc': 0.95, 'acc': 0.88, ...}
    model = report.fit_best(bundle, task)        # deterministic refit; model.predict_proba(X)
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from closedloop.core.artifacts import JsonArtifact
from closedloop.core.config import PluginSpec, StageConfig
from closedloop.core.errors import ConfigError, DataError
from closedloop.core.registry import register_stage
from closedloop.core.stage import RunContext, Stage, StageIO
from closedloop.data.bundle import DatasetBundle, Split
from closedloop.stages.baseline.base import BASELINES, Baseline, resolve_baseline
from closedloop.stages.baseline.builtin import PersistenceModel
from closedloop.stages.task import TaskSpec
from closedloop.stats.bootstrap import metrics_with_ci
from closedloop.stats.errors import StatsError
from closedloop.stats.metrics import higher_is_better


class FitBaselinesConfig(StageConfig):
    """Which baselines to fit and how to score them."""

    trivial: bool = True
    """Most frequent / prior / stratified random (classification), mean / median (regression)."""
    linear: bool = True
    """Regularized logistic regression (classification) or ridge regression (regression)."""
    knn: bool = True
    """k-nearest neighbours."""
    tree_ensemble: bool = False
    """Gradient-boosted trees, for tables only (slower; off by default)."""
    knn_neighbors: int = Field(15, ge=1)
    C: float = Field(0.01, gt=0)
    """Inverse L2 strength of the logistic regression (strong by default: many pixels, few images)."""
    ridge_alpha: float = Field(1.0, gt=0)
    max_train: int | None = Field(20000, ge=10)
    """Fit the simple models on at most this many training examples (seeded subsample) to bound time."""
    n_resamples: int = Field(1000, ge=50)
    """Bootstrap resamples for the 95% intervals."""
    time_column: str | None = None
    """Table column ordering the rows in time: enables the persistence baseline
    (default: the dataset's declared ``time_column``, if any)."""
    extra: list[str | PluginSpec] = Field(default_factory=list)
    """More baselines by registered name or import path (or ``{name, params}``), after the built-ins."""

    @field_validator("extra")
    @classmethod
    def _resolve(cls, v: list[str | PluginSpec]) -> list[str | PluginSpec]:
        for i, spec in enumerate(v):
            name, params = PluginSpec.parts(spec)
            resolve_baseline(name, where=f"stage 'baseline': extra[{i}]")(
                params, where=f"stage 'baseline': extra[{i}] ({name}).params"
            )
        return v


class MetricCI(BaseModel):
    """A metric value on validation with its 95% bootstrap interval (None where undefined)."""

    model_config = ConfigDict(extra="forbid")

    value: float | None
    ci95: list[float | None]
    error: str | None = None


class BaselineResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["trivial", "simple"]
    description: str
    params: dict[str, Any] = Field(default_factory=dict)
    val: dict[str, MetricCI]
    n_train: int


class BaselineReport(JsonArtifact):
    """Every baseline's validation metrics with 95% intervals, the best one and the bar.

    Layout: ``artifact.json``. :meth:`fit_best` refits the best baseline deterministically so the
    final evaluation can score it on test, paired with the model.
    """

    problem_type: str
    primary_metric: str
    higher_is_better: bool
    metrics: list[str]
    convention: Literal["medmnist", "standard"]
    n_val: int
    results: list[BaselineResult]
    best: str
    bar: dict[str, float]
    """The best baseline's validation value for each metric: what the trained model must beat."""
    references: list[dict[str, Any]] = Field(default_factory=list)
    acceptance: dict[str, float] = Field(default_factory=dict)
    seed: int = 0
    config: dict[str, Any] = Field(default_factory=dict)
    time_column: str | None = None

    def result(self, name: str) -> BaselineResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no baseline {name!r}; have {[r.name for r in self.results]}")

    def fit(
        self, name: str, data: DatasetBundle, task: TaskSpec, *, on: Literal["train", "train+val"] = "train"
    ) -> BaselineModel:
        """Refit baseline ``name`` (same settings and seed as in the stage) on train or train+val."""
        if on not in ("train", "train+val"):
            raise ConfigError(f"fit_best: on must be 'train' or 'train+val', got {on!r}")
        cfg = FitBaselinesConfig.model_validate(self.config)
        split = data.train if on == "train" else _concat(data.train, data.val)
        return fit_baseline(name, split, task, cfg, seed=self.seed, time_column=self.time_column)

    def fit_best(
        self, data: DatasetBundle, task: TaskSpec, *, on: Literal["train", "train+val"] = "train"
    ) -> BaselineModel:
        """Refit the best baseline; the result has ``predict_proba(X)`` in the prediction convention."""
        return self.fit(self.best, data, task, on=on)


# -- models ---------------------------------------------------------------------------------------


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
        model = PersistenceModel(time_column, pt, task.n_outputs).fit(split.X, y)
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


# -- the stage ------------------------------------------------------------------------------------


def _fmt_ci(m: MetricCI) -> str:
    if m.value is None:
        return "undefined"
    lo, hi = m.ci95
    if lo is None or hi is None:
        return f"{m.value:.3f}"
    return f"{m.value:.3f} [{lo:.3f}, {hi:.3f}]"


@register_stage("baseline")
class FitBaselines(Stage):
    """Fit trivial and simple baselines; score them on validation with 95% intervals; set the bar."""

    Config = FitBaselinesConfig
    version = "1"

    class Inputs(StageIO):
        data: DatasetBundle
        task: TaskSpec

    class Outputs(StageIO):
        baseline: BaselineReport

    def run(self, inputs: Inputs, ctx: RunContext) -> Outputs:
        data, task, cfg = inputs.data, inputs.task, self.config
        time_column = cfg.time_column or getattr(data.meta, "time_column", None)
        if cfg.time_column and data.kind == "table" and cfg.time_column not in data.train.X.columns:
            raise ConfigError(
                f"stage {self.name!r}: time_column {cfg.time_column!r} is not a column of the table "
                f"(columns: {list(data.train.X.columns)[:20]})"
            )
        baselines = configured_baselines(task, cfg, time_column if data.kind == "table" else None)
        if not baselines:
            raise ConfigError(f"stage {self.name!r}: every baseline family is switched off in the config")
        y_val = np.asarray(data.val.y)
        results: list[BaselineResult] = []
        for baseline in ctx.progress(baselines, desc="baselines"):
            name = baseline.name
            # persistence: validation rows may use the labels of earlier rows (train or validation)
            split = _concat(data.train, data.val) if baseline.needs_time_column else data.train
            with ctx.timed(f"fit {name}"):
                model = fit_one(baseline, split, task, cfg, seed=ctx.seed, time_column=time_column)
                proba = model.predict_proba(data.val.X)
            val = _score(task, y_val, proba, cfg.n_resamples, ctx.seed)
            params = baseline.params()
            results.append(
                BaselineResult(
                    name=name,
                    kind=baseline.kind,
                    description=baseline.description,
                    params=params,
                    val=val,
                    n_train=min(len(data.train), cfg.max_train or len(data.train)),
                )
            )
            ctx.record_validation(
                f"baseline {name}", {"baseline": name, **params}, {k: v.value for k, v in val.items()}
            )
            ctx.logger.info("baseline %s: %s", name, _fmt_ci(val[task.primary_metric]))

        primary = task.primary_metric
        hib = higher_is_better(primary)
        scored = [r for r in results if r.val[primary].value is not None]
        if not scored:
            err = results[0].val[primary].error
            raise DataError(
                f"stage {self.name!r}: the primary metric {primary!r} is undefined on validation: {err}"
            )
        best = max(scored, key=lambda r: r.val[primary].value if hib else -r.val[primary].value)  # type: ignore[operator]
        bar = {k: v.value for k, v in best.val.items() if v.value is not None}
        report = BaselineReport(
            problem_type=task.problem_type,
            primary_metric=primary,
            higher_is_better=hib,
            metrics=list(task.metrics),
            convention=task.metric_convention,
            n_val=len(y_val),
            results=results,
            best=best.name,
            bar=bar,  # type: ignore[arg-type]
            references=[r.model_dump() for r in task.references],
            acceptance=dict(task.acceptance),
            seed=ctx.seed,
            config=cfg.model_dump(),
            time_column=time_column,
        )
        _figure(report, ctx.figures_dir)
        return self.Outputs(baseline=report)

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        r = outputs.baseline
        best = r.result(r.best)
        return {
            "best": {
                "name": r.best,
                "val": {k: v.value for k, v in best.val.items()},
                "val_ci95": {k: v.ci95 for k, v in best.val.items()},
            },
            "bar": r.bar,
            "primary_metric": r.primary_metric,
            "n_baselines": len(r.results),
        }

    def report(self, outputs: Outputs, stage_dir: Path) -> list[Any]:
        from closedloop.report.blocks import Callout, Figure, Paragraph, Table

        r = outputs.baseline
        best = r.result(r.best)
        pm = r.primary_metric
        blocks: list[Any] = [
            Paragraph(
                f"The bar: the best of {len(r.results)} baselines on validation (n = {r.n_val}) is "
                f"<b>{r.best}</b> ({best.description}) with {pm} {_fmt_ci(best.val[pm])} (95% CI). "
                "The trained model must beat it on the test set, with the paired difference's interval."
            ),
            Table(
                [
                    {
                        "baseline": x.name,
                        "kind": x.kind,
                        **{m: _fmt_ci(x.val[m]) for m in r.metrics if m in x.val},
                    }
                    for x in r.results
                ],
                title=f"Baselines on validation ({r.convention} metrics, 95% bootstrap intervals)",
            ),
        ]
        errors = {f"{x.name}/{m}": v.error for x in r.results for m, v in x.val.items() if v.error}
        if errors:
            blocks.append(
                Callout("; ".join(f"{k}: {v}" for k, v in list(errors.items())[:3]), level="warning")
            )
        if r.references:
            rows = []
            for ref in r.references:
                row = {
                    "reference": ref.get("name"),
                    "level": ref.get("level"),
                    "source": ref.get("source", ""),
                }
                for m in r.metrics:
                    if m in ref.get("metrics", {}):
                        row[m] = f"{ref['metrics'][m]:.3f} (bar {r.bar.get(m, float('nan')):.3f})"
                rows.append(row)
            blocks.append(Table(rows, title="Reference levels declared in the task, beside the bar"))
        if r.acceptance:
            blocks.append(
                Paragraph(
                    "Acceptance bar declared in the task: "
                    + ", ".join(f"{k} {v}" for k, v in r.acceptance.items())
                )
            )
        fig = Path(stage_dir) / "figures" / "baselines.png"
        if not fig.exists():
            try:
                _figure(r, fig.parent)
            except Exception:  # a missing picture must not break the report
                fig = None  # type: ignore[assignment]
        if fig is not None:
            blocks.append(
                Figure(
                    "figures/baselines.png",
                    f"{pm} on validation with 95% intervals; dashed: reference levels",
                )
            )
        return blocks


def _score(
    task: TaskSpec, y: np.ndarray, proba: np.ndarray, n_resamples: int, seed: int
) -> dict[str, MetricCI]:
    kw = {"convention": task.metric_convention, "n_resamples": n_resamples, "seed": seed}
    try:
        res = metrics_with_ci(task.metrics, y, proba, task.problem_type, **kw)  # type: ignore[arg-type]
        return {k: MetricCI(value=v["value"], ci95=v["ci95"]) for k, v in res.items()}
    except StatsError:
        pass
    out = {}
    for m in task.metrics:  # one metric is undefined (e.g. one class in validation): score the rest
        try:
            v = metrics_with_ci([m], y, proba, task.problem_type, **kw)[m]  # type: ignore[arg-type]
            out[m] = MetricCI(value=v["value"], ci95=v["ci95"])
        except StatsError as e:
            out[m] = MetricCI(value=None, ci95=[None, None], error=str(e))
    return out


def _figure(r: BaselineReport, folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pm = r.primary_metric
    rows = [x for x in r.results if x.val[pm].value is not None]
    vals = np.array([x.val[pm].value for x in rows], dtype=float)
    lo = np.array(
        [x.val[pm].ci95[0] if x.val[pm].ci95[0] is not None else v for x, v in zip(rows, vals, strict=True)]
    )
    hi = np.array(
        [x.val[pm].ci95[1] if x.val[pm].ci95[1] is not None else v for x, v in zip(rows, vals, strict=True)]
    )
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 2), 3.2), dpi=110)
    colors = [
        "#d62728" if x.name == r.best else "#7f7f7f" if x.kind == "trivial" else "#1f77b4" for x in rows
    ]
    ax.bar(range(len(rows)), vals, color=colors, yerr=[vals - lo, hi - vals], capsize=4)
    for i, ref in enumerate(r.references):
        if pm in ref.get("metrics", {}):
            ax.axhline(
                ref["metrics"][pm], ls="--", lw=1, color=f"C{(i + 2) % 10}", label=f"{ref.get('name')}"
            )
    if any(pm in ref.get("metrics", {}) for ref in r.references):
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xticks(range(len(rows)), [x.name for x in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{pm} (validation)")
    ax.set_title(f"Baselines: best = {r.best}", fontsize=9)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "baselines.png"
    fig.savefig(path)
    plt.close(fig)
    return path
