"""The baseline contract and registry: one class per baseline, registered when it is defined.

A baseline declares ``name``, ``kind`` (``trivial`` or ``simple``), a one-line ``description``, the
problems and data kinds it applies to, and builds an unfitted scikit-learn-style estimator. The
stage fits it on train (subsampled to ``max_train`` unless ``subsample = False``), scores it on
validation and keeps the best as the bar. A user adds one by subclassing and naming it in YAML::

    - kind: baseline
      params: {extra: ["my_pkg.baselines:NearestCentroid"]}

Example:
    >>> from sklearn.neighbors import NearestCentroid
    >>> from closedloop.stages.baseline.base import Baseline, BaselineParams
    >>> class Centroid(Baseline):
    ...     name = "doc_centroid"
    ...     description = "the nearest class mean on scaled features"
    ...     problems = frozenset({"binary", "multiclass"})
    ...     class Config(BaselineParams):
    ...         shrink: float | None = None
    ...     def build(self, task, seed, n_rows):
    ...         return self.scaled(task, NearestCentroid(shrink_threshold=self.config.shrink))
    >>> Centroid({"shrink": 0.1}).config.shrink
    0.1
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from closedloop.core.config import validate_model
from closedloop.core.errors import ConfigError
from closedloop.core.registry import Registry

if TYPE_CHECKING:
    from closedloop.stages.task import TaskSpec

BASELINES = Registry("baseline", builtin_modules=("closedloop.stages.baseline.builtin",))
"""Every defined :class:`Baseline` subclass, by ``name``."""

PROBLEMS = frozenset({"binary", "multiclass", "ordinal", "multilabel", "regression"})
CLASSIFICATION = PROBLEMS - {"regression"}


class BaselineParams(BaseModel):
    """Base of every baseline's config: unknown keys fail."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Baseline:
    """Base class of a baseline. Subclasses set the class attributes and implement :meth:`build`."""

    name: ClassVar[str] = ""
    kind: ClassVar[Literal["trivial", "simple"]] = "simple"
    description: ClassVar[str] = ""
    problems: ClassVar[frozenset[str]] = PROBLEMS
    data_kinds: ClassVar[frozenset[str]] = frozenset({"images", "table"})
    Config: ClassVar[type[BaselineParams]] = BaselineParams
    subsample: ClassVar[bool] = True
    """Fit on at most the stage's ``max_train`` rows (trivial baselines see every row)."""
    needs_time_column: ClassVar[bool] = False
    """Fitted on train + validation rows ordered in time (validation rows may use earlier labels)."""
    switch: ClassVar[str | None] = None
    """Built-ins only: the stage-config flag that turns this baseline on (``trivial``, ``linear``, ...),
    or ``"always"``; user baselines (``None``) run when listed in the stage's ``extra``."""
    stage_params: ClassVar[dict[str, str]] = {}
    """Built-ins only: this config's field -> the stage-config field it is read from (``{"C": "C"}``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("__abstract__", False) or inspect.isabstract(cls):
            return
        where = f"baseline {cls.__qualname__}"
        if not cls.name or not isinstance(cls.name, str):
            raise TypeError(f"{where}: set a class attribute name = '<snake_case_name>'")
        if not cls.description:
            raise TypeError(f"{where}: set a one-line description (it appears in the report)")
        if not cls.problems or not set(cls.problems) <= PROBLEMS:
            raise TypeError(f"{where}: problems must be a non-empty subset of {sorted(PROBLEMS)}")
        if not (isinstance(cls.Config, type) and issubclass(cls.Config, BaselineParams)):
            raise TypeError(f"{where}: Config must subclass BaselineParams")
        if cls.build is Baseline.build:
            raise TypeError(f"{where}: implement build(self, task, seed, n_rows) -> estimator")
        BASELINES.register(cls.name)(cls)

    def __init__(self, params: dict[str, Any] | BaselineParams | None = None, *, where: str = "") -> None:
        if isinstance(params, BaselineParams):
            params = params.model_dump()
        self.config = validate_model(
            type(self).Config, params or {}, where=where or f"baseline {self.name!r}"
        )

    @classmethod
    def applies(cls, task: TaskSpec) -> bool:
        return task.problem_type in cls.problems and task.data_kind in cls.data_kinds

    def build(self, task: TaskSpec, seed: int, n_rows: int) -> Any:
        """An unfitted estimator with ``fit(F, y)`` and ``predict_proba`` (``predict`` for regression);
        ``n_rows`` is the number of rows it will be fitted on."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The settings recorded in the validation ledger."""
        return self.config.model_dump()

    @staticmethod
    def scaled(task: TaskSpec, estimator: Any) -> Any:
        """``estimator`` after median imputation (tables) and standard scaling."""
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        steps: list[Any] = []
        if task.data_kind == "table":
            steps.append(SimpleImputer(strategy="median", keep_empty_features=True))
        return make_pipeline(*steps, StandardScaler(), estimator)


def resolve_baseline(name: str, *, where: str = "") -> type[Baseline]:
    """A registered baseline name or an import path ``pkg.module:Class`` -> the baseline class."""
    cls = BASELINES.resolve(name, where=where)
    if not (isinstance(cls, type) and issubclass(cls, Baseline)):
        raise ConfigError(f"{where}: {name!r} is not a Baseline subclass (got {cls!r})")
    return cls
