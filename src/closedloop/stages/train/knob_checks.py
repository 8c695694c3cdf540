"""The battery every tuned knob passes (the knobs' ``check_estimator``): :func:`check_knob`.

It checks what the search, the ablation and the engine rely on, on a grid of tasks and data:

1. **ranges**: where the knob applies, ``low <= high`` (positive on a log scale, whole numbers for an
   int knob) and the first trial's ``default`` lies inside; it applies to at least one task;
2. **placement**: :func:`~closedloop.stages.train.knobs.split_params` puts the value where the class
   says (the network's params, or the HParams the engine gets) and the value survives the JSON record
   of the run's hyperparameters (``HParams.as_dict`` / ``from_dict``);
3. **effect**, a training knob on a tiny network fit with the real engine: at its neutral value the
   fit is bit-identical to a fit without the knob (neutral means no effect, which the ablation and every
   run that does not tune it rely on), and at the top of its range the weights differ (the engine reads
   it); a model knob: the family's builder takes the value.

Each failure is an ``AssertionError`` naming the knob and what failed. Run it on your own knob:
``check_knob("my_pkg.knobs:LogitPenalty")`` (docs/extending.md).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from typing import Any

import numpy as np

from closedloop.stages.train import knobs as K
from closedloop.stages.train.hparams import HParams

FAMILIES = ("mlp", "small_cnn", "lgbm")
RUNGS = {"mlp": {"width": 128, "depth": 2}, "small_cnn": {"width": 16}, "lgbm": {"num_leaves": 16}}
"""A capacity rung per family (what the ladder chose), for knobs searched around it."""
CONTEXTS = tuple(
    K.SpaceContext(lr=3e-3, max_epochs=9, problem_type=p, input_kind=i, family=f, capacity=RUNGS.get(f, {}))
    for f, p, i in itertools.product(FAMILIES, ("binary", "multiclass", "regression"), ("table", "images"))
)
"""The tasks and data the battery asks each knob's range about."""


def check_knob(name: str | K.Knob) -> list[str]:
    """Run the battery on a registered knob (name or import path); returns what it checked, one line
    per part. Raises ``AssertionError`` naming the knob and the failed check."""
    knob = K.knob(name) if isinstance(name, str) else name
    done = [_check_ranges(knob), _check_placement(knob)]
    done.append(_check_builder(knob) if knob.applies == "model" else _check_effect(knob))
    return done


def _applies(knob: K.Knob) -> list[tuple[K.SpaceContext, K.Range]]:
    return [(c, r) for c in CONTEXTS if (r := knob.range(c)) is not None]


def _check_ranges(knob: K.Knob) -> str:
    where = _applies(knob)
    assert where, f"knob {knob.name!r}: its range is None for every task and data of the battery"
    for c, (lo, hi) in where:
        said = f"knob {knob.name!r} on {c.family}/{c.problem_type}/{c.input_kind}: range ({lo}, {hi})"
        assert math.isfinite(lo) and math.isfinite(hi) and lo <= hi, f"{said} is not low <= high"
        assert not knob.log or lo > 0, f"{said} is on a log scale, so its low end must be > 0"
        if knob.kind == "int":
            assert float(lo).is_integer() and float(hi).is_integer(), f"{said}: an int knob needs whole ends"
        if knob.default is not None:
            assert lo <= knob.default <= hi, f"{said} does not hold the first trial's default {knob.default}"
    return f"{knob.name}: range on {len(where)} of {len(CONTEXTS)} tasks/data, default inside"


def _trial_value(knob: K.Knob) -> Any:
    _, (lo, hi) = _applies(knob)[0]
    return knob.default if knob.default is not None else hi


def _check_placement(knob: K.Knob) -> str:
    value = knob.cast(_trial_value(knob))
    mp, hp = K.split_params(HParams(), {"width": 4}, {knob.name: value}, patience=None, max_epochs=9)
    if knob.applies == "model":
        assert mp == {"width": 4, knob.name: value}, f"knob {knob.name!r}: network params {mp}"
        return f"{knob.name}: reaches the network's params"
    assert mp == {"width": 4}, f"knob {knob.name!r}: a training knob leaked into the network's params {mp}"
    assert knob.value(hp) == value, f"knob {knob.name!r}: HParams holds {knob.value(hp)!r}, not {value!r}"
    back = HParams.from_dict(json.loads(json.dumps(hp.as_dict())))
    assert knob.value(back) == value, (
        f"knob {knob.name!r}: the run's hyperparameter record loses it ({knob.value(back)!r} after JSON)"
    )
    return f"{knob.name}: reaches HParams and its JSON record"


def _check_builder(knob: K.Knob) -> str:
    from closedloop.models.registry import build_network
    from closedloop.models.trained import ModelSpec

    families = sorted({c.family for c, _ in _applies(knob)})
    for family in families:
        shape = [8, 8, 1] if family == "small_cnn" else [5]
        try:
            build_network(
                ModelSpec(family=family, params={knob.name: knob.cast(_trial_value(knob))}), shape, 1
            )
        except TypeError as exc:
            raise AssertionError(f"knob {knob.name!r}: the {family} builder refuses it ({exc})") from None
    return f"{knob.name}: the builders of {', '.join(families)} take it"


def _check_effect(knob: K.Knob) -> str:
    nets = [(c, r) for c, r in _applies(knob) if c.family != "lgbm" and c.problem_type == "binary"]
    assert nets, f"knob {knob.name!r}: a training knob that applies to no binary network task"
    c, (lo, hi) = nets[0]
    base = HParams(epochs=2, batch_size=16)
    plain = _fit_digest(c.input_kind, base)
    if knob.neutral is not None:
        _, at_neutral = K.split_params(base, {}, {knob.name: knob.neutral}, patience=None, max_epochs=2)
        assert _fit_digest(c.input_kind, at_neutral) == plain, (
            f"knob {knob.name!r}: at its neutral value {knob.neutral} the fit differs from a fit without it"
        )
    top = hi if hi != knob.neutral else lo
    _, at_top = K.split_params(base, {}, {knob.name: knob.cast(top)}, patience=None, max_epochs=2)
    assert _fit_digest(c.input_kind, at_top) != plain, (
        f"knob {knob.name!r}: at {top} ({c.input_kind}) the fit is the same as without it: the engine never reads it"
    )
    return f"{knob.name}: neutral {knob.neutral} leaves a {c.input_kind} fit bit-identical, {top} changes it"


def _fit_digest(input_kind: str, hp: HParams) -> str:
    """sha256 of a tiny network's weights after a seeded fit with ``hp`` (binary task)."""
    import torch

    from closedloop.stages.train.engine import Engine, TensorSet

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(48, 1))
    images = input_kind == "images"
    if images:
        x = torch.from_numpy(rng.integers(0, 256, size=(48, 1, 8, 8), dtype=np.uint8))
    else:
        x = torch.from_numpy(rng.normal(size=(48, 5)).astype(np.float32))
    data = TensorSet(x, torch.from_numpy(y.astype(np.float32)), y)
    with torch.random.fork_rng(devices=[]):  # the same initial weights for every fit
        torch.manual_seed(0)
        if images:
            layers = [torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 1)]
        else:
            layers = [torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)]
        net = torch.nn.Sequential(*layers)
    Engine("binary", 1, mean=[0.5], std=[0.25], metric="loss").fit(net, data, None, hp, seed=0)
    return hashlib.sha256(
        b"".join(v.detach().numpy().tobytes() for v in net.state_dict().values())
    ).hexdigest()
