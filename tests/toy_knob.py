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


class AdamBeta2(Knob):
    """AdamW's second-moment decay, an optimizer option (``toy_knob:AdamBeta2``): one class, no other
    file; neutral is AdamW's own default, so a run that does not tune it is unchanged."""

    name, applies, default, neutral = "adam_beta2", "optimizer", 0.999, 0.999

    def range(self, c: SpaceContext) -> tuple[float, float] | None:
        return (0.9, 0.9999) if c.family != "lgbm" else None

    def optimizer_options(self, value: Any, group: str) -> dict[str, Any]:
        return {"betas": (0.9, value)}
