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

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from closedloop.core.artifacts import JsonArtifact
from closedloop.core.errors import ConfigError, DataError
from closedloop.core.registry import register_stage
from closedloop.core.stage import RunContext, Stage, StageIO
from closedloop.data.bundle import DatasetBundle, Split
from closedloop.stages.baseline.config import FitBaselinesConfig
from closedloop.stages.baseline.fit import BaselineModel, _concat, configured_baselines, fit_baseline, fit_one
from closedloop.stages.task import TaskSpec
from closedloop.stats.bootstrap import metrics_with_ci, usable_clusters
from closedloop.stats.errors import StatsError
from closedloop.stats.metrics import higher_is_better


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
        self,
        name: str,
        data: DatasetBundle,
        task: TaskSpec,
        *,
        on: Literal["train", "train+val"] = "train",
        val_rows: np.ndarray | None = None,
    ) -> BaselineModel:
        """Refit baseline ``name`` (same settings and seed as in the stage) on train or train+val.

        ``val_rows``: with ``on="train+val"``, only these validation rows join train (the rows the
        trained model's final fit used, so both sides of a test comparison saw the same data)."""
        if on not in ("train", "train+val"):
            raise ConfigError(f"fit_best: on must be 'train' or 'train+val', got {on!r}")
        cfg = FitBaselinesConfig.model_validate(self.config)
        split = data.train
        if on == "train+val":
            val = data.val
            if val_rows is not None:
                rows = np.asarray(val_rows, dtype=np.int64)
                X = val.X.iloc[rows] if isinstance(val.X, pd.DataFrame) else val.X[rows]
                val = Split(X=X, y=np.asarray(val.y)[rows])
            split = _concat(data.train, val) if len(val) else data.train
        return fit_baseline(name, split, task, cfg, seed=self.seed, time_column=self.time_column)

    def fit_best(
        self,
        data: DatasetBundle,
        task: TaskSpec,
        *,
        on: Literal["train", "train+val"] = "train",
        val_rows: np.ndarray | None = None,
    ) -> BaselineModel:
        """Refit the best baseline; the result has ``predict_proba(X)`` in the prediction convention."""
        return self.fit(self.best, data, task, on=on, val_rows=val_rows)


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
        if cfg.entity_column and data.kind == "table" and cfg.entity_column not in data.train.X.columns:
            raise ConfigError(
                f"stage {self.name!r}: entity_column {cfg.entity_column!r} is not a feature column of the table "
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
            val = _score(task, y_val, proba, cfg.n_resamples, ctx.seed, data.val.groups)
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
        from closedloop.core.blocks import Callout, Figure, Paragraph, Table

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
    task: TaskSpec,
    y: np.ndarray,
    proba: np.ndarray,
    n_resamples: int,
    seed: int,
    groups: np.ndarray | None = None,
) -> dict[str, MetricCI]:
    """Each metric with its interval; with ``groups`` (``data.group``) the resamples draw whole groups."""
    clusters = usable_clusters(groups)
    kw = {
        "convention": task.metric_convention,
        "n_resamples": n_resamples,
        "seed": seed,
        "clusters": clusters,
    }
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
