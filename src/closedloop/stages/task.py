"""Task definition: what is predicted from what, how success is measured, and the limits it must fit.

Everything not declared is inferred from the data, and each inference is recorded in
``TaskSpec.inferred`` so the report can say *why* (e.g. "primary metric pr_auc: minority class is 7%").
A declaration that contradicts the data (binary declared, 5 classes found) is an error.

Over 400 lines but one idea: the task definition (its config, the inference of what was not declared,
and its report).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from closedloop.artifacts.task import (
    Business,
    Constraints,
    HumanComparison,
    ProblemType,
    Reference,
    TaskSpec,
    ValidationProtocol,
)
from closedloop.core.config import StageConfig
from closedloop.core.errors import ConfigError, DataError
from closedloop.core.io import sha256_file
from closedloop.core.registry import register_stage
from closedloop.core.stage import RunContext, Stage, StageIO
from closedloop.data.bundle import DatasetBundle
from closedloop.stats.metrics import METRICS, ORDINAL_METRICS, higher_is_better, metrics_for

__all__ = [  # the records live in closedloop.artifacts.task (below the stages); named here as before
    "Business",
    "Constraints",
    "DefineTask",
    "DefineTaskConfig",
    "HumanComparison",
    "ProblemType",
    "Reference",
    "TaskSpec",
    "ValidationProtocol",
    "build_task_spec",
]

MEDMNIST_TASKS: dict[str, ProblemType] = {
    "binary-class": "binary",
    "multi-class": "multiclass",
    "multi-label, binary-class": "multilabel",
    "ordinal-regression": "ordinal",
}


class DefineTaskConfig(StageConfig):
    """Declare the task; anything omitted is inferred from the data and reported."""

    problem_type: ProblemType | None = None
    """binary, multiclass, multilabel, ordinal or regression; inferred when omitted."""
    inputs: str | None = None
    """What the model sees, in words (default: from the dataset)."""
    target: str | None = None
    """What it predicts, in words (default: from the dataset)."""
    positive_class: int | None = None
    """Index of the positive class for binary tasks (default 1)."""
    metric: str | None = None
    """Primary metric (auc, acc, pr_auc, f1, balanced_accuracy, rmse, mae, qwk); chosen by rule when omitted."""
    metrics: list[str] | None = None
    """All metrics to report (default: by rule, primary first)."""
    acceptance: dict[str, float] = Field(default_factory=dict)
    """The bar: metric -> minimum (or maximum for rmse/mae) to accept a model."""
    references: list[Reference] = Field(default_factory=list)
    """Human, literature or current-system levels to compare against."""
    human_reference: str = "auto"
    """A measured human level (``closedloop human-baseline``) added to ``references``: ``auto`` reads
    ``<runs_dir>/<name>/human_reference.json`` when it exists, a path reads that file, ``none`` reads
    nothing."""
    constraints: Constraints = Field(default_factory=Constraints)
    business: Business = Field(default_factory=Business)
    intended_use: str = ""
    """Who uses the model, for what decision (goes into the model card)."""
    known_misuse: list[str] = Field(default_factory=list)
    """Uses the model is not fit for (goes into the model card)."""
    validation: ValidationProtocol = Field(default_factory=ValidationProtocol)
    imbalance_threshold: float = Field(0.2, gt=0, lt=0.5)
    """A class share below this makes the data 'imbalanced' for the metric rule."""


def _class_counts(y: np.ndarray, problem: str, n_outputs: int) -> list[int]:
    if problem == "multilabel":
        return [int(v) for v in np.asarray(y).reshape(len(y), -1).sum(axis=0)]
    if problem == "regression":
        return []
    return [int(v) for v in np.bincount(np.asarray(y).reshape(-1).astype(int), minlength=n_outputs)]


def infer_problem_type(data: DatasetBundle) -> tuple[ProblemType, str]:
    y = np.asarray(data.train.y)
    if data.meta.task_hint in ("regression", "binary", "multiclass", "multilabel", "ordinal"):
        return data.meta.task_hint, f"declared by the source ({data.meta.task_hint!r})"  # type: ignore[return-value]
    if data.meta.task_hint in MEDMNIST_TASKS:
        return MEDMNIST_TASKS[data.meta.task_hint], f"declared by the source ({data.meta.task_hint!r})"
    if y.ndim == 2 and y.shape[1] > 1:
        return "multilabel", f"target has {y.shape[1]} columns"
    flat = y.reshape(-1)
    if flat.dtype.kind == "f" and not np.all(np.equal(np.mod(flat[np.isfinite(flat)], 1), 0)):
        return "regression", "target has non-integer values"
    n = len(np.unique(flat))
    if n == 2:
        return "binary", "target has 2 distinct values"
    if flat.dtype.kind == "f" and n > 20:
        return "regression", f"numeric target with {n} distinct values"
    return "multiclass", f"target has {n} distinct classes"


def choose_metrics(
    problem: ProblemType, counts: list[int], medmnist: bool, threshold: float
) -> tuple[str, list[str], str]:
    """The metric rule. Returns (primary, all, reason)."""
    share = min(counts) / max(sum(counts), 1) if counts else 1.0
    if problem == "regression":
        return "rmse", ["rmse", "mae"], "regression: RMSE primary, MAE beside it"
    if problem == "multilabel":
        return "auc", ["auc", "acc"], "multi-label: mean per-label ROC AUC (and mean per-label accuracy)"
    imbalanced = share < threshold if problem == "binary" else (min(counts) / max(max(counts), 1)) < threshold
    # an ordinal error two ranks off is worse than one rank off; accuracy and AUC cannot tell them apart
    ranked = list(ORDINAL_METRICS) if problem == "ordinal" else []
    if medmnist:
        extra = ["pr_auc", "f1", "balanced_accuracy"] if imbalanced else ["balanced_accuracy"]
        return (
            "auc",
            ["auc", "acc", *extra, *ranked],
            "MedMNIST task: AUC and ACC as MedMNIST defines them"
            + (f"; minority class is {share:.0%}, so PR AUC and F1 are reported too" if imbalanced else "")
            + (
                "; ordinal, so the quadratic weighted kappa and the mean absolute rank error too"
                if ranked
                else ""
            ),
        )
    if problem == "ordinal":
        return (
            "qwk",
            [*ORDINAL_METRICS, "balanced_accuracy", "auc", "acc"],
            "ordinal: quadratic weighted kappa (an error costs its distance in ranks squared; chance scores 0), "
            "the mean absolute rank error beside it",
        )
    if problem == "binary":
        if imbalanced:
            return (
                "pr_auc",
                ["pr_auc", "auc", "precision", "recall", "f1"],
                f"imbalanced (minority {share:.0%} < {threshold:.0%}): PR AUC next to ROC AUC",
            )
        return "auc", ["auc", "acc", "f1"], f"balanced (minority {share:.0%}): ROC AUC and accuracy"
    if imbalanced:
        return (
            "balanced_accuracy",
            ["balanced_accuracy", "auc", "f1", "acc"],
            "imbalanced classes: balanced accuracy and macro F1",
        )
    return "acc", ["acc", "auc", "balanced_accuracy"], "balanced classes: accuracy and macro ROC AUC"


def choose_protocol(n_labeled: int, has_source_val: bool) -> tuple[str, str]:
    if n_labeled < 1000:
        return (
            "repeated_kfold",
            f"{n_labeled} labeled samples (< 1,000): repeated k-fold for stable estimates",
        )
    if n_labeled < 5000 and not has_source_val:
        return "kfold", f"{n_labeled} labeled samples (< 5,000): k-fold"
    return "holdout", f"{n_labeled} labeled samples: a hold-out validation split is large enough"


@register_stage("task")
class DefineTask(Stage):
    """Pin down the task: problem type, metrics, acceptance bar, constraints, business framing."""

    Config = DefineTaskConfig
    version = "1"

    class Inputs(StageIO):
        data: DatasetBundle

    class Outputs(StageIO):
        task: TaskSpec

    def human_reference_file(self) -> Path | None:
        """The measured human level this run reads, if any (see ``human_reference``)."""
        v = self.config.human_reference
        if v == "none":
            return None
        if v == "auto":
            path = self.pipeline_home / HUMAN_REFERENCE if self.pipeline_home is not None else None
            return path if path is not None and path.is_file() else None
        path = Path(v).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"task.human_reference: {path} does not exist; expected the human_reference.json written by "
                "'closedloop human-baseline RUN --score DIR' (or 'auto' / 'none')"
            )
        return path

    def cache_key(self) -> str:
        # the file is read at run time: its content, not its name, decides whether a cached task is stale
        path = self.human_reference_file()
        return sha256_file(path) if path is not None else ""

    def run(self, inputs: Inputs, ctx: RunContext) -> Outputs:
        spec = build_task_spec(self.config, inputs.data)
        path = self.human_reference_file()
        if path is not None:
            human = read_human_reference(path)
            spec.references = [*spec.references, human]
            ctx.logger.info("task: measured human level from %s", path)
        return self.Outputs(task=spec)

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        t = outputs.task
        return {
            "problem_type": t.problem_type,
            "n_outputs": t.n_outputs,
            "primary_metric": t.primary_metric,
            "metrics": t.metrics,
            "acceptance": t.acceptance,
            "validation_protocol": t.validation.protocol,
            "inferred": sorted(t.inferred),
            "human_reference": next(
                (r.comparison.model_dump() | {"n": r.n} for r in t.references if r.comparison is not None),
                None,
            ),
        }

    def report(self, outputs: Outputs, stage_dir: Path) -> list[Any]:
        from closedloop.core.blocks import KeyValues, Paragraph, Table

        t = outputs.task
        blocks: list[Any] = [
            Paragraph(
                f"Predict <b>{t.target}</b> from <b>{t.inputs}</b> ({t.problem_type}, {t.n_outputs} output{'s' if t.n_outputs != 1 else ''})."
            ),
            KeyValues(
                {
                    "primary metric": t.primary_metric,
                    "metrics": ", ".join(t.metrics),
                    "metric convention": t.metric_convention,
                    "acceptance bar": t.acceptance or "none declared",
                    "validation protocol": t.validation.protocol,
                    "constraints": {k: v for k, v in t.constraints.model_dump().items() if v is not None},
                    "business framing": {k: v for k, v in t.business.model_dump().items() if v is not None},
                    "intended use": t.intended_use or "not declared",
                    "known misuse": "; ".join(t.known_misuse) or "not declared",
                },
                title="Task",
            ),
        ]
        if t.inferred:
            blocks.append(
                Table([{"field": k, "inferred because": v} for k, v in t.inferred.items()], title="Inferred")
            )
        if t.references:
            rows = []
            for r in t.references:
                ci = {k: f"[{v[0]:.3f}, {v[1]:.3f}]" for k, v in r.ci95.items()}
                rows.append(
                    {
                        "name": r.name,
                        "level": r.level,
                        "metrics": {k: round(v, 4) for k, v in r.metrics.items()},
                        "95% CI": ci or "",
                        "n": r.n if r.n is not None else "",
                        "source": r.source,
                        "model vs this level": r.comparison.sentence() if r.comparison else "",
                    }
                )
            blocks.append(Table(rows, title="Reference levels"))
        return blocks


HUMAN_REFERENCE = "human_reference.json"


def read_human_reference(path: Path) -> Reference:
    """The ``reference`` of a ``human_reference.json`` (written by ``closedloop human-baseline``)."""
    import json

    from pydantic import ValidationError

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        ref = Reference.model_validate(raw["reference"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValidationError) as exc:
        raise ConfigError(
            f"task.human_reference: {path} is not a human_reference.json written by 'closedloop "
            f"human-baseline' ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None
    if ref.level != "human":
        raise ConfigError(
            f"task.human_reference: {path} holds a reference of level {ref.level!r}, expected 'human'"
        )
    return ref


def build_task_spec(cfg: DefineTaskConfig, data: DatasetBundle) -> TaskSpec:
    """Combine the declaration with the data; raise :class:`DataError` where they disagree."""
    inferred: dict[str, str] = {}
    y = np.asarray(data.train.y)
    name = data.meta.name
    if len(y) == 0:
        raise DataError(f"dataset {name!r}: the train split is empty")
    if len(data.val.y) == 0:  # else a numpy reshape error below, naming nothing
        raise DataError(
            f"dataset {name!r}: the val split is empty; the stages choose, stop early and calibrate on it "
            "(give the source a validation fraction or a val split)"
        )
    inferred_type, why = infer_problem_type(data)
    problem = cfg.problem_type or inferred_type
    if cfg.problem_type is None:
        inferred["problem_type"] = why
    from closedloop.data.sources.tabular import ALPHABETICAL  # here: the table source brings pandas

    if problem == "ordinal" and data.meta.provenance.get("target_encoding") == ALPHABETICAL:
        order = " < ".join(data.meta.label_names)
        raise ConfigError(
            f"task.problem_type: ordinal needs the classes in rank order, but the text target of dataset {name!r} was "
            f"encoded in alphabetical order ({order}); give the ranks with data.class_order (lowest first; "
            "the alphabetical order too, if it is the rank order)"
        )
    labels_all = np.concatenate(
        [
            np.asarray(data.train.y).reshape(len(data.train.y), -1),
            np.asarray(data.val.y).reshape(len(data.val.y), -1),
        ]
    )

    if problem == "regression":
        n_outputs = 1
    elif problem == "multilabel":
        if y.ndim != 2:
            raise DataError(
                f"dataset {name!r}: multilabel declared but the target has one column (shape {y.shape})"
            )
        n_outputs = y.shape[1]
    else:
        if y.ndim == 2 and y.shape[1] > 1:
            raise DataError(
                f"dataset {name!r}: {problem} declared but the target has {y.shape[1]} columns (multi-label?)"
            )
        classes = np.unique(labels_all)
        if np.any(classes < 0) or np.any(np.mod(classes, 1) != 0):
            raise DataError(
                f"dataset {name!r}: class labels must be integers 0..K-1, found {classes[:10].tolist()}"
            )
        n_found = len(np.unique(y.reshape(-1)))
        if n_found < 2:
            raise DataError(
                f"dataset {name!r}: the train target has a single class ({classes.tolist()}); nothing to learn"
            )
        n_outputs = max(int(classes.max()) + 1, len(data.meta.label_names))
        if problem == "binary" and n_outputs != 2:
            raise DataError(
                f"dataset {name!r}: problem_type binary declared, but {n_outputs} classes found ({classes[:10].tolist()})"
            )

    label_names = list(data.meta.label_names) or (
        [] if problem == "regression" else [str(i) for i in range(n_outputs)]
    )
    counts = {s: _class_counts(getattr(data, s).y, problem, n_outputs) for s in ("train", "val")}

    if problem == "multilabel" and counts["train"] and min(counts["train"]) == 0:
        empty = [label_names[i] for i, c in enumerate(counts["train"]) if c == 0]
        raise DataError(f"dataset {name!r}: label(s) {empty} have no positive example in train")

    medmnist = data.meta.source == "medmnist"
    primary, metrics, why = choose_metrics(problem, counts["train"], medmnist, cfg.imbalance_threshold)
    if cfg.metric is None:
        inferred["primary_metric"] = why
    else:
        primary = cfg.metric
    if cfg.metrics is not None:
        metrics = list(cfg.metrics)
    metrics = [primary, *(m for m in metrics if m != primary)]
    _check_metric_names([primary, *metrics, *cfg.acceptance], problem)

    positive = None
    if problem == "binary":
        positive = 1 if cfg.positive_class is None else cfg.positive_class
        if positive not in (0, 1):
            raise DataError(f"positive_class must be 0 or 1 for a binary task, got {positive}")

    business = cfg.business
    if problem == "binary" and business.prevalence is None:
        prev = counts["train"][positive] / max(sum(counts["train"]), 1)
        business = business.model_copy(update={"prevalence": round(prev, 4)})
        inferred["business.prevalence"] = f"train prevalence of class {label_names[positive]!r}: {prev:.3f}"
    if problem == "binary" and business.positive_name is None:
        business = business.model_copy(update={"positive_name": label_names[positive]})

    validation = cfg.validation
    if validation.protocol is None:
        n_labeled = len(data.train) + len(data.val)
        if data.meta.split_origin == "time_ordered":  # folds of train+val would mix the periods
            proto, why = (
                "holdout",
                (
                    f"{n_labeled} labeled samples split in time order: the later validation rows judge (k-fold folds "
                    "would train on periods after the ones they score)"
                ),
            )
        else:
            proto, why = choose_protocol(n_labeled, data.meta.split_origin != "seeded_stratified")
        validation = validation.model_copy(update={"protocol": proto})
        inferred["validation.protocol"] = why

    if data.kind == "images":
        input_shape = list(data.image_shape or ())
        inputs_desc = (
            cfg.inputs or f"{input_shape[0]}x{input_shape[1]} images with {input_shape[2]} channel(s)"
        )
    else:
        input_shape = [data.train.X.shape[1]]
        inputs_desc = cfg.inputs or f"{input_shape[0]} tabular features"
    if cfg.inputs is None:
        inferred["inputs"] = "from the dataset"
    column = data.meta.provenance.get("target")  # a table's target column(s), as the user named them
    if isinstance(column, list):  # a multi-label table: the columns are the labels
        default_target = f"{data.meta.name} labels ({', '.join(column)})"
    elif problem == "regression":
        default_target = f"{data.meta.name} {column or 'target'} (a number)"
    else:
        shown = f"{', '.join(label_names[:6])}{'...' if len(label_names) > 6 else ''}"
        default_target = f"{data.meta.name} {column or 'label'} ({shown})"
    target_desc = cfg.target or default_target

    return TaskSpec(
        problem_type=problem,
        n_outputs=n_outputs,
        label_names=label_names,
        positive_class=positive,
        inputs=inputs_desc,
        target=target_desc,
        data_kind=data.kind,  # type: ignore[arg-type]
        input_shape=input_shape,
        primary_metric=primary,
        metrics=list(dict.fromkeys(metrics)),
        metric_convention="medmnist" if medmnist else "standard",
        higher_is_better=higher_is_better(primary),
        acceptance=dict(cfg.acceptance),
        references=list(cfg.references),
        constraints=cfg.constraints,
        business=business,
        intended_use=cfg.intended_use,
        known_misuse=list(cfg.known_misuse),
        validation=validation,
        class_counts=counts,
        inferred=inferred,
    )


KNOWN_METRICS = tuple(METRICS)


def _check_metric_names(names: list[str], problem: str) -> None:
    for n in names:
        if n not in KNOWN_METRICS:
            import difflib

            hint = difflib.get_close_matches(n, KNOWN_METRICS, n=1)
            raise ConfigError(
                f"stage 'task': unknown metric {n!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}; valid: {', '.join(KNOWN_METRICS)}"
            )
        if n not in metrics_for(problem):
            raise ConfigError(
                f"stage 'task': metric {n!r} is not defined for a {problem} task; valid there: "
                f"{', '.join(metrics_for(problem))}"
            )
