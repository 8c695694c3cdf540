"""The tuned knobs: one class each, declaring everything the search, the ablation and the engine need.

A knob is a subclass of :class:`Knob`; defining the class registers it (the order of definition is the
search space's: Optuna suggests in this order, so changing it changes the trials). It declares

- its ``name``, ``kind`` (float or int), ``log`` scale and :meth:`Knob.range` for a task and data
  (``None``: it does not apply there; a capacity knob reads the ladder's rung, ``SpaceContext.capacity``);
- ``opt_in``: a built-in knob tuned only where ``train.tune_knobs`` names it (``DEFAULT_KNOBS`` leaves
  it out);
- ``default``: its value in the first trial (the enqueued default configuration; ``None``: the
  un-tuned base value, for ``lr`` and ``epochs``), and ``neutral``: the value with no effect, which
  the knob ablation resets it to and which a run that does not tune it has;
- where the value goes: ``applies = "model"`` (a parameter of the network's builder), ``"optimizer"``
  (options of the optimizer's parameter groups, :meth:`Knob.optimizer_options`: ``lr``,
  ``weight_decay``) or ``"training"``; the value of an optimizer or training knob is kept in the run's
  :class:`~closedloop.stages.train.hparams.HParams` (its own field if it has one, else ``HParams.knobs``);
- and, for a training knob the engine has no parameter for, what it does: the hooks
  :meth:`Knob.targets` (soften the training targets) and :meth:`Knob.loss_term` (add to the training
  loss). The engine builds the optimizer from every optimizer knob's options
  (:func:`optimizer_options`) and calls every training knob's hooks whose value is not neutral
  (:func:`target_hooks`, :func:`loss_hooks`); it names no knob but one.

The one: ``epochs``, a training knob with an HParams field of that name that the engine reads as the
fit's length. It is not an effect applied to a step (which a hook could carry) but the shape of the
fit: the schedule is planned over it, the final fit re-plans it as it runs, the pruner's rungs, the
checkpoint and the run's records count it, and a data-parallel rank gets it with the rest of the
HParams. A second knob cannot share that role, so a hook for it would have exactly one user
(``tests/train/test_train_knob_battery.py`` checks the engine reads no other knob by name).

So adding a knob touches one file: this one for a built-in knob, or the user's own module, named in
``train.tune_knobs`` by its import path (``my_pkg.knobs:LogitPenalty``); docs/extending.md has a
runnable example. :func:`closedloop.stages.train.knob_checks.check_knob` is the battery every
registered knob passes (``tests/train/test_train_knob_battery.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from closedloop.core.errors import ConfigError
from closedloop.core.registry import Registry
from closedloop.models.registry import accepts_param, family_kind
from closedloop.stages.train.augment import AugmentParams
from closedloop.stages.train.hparams import HParams


class SpaceContext(BaseModel):
    """What decides a knob's range: the task, the data and the config."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lr: float
    """The un-tuned learning rate (after the LR range test, when it ran)."""
    max_epochs: int
    problem_type: str
    input_kind: str
    family: str
    tree_lr_min: float = 0.01
    """Tree families: the lowest learning rate searched (``train.tree_learning_rate_min``)."""
    capacity: dict[str, int | float | str] = {}
    """The capacity the ladder chose (the rung's builder params): a knob can search around it."""


Range = tuple[float, float]
OptimizerGroup = Literal["weights", "others"]
"""The optimizer's parameter groups: weight matrices and kernels (``ndim > 1``), and the rest."""

REGISTRY = Registry("tuned knob")
"""Name -> knob class; an import path ``module:Class`` imports (and so registers) a user's knob."""
KNOBS: list[Knob] = []
"""Every registered knob, one instance each, in the order of definition (the search order)."""


class Knob:
    """One tuned value (module docstring). Subclass it and set the class attributes; override
    :meth:`range`, and :meth:`targets` / :meth:`loss_term` for what a new training knob does."""

    name: ClassVar[str] = ""
    kind: ClassVar[Literal["float", "int"]] = "float"
    applies: ClassVar[Literal["model", "optimizer", "training"]] = "training"
    """model: a parameter of the network's builder; optimizer: options of the optimizer's parameter
    groups (:meth:`optimizer_options`); training: a value the engine reads from the run's HParams
    (its field) or applies through :meth:`targets` / :meth:`loss_term`. An optimizer or training
    knob's value is kept in the run's HParams."""
    default: ClassVar[float | None] = None
    """Value in the first trial (``None``: the un-tuned base value, or the ladder's rung for a
    capacity knob)."""
    neutral: ClassVar[float | None] = 0.0
    """No effect: what the knob ablation resets it to (``None``: the un-tuned base value, or the
    ladder's rung for a capacity knob)."""
    log: ClassVar[bool] = False
    opt_in: ClassVar[bool] = False
    """A built-in knob tuned only where ``train.tune_knobs`` names it (its rule was not met as a
    default: docs/trees_decisions.md says what was measured)."""

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        """Checks the declaration and registers the knob (``abstract=True``: a shared base, not a knob)."""
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        where = f"knob class {cls.__qualname__}"
        if not cls.name.isidentifier():
            raise TypeError(f"{where}: name {cls.name!r} must be a Python identifier")
        if cls.kind not in ("float", "int") or cls.applies not in ("model", "optimizer", "training"):
            raise TypeError(
                f"{where}: kind {cls.kind!r} / applies {cls.applies!r} not float|int / model|optimizer|training"
            )
        optimized = cls.optimizer_options is not Knob.optimizer_options
        if optimized != (cls.applies == "optimizer"):
            raise TypeError(
                f"{where}: an optimizer knob (applies = 'optimizer') overrides optimizer_options(value, group), "
                "and only an optimizer knob does"
            )
        if cls.range is Knob.range:
            raise TypeError(f"{where}: override range(context) (None where the knob does not apply)")
        hooked = cls.targets is not Knob.targets or cls.loss_term is not Knob.loss_term
        if cls.applies == "model" and hooked:
            raise TypeError(f"{where}: a model knob reaches the network's builder, not the engine's hooks")
        if cls.applies == "training" and not HParams.has_field(cls.name) and not hooked:
            raise TypeError(
                f"{where}: HParams has no field {cls.name!r}, so the engine would never read it; "
                "override targets() or loss_term() to say what it does"
            )
        if cls.applies != "model" and not HParams.has_field(cls.name) and cls.neutral is None:
            raise TypeError(f"{where}: a knob without an HParams field needs a neutral value (its absence)")
        REGISTRY.register(cls.name)(cls)
        KNOBS[:] = [k for k in KNOBS if k.name != cls.name] + [cls()]  # a re-definition replaces

    def range(self, c: SpaceContext) -> Range | None:
        """(low, high) for this task and data, or ``None`` when the knob does not apply."""
        raise NotImplementedError

    def cast(self, value: Any) -> Any:
        """Integers for int knobs; network params as plain floats (training values pass unchanged)."""
        return int(value) if self.kind == "int" else float(value) if self.applies == "model" else value

    def value(self, hp: HParams) -> Any:
        """This (optimizer or training) knob's value in ``hp``: its field, else ``hp.knobs``, else neutral."""
        if self.applies == "model":
            raise TypeError(f"knob {self.name!r} is a network parameter, not a value of HParams")
        if self.name in AugmentParams.model_fields:
            return getattr(hp.augment, self.name)
        if HParams.has_field(self.name):
            return getattr(hp, self.name)
        return hp.knobs.get(self.name, self.neutral)

    # -- the optimizer: asked at every value (neutral is the optimizer's own default) --------------
    def optimizer_options(self, value: Any, group: OptimizerGroup) -> dict[str, Any]:
        """An optimizer knob's options (``torch.optim.AdamW``'s keyword names) for one parameter group:
        ``"weights"`` (weight matrices and kernels) or ``"others"`` (biases, norms' scales)."""
        return {}

    # -- engine hooks: called only when the value is not neutral ---------------------------------
    def targets(self, value: Any, t: Any, classes: int) -> Any:
        """Training targets ``t`` ((N, K) float tensor; ``classes`` K for a softmax, 2 for each
        sigmoid output) -> the targets the loss is computed against. Default: unchanged."""
        return t

    def loss_term(self, value: Any, net: Any, logits: Any) -> Any:
        """A term added to each batch's training loss (``net`` the network, ``logits`` its outputs
        on the batch), or ``None``. Default: nothing."""
        return None


def _declared(hp: HParams) -> None:
    unknown = sorted(set(hp.knobs) - {k.name for k in KNOBS})
    if unknown:  # a value no class here declares would be ignored without a word: refuse it
        raise ConfigError(
            f"the training settings carry knob value(s) {unknown} that no registered Knob class "
            "declares in this process; import the module defining it (train.tune_knobs names it "
            "by import path, my_pkg.knobs:MyKnob)"
        )


def optimizer_options(hp: HParams, group: OptimizerGroup) -> dict[str, Any]:
    """The options of the optimizer's parameter ``group`` from every optimizer knob, at its value in
    ``hp`` (in registration order; the engine passes them to ``torch.optim.AdamW``)."""
    _declared(hp)
    out: dict[str, Any] = {}
    for k in KNOBS:
        if k.applies == "optimizer":
            out.update(k.optimizer_options(k.value(hp), group))
    return out


def _hooks(method: str) -> Callable[[HParams], list[tuple[Knob, Any]]]:
    def active(hp: HParams) -> list[tuple[Knob, Any]]:
        _declared(hp)
        out = []
        for k in KNOBS:
            if k.applies == "training" and getattr(type(k), method) is not getattr(Knob, method):
                v = k.value(hp)
                if v != k.neutral:
                    out.append((k, v))
        return out

    return active


target_hooks = _hooks("targets")
"""``hp`` -> the (knob, value) pairs whose :meth:`Knob.targets` the engine applies."""
loss_hooks = _hooks("loss_term")
"""``hp`` -> the (knob, value) pairs whose :meth:`Knob.loss_term` the engine adds."""


def knob(name: str, *, where: str = "train.tune_knobs") -> Knob:
    """The registered knob for a name or an import path (importing registers it)."""
    found = next((k for k in KNOBS if k.name == name), None)
    if found is not None:
        return found
    cls = REGISTRY.resolve(name, where=where)
    if not (isinstance(cls, type) and issubclass(cls, Knob)):
        raise ConfigError(f"{where}: {name!r} is not a Knob subclass (closedloop.stages.train.knobs.Knob)")
    return next(k for k in KNOBS if k.name == cls.name)


def _net_family(c: SpaceContext) -> bool:
    return family_kind(c.family) != "trees"


class _Trees(Knob, abstract=True):
    """A knob of tree families: LightGBM's parameter of the same name, a builder param; the first
    trial is LightGBM's default, neutral the unregularized builder default the ladder trains with."""

    applies = "model"
    bounds: ClassVar[Range] = (0.0, 1.0)

    def range(self, c: SpaceContext) -> Range | None:
        return None if _net_family(c) else self.bounds


# -- the built-in knobs, in search order ------------------------------------------------------------
class LR(Knob):
    """The optimizer's learning rate (the schedule's peak), for every parameter."""

    name, applies, log, default, neutral = "lr", "optimizer", True, None, None

    def range(self, c: SpaceContext) -> Range | None:
        return (c.lr / 10, c.lr * 3) if _net_family(c) else None

    def optimizer_options(self, value: Any, group: OptimizerGroup) -> dict[str, Any]:
        return {"lr": value}


class WeightDecay(Knob):
    """AdamW's decoupled weight decay, on the weight matrices and kernels only (a bias or a norm's
    scale pulled towards 0 only shifts or shrinks the layer)."""

    name, applies, log, default = "weight_decay", "optimizer", True, 1e-4

    def range(self, c: SpaceContext) -> Range | None:
        return (1e-5, 0.3) if _net_family(c) else None

    def optimizer_options(self, value: Any, group: OptimizerGroup) -> dict[str, Any]:
        return {"weight_decay": value if group == "weights" else 0.0}


class Dropout(Knob):
    name, applies, default = "dropout", "model", 0.1

    def range(self, c: SpaceContext) -> Range | None:
        # a custom family without a dropout parameter is not given one
        return (0.0, 0.5) if accepts_param(c.family, "dropout") else None


class L1(Knob):
    """An L1 penalty on the weight matrices and kernels (not biases or norms)."""

    name, log, default = "l1", True, 1e-8

    def range(self, c: SpaceContext) -> Range | None:
        return (1e-8, 1e-4) if _net_family(c) else None

    def loss_term(self, value: Any, net: Any, logits: Any) -> Any:
        return value * sum(p.abs().sum() for p in net.parameters() if p.ndim > 1)


class Epochs(Knob):
    name, kind, default, neutral = "epochs", "int", None, None

    def range(self, c: SpaceContext) -> Range | None:
        if c.max_epochs < 2:  # a one-epoch budget leaves nothing to tune about epochs
            return None
        return (min(c.max_epochs, max(2, c.max_epochs // 3)), c.max_epochs)


class Strength(Knob):
    """The augmentation's strength (every amplitude of ``train.augment`` is scaled by it)."""

    name, default = "strength", 0.5

    def range(self, c: SpaceContext) -> Range | None:
        return (0.0, 1.0) if c.input_kind == "images" else None


class LabelSmoothing(Knob):
    """Each target moves ``value`` of its mass to a uniform share over the classes."""

    name, default = "label_smoothing", 0.0

    def range(self, c: SpaceContext) -> Range | None:
        return (0.0, 0.2) if _net_family(c) and c.problem_type != "regression" else None

    def targets(self, value: Any, t: Any, classes: int) -> Any:
        return t * (1 - value) + value / classes


class Mixup(Knob):
    """Mixup's Beta(a, a) parameter (the augmentation mixes each batch with a permutation of itself)."""

    name, default = "mixup", 0.0

    def range(self, c: SpaceContext) -> Range | None:
        images_classes = c.problem_type != "regression" and c.input_kind == "images"
        return (0.0, 0.4) if images_classes else None


TREE_LR_MIN = 0.01
"""The tree learning rate's floor for every task but multi-label (``train.tree_learning_rate_min: auto``)."""
MULTILABEL_TREE_LR_MIN = 0.1
"""The floor for multi-label tasks (``auto``): a round grows one tree per label, so a trial at learning
rate ``lr`` grows ``K * 2 / lr`` trees an epoch. Chosen by the rule declared in docs/trees_decisions.md
("Session 14: where the multi-label trees' rounds go"), among 0.01, 0.03 and 0.1."""


def tree_lr_min(setting: float | str, problem_type: str) -> float:
    """The tree learning rate's floor for ``train.tree_learning_rate_min`` = ``setting`` on a task."""
    if setting != "auto":
        return float(setting)
    return MULTILABEL_TREE_LR_MIN if problem_type == "multilabel" else TREE_LR_MIN


class LearningRate(_Trees):
    name, log, default, neutral, bounds = "learning_rate", True, 0.1, 0.1, (0.01, 0.3)

    def range(self, c: SpaceContext) -> Range | None:
        return None if _net_family(c) else (c.tree_lr_min, self.bounds[1])


class MinChildSamples(_Trees):
    name, kind, default, neutral, bounds = "min_child_samples", "int", 20, 1, (2, 100)


class RegLambda(_Trees):
    name, log, default, neutral, bounds = "reg_lambda", True, 1e-3, 0.0, (1e-3, 30.0)


class RegAlpha(_Trees):
    name, log, default, neutral, bounds = "reg_alpha", True, 1e-3, 0.0, (1e-3, 10.0)


class FeatureFraction(_Trees):
    name, default, neutral, bounds = "feature_fraction", 1.0, 1.0, (0.4, 1.0)


class BaggingFraction(_Trees):
    name, default, neutral, bounds = "bagging_fraction", 1.0, 1.0, (0.5, 1.0)


class NumLeaves(_Trees):
    """Leaves per tree, searched around the capacity ladder's rung ``r``: ``[r/2, 2r]``, the leaves
    closer (on a log scale) to ``r`` than to the built-in ladder's neighbouring rungs ``r/4`` and
    ``4r``. The ladder picks ``r`` unregularized; with regularization the best size can move, and a
    step of 4x is too coarse to find it. The first trial and the ablation's neutral value are ``r``
    itself. Applies only where the rung sets ``num_leaves``. Opt-in: the rule declared for it as a
    default was not met (docs/trees_decisions.md, session 26); name it in ``train.tune_knobs``.

    >>> c = SpaceContext(lr=0.1, max_epochs=9, problem_type="binary", input_kind="table", family="lgbm",
    ...                  capacity={"num_leaves": 4})
    >>> NumLeaves().range(c)
    (2, 8)
    """

    name, kind, log, default, neutral, opt_in = "num_leaves", "int", True, None, None, True

    def range(self, c: SpaceContext) -> Range | None:
        rung = c.capacity.get(self.name)
        if _net_family(c) or not isinstance(rung, int) or rung < 2:
            return None
        return (max(2, rung // 2), rung * 2)


BY_NAME = {k.name: k for k in KNOBS}
ALL_KNOBS = tuple(BY_NAME)
"""The built-in knobs, the names ``train.tune_knobs`` accepts without an import path."""
DEFAULT_KNOBS = tuple(k.name for k in KNOBS if not k.opt_in)
"""``train.tune_knobs``' default: the built-in knobs but the opt-in ones; a user's knob is tuned where
it is named."""


class Dimension(BaseModel):
    """One knob's search range."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["float", "int"]
    low: int | float
    high: int | float
    log: bool = False

    def as_list(self) -> list[Any]:
        """The tune outcome's ``space`` entry: ``[kind, low, high, log]``."""
        return [self.kind, self.low, self.high, self.log]


Space = dict[str, Dimension]


def search_space(c: SpaceContext, allowed: list[str] | tuple[str, ...]) -> Space:
    """Knob -> range, for the knobs that apply to the task and data and that ``allowed`` names (by
    name or import path), in registration order."""
    names = {knob(a).name for a in allowed}
    out: Space = {}
    for k in KNOBS:
        rng = k.range(c) if k.name in names else None
        if rng is not None:
            lo, hi = rng
            out[k.name] = Dimension(kind=k.kind, low=lo, high=hi, log=k.log)
    return out


def suggest(trial: Any, space: Space) -> dict[str, Any]:
    """Ask an Optuna trial for every knob of ``space`` (in the space's order)."""
    out: dict[str, Any] = {}
    for name, d in space.items():
        if d.kind == "int":
            out[name] = trial.suggest_int(name, int(d.low), int(d.high))
        else:
            out[name] = trial.suggest_float(name, d.low, d.high, log=d.log)
    return out


def default_trial(
    space: Space,
    *,
    lr: float | None = None,
    max_epochs: int | None = None,
    capacity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The first trial: each knob's default; ``lr``/``max_epochs`` given: the base values too; a
    capacity knob (default ``None``) at the ladder's rung ``capacity``."""
    rung = {
        k.name: (capacity or {})[k.name] for k in KNOBS if k.default is None and k.name in (capacity or {})
    }
    base = {**rung, "lr": lr, "epochs": max_epochs}  # a rung's value never replaces a knob's own default
    fixed = {k.name: k.default for k in KNOBS if k.default is not None and k.name in space}
    return fixed | {k: v for k, v in base.items() if v is not None and k in space}


def neutral_values(lr: float, max_epochs: int, capacity: dict[str, Any] | None = None) -> dict[str, Any]:
    """Each knob's neutral value: no regularization (0), the un-tuned defaults for lr and epochs, the
    ladder's rung ``capacity`` for a capacity knob (left out where the rung does not set it)."""
    base = {**(capacity or {}), "lr": lr, "epochs": max_epochs}
    return {
        k.name: (k.neutral if k.neutral is not None else base[k.name])
        for k in KNOBS
        if k.neutral is not None or k.name in base
    }


def split_params(
    base_hp: HParams,
    model_params: dict[str, Any],
    knobs: dict[str, Any],
    *,
    patience: int | None,
    max_epochs: int,
) -> tuple[dict[str, Any], HParams]:
    """Knob values -> (network params, HParams): each knob goes where its class says (a training
    knob without a field of its own into ``HParams.knobs``)."""
    mp = dict(model_params)
    opt: dict[str, Any] = {"epochs": max_epochs}
    extra: dict[str, Any] = {}
    for name, value in knobs.items():
        k = knob(name)
        if k.applies == "model":
            mp[name] = k.cast(value)
        elif HParams.has_field(name):
            opt[name] = k.cast(value)
        else:
            extra[name] = k.cast(value)
    hp = base_hp.with_(patience=patience, **opt)
    return mp, (hp.with_(knobs={**hp.knobs, **extra}) if extra else hp)
