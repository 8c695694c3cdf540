"""A tuned knob of a user's own (named by import path ``toy_knob:LogitPenalty``): one class, no other file."""

from __future__ import annotations

from typing import Any

from closedloop.stages.train.knobs import Knob, SpaceContext


class LogitPenalty(Knob):
    """Penalize large logits (a confidence penalty): ``value * mean(logits ** 2)`` added to the loss."""

    name, log, default = "logit_penalty", True, 1e-3

    def range(self, c: SpaceContext) -> tuple[float, float] | None:
        return (1e-4, 1e-1) if c.problem_type != "regression" and c.family != "lgbm" else None

    def loss_term(self, value: Any, net: Any, logits: Any) -> Any:
        return value * logits.float().pow(2).mean()
