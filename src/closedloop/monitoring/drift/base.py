"""The drift-test contract and registry.

A drift test is one class (like an audit check): it declares ``name``, a one-line ``description``
(the part before the first colon is its headline in alert evidence), the problem types it serves, a
pydantic ``Config``, and implements ``run(ref, win, ctx) -> DriftResult``: a p-value under "the window
comes from the reference distribution", a statistic, effect sizes and evidence. Defining a subclass
registers it, so a user adds a test by subclassing and naming it in the monitor stage's YAML
(``tests: [features, "my_pkg.drift:MyTest", {name: bbsd}]``); an incomplete class fails when defined.

Example:
    >>> import numpy as np
    >>> from closedloop.monitoring.drift import DriftResult, DriftTest, DriftTestConfig
    >>> class MeanShift(DriftTest):
    ...     name = "doc_mean_shift"
    ...     description = "first feature: absolute difference of means against a fixed tolerance"
    ...     class Config(DriftTestConfig):
    ...         tolerance: float = 1.0
    ...     def run(self, ref, win, ctx):
    ...         gap = abs(float(win.features[:, 0].mean() - ref.features[:, 0].mean()))
    ...         return DriftResult(p_value=1.0 if gap < self.config.tolerance else 0.0, statistic=gap)
    >>> MeanShift({"tolerance": 0.5}).config.tolerance
    0.5
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from closedloop.core.config import PluginSpec, validate_model
from closedloop.core.errors import ConfigError
from closedloop.core.registry import Registry

DRIFT_TESTS = Registry("drift test", builtin_modules=("closedloop.monitoring.drift.builtin",))
"""Every defined :class:`DriftTest` subclass, by ``name``."""

PROBLEM_TYPES = ("binary", "multiclass", "ordinal", "multilabel", "regression")
SAMPLE_INPUTS = ("features", "embeddings", "proba", "labels")
"""What a :class:`Sample` can carry; a test declares in ``uses`` which of them it reads."""


@dataclass
class Sample:
    """What the tests look at for a set of inputs (reference or window)."""

    features: np.ndarray
    """(N, F) summary features (images: intensity statistics; tables: the columns)."""
    embeddings: np.ndarray | None = None
    """(N, d) penultimate-layer features after the profile's PCA."""
    proba: np.ndarray | None = None
    """(N, K) calibrated probabilities in the package convention."""
    labels: np.ndarray | None = None
    """Labels when they have arrived (class indices; multilabel (N, L))."""
    index: np.ndarray | None = None
    """Row numbers in a pool whose pairwise quantities are precomputed (threshold calibration), else None."""

    def __len__(self) -> int:
        return len(self.features)

    def take(self, idx: np.ndarray) -> Sample:
        def sel(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return Sample(
            self.features[idx], sel(self.embeddings), sel(self.proba), sel(self.labels), sel(self.index)
        )


@dataclass
class DriftContext:
    """Settings and reference facts a test may use."""

    problem_type: str
    threshold: float
    feature_names: list[str]
    categorical: list[int]
    bandwidth: float = 1.0
    permutations: int = 200
    effects: bool = True
    """Compute effect sizes and evidence (off while calibrating, where only p-values matter)."""
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    pool: dict[str, Any] = field(default_factory=dict)
    """Test name -> what its :meth:`DriftTest.prepare_pool` computed over a pool that both samples
    index into (``Sample.index``): calibration draws hundreds of (reference, window) splits of one
    pool, and slicing a precomputed pool matrix gives the same values as recomputing it per split."""


@dataclass
class DriftResult:
    """What a test returns for one window."""

    p_value: float
    statistic: float
    effect: dict[str, float] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)
    said: str = ""
    """A few words on what moved (the most drifted features, say), added to the alert's evidence line."""


class DriftTestConfig(BaseModel):
    """Base of every drift test's config: unknown keys fail."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class DriftTest:
    """Base class of a drift test. Subclasses set ``name``, ``description``, optionally ``Config``,
    ``problem_types``, ``needs_labels`` and ``covariate``, and implement :meth:`run`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type[DriftTestConfig]] = DriftTestConfig
    needs_labels: ClassVar[bool] = False
    """Label tests run only when labels arrive and do not enter the calibrated unlabeled alarm rule;
    one at or below the profile's alpha escalates ok -> warn."""
    label_evidence: ClassVar[str] = ""
    """Label tests: the evidence line's explanation when it fires (default: the description)."""
    covariate: ClassVar[bool] = False
    """Compares the inputs themselves: an alarm here warns that the label-free estimate (which assumes
    calibration survives) is optimistic."""
    problem_types: ClassVar[tuple[str, ...]] = PROBLEM_TYPES
    uses: ClassVar[frozenset[str]] = frozenset({"features"})
    """Which parts of a :class:`Sample` the test reads (a subset of ``SAMPLE_INPUTS``): a monitor that
    cannot provide one of them (the live monitor has no embeddings) skips the test and says why."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("__abstract__", False) or inspect.isabstract(cls):
            return
        where = f"drift test {cls.__qualname__}"
        if not cls.name or not isinstance(cls.name, str):
            raise TypeError(f"{where}: set a class attribute name = '<snake_case_name>'")
        if cls.run is DriftTest.run:
            raise TypeError(f"{where}: implement run(self, ref, win, ctx) -> DriftResult")
        if not cls.description:
            raise TypeError(f"{where}: describe the test in 'description' (it appears in alerts)")
        if not set(cls.problem_types) <= set(PROBLEM_TYPES):
            raise TypeError(f"{where}: problem_types must be a subset of {PROBLEM_TYPES}")
        if not (isinstance(cls.Config, type) and issubclass(cls.Config, DriftTestConfig)):
            raise TypeError(f"{where}: Config must subclass DriftTestConfig")
        if not (cls.uses and set(cls.uses) <= set(SAMPLE_INPUTS)):
            raise TypeError(f"{where}: uses must be a non-empty subset of {SAMPLE_INPUTS}")
        DRIFT_TESTS.register(cls.name)(cls)

    def __init__(self, params: dict[str, Any] | DriftTestConfig | None = None, *, where: str = "") -> None:
        if isinstance(params, DriftTestConfig):
            params = params.model_dump()
        self.config = validate_model(
            type(self).Config, params or {}, where=where or f"drift test {self.name!r}"
        )

    @classmethod
    def headline(cls) -> str:
        """The description up to its first colon (the test's family, shown in alert evidence)."""
        return cls.description.split(":")[0]

    def applies(self, ref: Sample, ctx: DriftContext) -> bool:
        """Whether the test can run on this reference: its problem type, and every input it ``uses``
        present in the reference sample."""
        return ctx.problem_type in self.problem_types and all(getattr(ref, u) is not None for u in self.uses)

    def prepare_pool(self, pool: Sample, ctx: DriftContext) -> Any:
        """Optional: something computed once over a calibration pool (stored in ``ctx.pool[name]``)."""
        return None

    def run(self, ref: Sample, win: Sample, ctx: DriftContext) -> DriftResult:
        raise NotImplementedError


def resolve_drift_test(name: str, *, where: str = "") -> type[DriftTest]:
    """A registered test name or an import path ``pkg.module:Class`` -> the test class."""
    cls = DRIFT_TESTS.resolve(name, where=where)
    if not (isinstance(cls, type) and issubclass(cls, DriftTest)):
        raise ConfigError(f"{where}: {name!r} is not a DriftTest subclass (got {cls!r})")
    return cls


def build_tests(specs: Sequence[str | PluginSpec], *, where: str = "drift tests") -> list[DriftTest]:
    """Configured tests (names, import paths or ``{name, params}``) -> instances, in order; a test
    named twice fails (its p-values would share one key)."""
    tests: list[DriftTest] = []
    for i, spec in enumerate(specs):
        name, params = PluginSpec.parts(spec)
        at = f"{where}[{i}]"
        test = resolve_drift_test(name, where=at)(params, where=f"{at} ({name}).params")
        if any(t.name == test.name for t in tests):
            raise ConfigError(f"{at}: drift test {test.name!r} is listed twice")
        tests.append(test)
    return tests


def run_tests(
    tests: Sequence[DriftTest], ref: Sample, win: Sample, ctx: DriftContext
) -> dict[str, DriftResult]:
    """Run the tests that apply, in order (label tests only when the window has labels)."""
    out: dict[str, DriftResult] = {}
    for test in tests:
        if test.needs_labels and win.labels is None:
            continue
        if test.applies(ref, ctx):
            out[test.name] = test.run(ref, win, ctx)
    return out
