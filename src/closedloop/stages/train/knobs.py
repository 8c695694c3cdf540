"""The tuned knobs, declared once: name, kind, search range, default (first trial), neutral value (the
ablation's reset) and where the value goes (the network's params or the optimizer's :class:`HParams`).

The search space, the first (default) trial, the ablation's neutral values and the split of a trial's
values into network params and hyperparameters are all derived from :data:`KNOBS`. Adding a knob = one
entry here (+ its use in the engine or the model family).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from closedloop.models.registry import accepts_param, family_kind
from closedloop.stages.train.engine import HParams


class SpaceContext(BaseModel):
    """What decides a knob's range: the task, the data and the config."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lr: float
    """The un-tuned learning rate (after the LR range test, when it ran)."""
    max_epochs: int
    problem_type: str
    input_kind: str
    family: str


Range = tuple[float, float]


@dataclass(frozen=True)
class Knob:
    """One tuned value. ``default``/``neutral`` ``None``: the un-tuned base value (``lr``, ``max_epochs``)."""

    name: str
    kind: Literal["float", "int"]
    applies: Literal["model", "optimizer"]
    """model: a parameter of the network's builder; optimizer: a field of :class:`HParams`."""
    range: Callable[[SpaceContext], Range | None]
    """(low, high) for this task and data, or ``None`` when the knob does not apply."""
    default: float | None
    """Value in the first trial (the enqueued default configuration)."""
    neutral: float | None
    """No effect: what the knob ablation resets it to."""
    log: bool = False

    def cast(self, value: Any) -> Any:
        """Integers for int knobs; network params as plain floats (optimizer values pass unchanged)."""
        return int(value) if self.kind == "int" else float(value) if self.applies == "model" else value


def _epochs(c: SpaceContext) -> Range | None:
    if c.max_epochs < 2:  # a one-epoch budget leaves nothing to tune about epochs
        return None
    return (min(c.max_epochs, max(2, c.max_epochs // 3)), c.max_epochs)


def _net(rng: Callable[[SpaceContext], Range | None]) -> Callable[[SpaceContext], Range | None]:
    """A knob of gradient-trained networks: no range for tree families."""
    return lambda c: None if family_kind(c.family) == "trees" else rng(c)


def _tree(rng: Range) -> Callable[[SpaceContext], Range | None]:
    """A knob of tree families (LightGBM's parameter of the same name, a builder param)."""
    return lambda c: rng if family_kind(c.family) == "trees" else None


# the order is the search space's (Optuna suggests in this order: changing it changes the trials)
KNOBS: tuple[Knob, ...] = (
    Knob("lr", "float", "optimizer", _net(lambda c: (c.lr / 10, c.lr * 3)), None, None, log=True),
    Knob("weight_decay", "float", "optimizer", _net(lambda c: (1e-5, 0.3)), 1e-4, 0.0, log=True),
    Knob(
        "dropout",
        "float",
        "model",
        # a custom family without a dropout parameter is not given one
        lambda c: (0.0, 0.5) if accepts_param(c.family, "dropout") else None,
        0.1,
        0.0,
    ),
    Knob("l1", "float", "optimizer", _net(lambda c: (1e-8, 1e-4)), 1e-8, 0.0, log=True),
    Knob("epochs", "int", "optimizer", _epochs, None, None),
    Knob(
        "strength",
        "float",
        "optimizer",
        lambda c: (0.0, 1.0) if c.input_kind == "images" else None,
        0.5,
        0.0,
    ),
    Knob(
        "label_smoothing",
        "float",
        "optimizer",
        _net(lambda c: (0.0, 0.2) if c.problem_type != "regression" else None),
        0.0,
        0.0,
    ),
    Knob(
        "mixup",
        "float",
        "optimizer",
        lambda c: (0.0, 0.4) if c.problem_type != "regression" and c.input_kind == "images" else None,
        0.0,
        0.0,
    ),
    # tree families (family_kind "trees"): the first trial is LightGBM's defaults; neutral = the
    # unregularized builder defaults the capacity ladder trains with
    Knob("learning_rate", "float", "model", _tree((0.01, 0.3)), 0.1, 0.1, log=True),
    Knob("min_child_samples", "int", "model", _tree((2, 100)), 20, 1),
    Knob("reg_lambda", "float", "model", _tree((1e-3, 30.0)), 1e-3, 0.0, log=True),
    Knob("reg_alpha", "float", "model", _tree((1e-3, 10.0)), 1e-3, 0.0, log=True),
    Knob("feature_fraction", "float", "model", _tree((0.4, 1.0)), 1.0, 1.0),
    Knob("bagging_fraction", "float", "model", _tree((0.5, 1.0)), 1.0, 1.0),
)
BY_NAME = {k.name: k for k in KNOBS}
ALL_KNOBS = [k.name for k in KNOBS]


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


def search_space(c: SpaceContext, allowed: list[str]) -> Space:
    """Knob -> range, for the knobs that apply to the task and data and that ``allowed`` names."""
    out: Space = {}
    for k in KNOBS:
        rng = k.range(c)
        if rng is not None and k.name in allowed:
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


def default_trial(space: Space, *, lr: float | None = None, max_epochs: int | None = None) -> dict[str, Any]:
    """The first trial: each knob's default; ``lr``/``max_epochs`` given: the base values too."""
    base = {"lr": lr, "epochs": max_epochs}
    fixed = {k.name: k.default for k in KNOBS if k.default is not None and k.name in space}
    return fixed | {k: v for k, v in base.items() if v is not None and k in space}


def neutral_values(lr: float, max_epochs: int) -> dict[str, Any]:
    """Each knob's neutral value: no regularization (0), the un-tuned defaults for lr and epochs."""
    base = {"lr": lr, "epochs": max_epochs}
    return {k.name: (k.neutral if k.neutral is not None else base[k.name]) for k in KNOBS}


def split_params(
    base_hp: HParams,
    model_params: dict[str, Any],
    knobs: dict[str, Any],
    *,
    patience: int | None,
    max_epochs: int,
) -> tuple[dict[str, Any], HParams]:
    """Knob values -> (network params, HParams): each knob goes where its registry entry says."""
    mp = dict(model_params)
    opt: dict[str, Any] = {"epochs": max_epochs}
    for name, value in knobs.items():
        k = BY_NAME[name]
        if k.applies == "model":
            mp[name] = k.cast(value)
        else:
            opt[name] = k.cast(value)
    return mp, base_hp.with_(patience=patience, **opt)
