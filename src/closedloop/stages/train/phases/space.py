"""The tune phase's search space and knob split for one session (from :mod:`closedloop.stages.train.knobs`)."""

from __future__ import annotations

from typing import Any

from closedloop.stages.train import knobs as K
from closedloop.stages.train.engine import HParams
from closedloop.stages.train.session import TrainSession


def space_context(sess: TrainSession, model_params: dict[str, Any] | None = None) -> K.SpaceContext:
    """``model_params``: the ladder's rung (its builder params), which a capacity knob searches around."""
    capacity = {k: v for k, v in (model_params or {}).items() if isinstance(v, int | float | str)}
    return K.SpaceContext(
        lr=sess.base_hp.lr,
        max_epochs=sess.cfg.max_epochs or 1,
        problem_type=sess.task.problem_type,
        input_kind=sess.pre.input_kind,
        family=sess.family,
        tree_lr_min=K.tree_lr_min(sess.cfg.tree_learning_rate_min, sess.task.problem_type),
        capacity=capacity,
    )


def search_space(sess: TrainSession, model_params: dict[str, Any] | None = None) -> K.Space:
    """The knobs that apply to the session's task and data (and the ladder's rung ``model_params``)
    and that ``cfg.tune_knobs`` allows."""
    return K.search_space(space_context(sess, model_params), sess.cfg.tune_knobs)


def split_params(
    sess: TrainSession, model_params: dict[str, Any], knobs: dict[str, Any]
) -> tuple[dict[str, Any], HParams]:
    """Tuned knob values -> (network params, HParams)."""
    return K.split_params(
        sess.base_hp, model_params, knobs, patience=sess.cfg.patience, max_epochs=sess.cfg.max_epochs or 1
    )


def unregularized(sess: TrainSession, epochs: int) -> HParams:
    """The capacity ladder's setting: no augmentation, no weight decay, no early stopping."""
    return sess.base_hp.with_(epochs=epochs, strength=0.0, weight_decay=0.0, patience=None)
