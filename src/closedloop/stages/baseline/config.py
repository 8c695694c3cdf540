"""The baseline stage's config: which built-in baselines run, their settings, and extra ones."""

from __future__ import annotations

from pydantic import Field, field_validator

from closedloop.core.config import PluginSpec, StageConfig
from closedloop.stages.baseline.base import resolve_baseline


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
    entity_column: str | None = None
    """Table column naming the entity a row belongs to (a state, a store, a patient): persistence then
    repeats that entity's own latest earlier target, the forecaster's "same as last period"; a row of an
    entity not seen before gets the latest earlier target of any entity."""
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
