"""The task spec: what is predicted from what, how success is measured and the limits it must fit.

Written by the ``task`` stage (:mod:`closedloop.stages.task`, which also infers what was not declared);
read by every later stage and by everything that reads a finished run (``RunDir(path).artifact(TaskSpec)``).
The sections are also the ``task`` stage's config sections, so a declared value and the recorded one
are the same type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from closedloop.core.artifacts import JsonArtifact

ProblemType = Literal["binary", "multiclass", "multilabel", "ordinal", "regression"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class HumanComparison(_Section):
    """The model against a measured human level on the same items (``closedloop human-baseline``)."""

    metric: str
    model_value: float
    human_value: float
    delta: float
    """model - human."""
    ci95: list[float]
    """Paired bootstrap interval of ``delta``."""
    p_value: float
    method: str
    """How ``p_value`` was computed (McNemar for accuracy, paired bootstrap otherwise)."""
    verdict: Literal["better", "not_distinguishable", "worse"]
    """The model is significantly better than / not distinguishable from / worse than the human level."""
    evaluated_on: str
    """The items: split, how they were drawn, and that the compared model never trained on them."""
    model_run: str
    """The run whose model was compared."""

    def sentence(self) -> str:
        words = {
            "better": "significantly better than",
            "not_distinguishable": "not distinguishable from",
            "worse": "significantly worse than",
        }[self.verdict]
        p = "p < 0.001" if self.p_value < 0.001 else f"p = {self.p_value:.3f}"
        return (
            f"the model is {words} the measured human level: {self.metric} {self.model_value:.3f} vs "
            f"{self.human_value:.3f}, difference {self.delta:+.3f} [{self.ci95[0]:+.3f}, {self.ci95[1]:+.3f}], "
            f"{p} ({self.method}; {self.evaluated_on}; model of run {Path(self.model_run).name})"
        )


class Reference(_Section):
    """A level to compare against: human, literature or the current system."""

    name: str
    """E.g. 'radiologist', 'MedMNIST v2 ResNet-18 (28)'."""
    level: Literal["human", "literature", "current_system"] = "literature"
    metrics: dict[str, float] = Field(default_factory=dict)
    """Metric name -> value, e.g. {auc: 0.944}."""
    source: str = ""
    """Where the number comes from (paper, URL, internal report)."""
    ci95: dict[str, list[float]] = Field(default_factory=dict)
    """Metric name -> 95% interval, for measured levels (``closedloop human-baseline``)."""
    n: int | None = None
    """Number of items the level was measured on."""
    comparison: HumanComparison | None = None
    """A measured human level: the model against the human on the same items (paired)."""


class Constraints(_Section):
    """Production limits, part of the task from day one."""

    max_latency_ms: float | None = None
    """Largest acceptable latency (p95, milliseconds) at ``latency_batch_size``."""
    latency_batch_size: int = Field(1, ge=1)
    """Batch size at which latency is measured."""
    max_model_size_mb: float | None = None
    """Largest acceptable model file size in MB."""
    target_runtime: Literal["onnxruntime", "torch"] = "onnxruntime"
    """Where the model will run."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Device of the production runtime."""
    threads: int = Field(1, ge=1)
    """CPU threads available for inference in production."""


class Business(_Section):
    """Turns a confusion matrix into "per day: N caught, M missed, K false alarms"."""

    cases_per_day: float | None = None
    """How many cases the model will see per day."""
    prevalence: float | None = Field(None, gt=0, lt=1)
    """Share of positives in production (binary); inferred from train when omitted."""
    cost_false_positive: float = 1.0
    """Cost of one false alarm (any unit; only the ratio to the false-negative cost matters)."""
    cost_false_negative: float = 1.0
    """Cost of one missed positive."""
    positive_name: str | None = None
    """What a positive is called, e.g. 'pneumonia'."""


class ValidationProtocol(_Section):
    """How models are compared before the single test opening."""

    protocol: Literal["holdout", "kfold", "repeated_kfold"] | None = None
    """Chosen by data size when omitted: small data -> repeated k-fold, large -> hold-out."""
    folds: int = Field(5, ge=2)
    repeats: int = Field(3, ge=1)


class TaskSpec(JsonArtifact):
    """The task every later stage reads. Layout: ``artifact.json``."""

    problem_type: ProblemType
    n_outputs: int
    """Classes (binary: 2), labels (multi-label), or 1 (regression)."""
    label_names: list[str]
    positive_class: int | None
    inputs: str
    target: str
    data_kind: Literal["images", "table"]
    input_shape: list[int]
    """(H, W, C) for images, (n_features,) for tables."""
    primary_metric: str
    metrics: list[str]
    metric_convention: Literal["medmnist", "standard"]
    higher_is_better: bool
    acceptance: dict[str, float]
    references: list[Reference]
    constraints: Constraints
    business: Business
    intended_use: str
    known_misuse: list[str]
    validation: ValidationProtocol
    class_counts: dict[str, list[int]]
    """Per split (train, val) counts per class (multi-label: positives per label)."""
    inferred: dict[str, str]
    """Field -> why it was inferred (the report shows these)."""

    @property
    def is_classification(self) -> bool:
        return self.problem_type != "regression"
