"""The held-out split as a typed record: which validation rows the deployed model never trained on.

The train stage reserves them (:mod:`closedloop.stages.train.heldout`) and records the split in
``TrainedModel.info["heldout"]`` (the model's own file, so the split travels with the model); every
later reader gets it back as :class:`HeldOut` from ``TrainedModel.heldout`` and selects the rows with
:mod:`closedloop.models.heldout`, without importing the train stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

EvaluatedOn = Literal[
    "calibration", "validation", "out_of_fold", "validation_pre_refit", "trained_on", "test"
]

INFO_KEY = "heldout"


class HeldOut(BaseModel):
    """Which validation rows the deployed model never trained on (stored in ``model.info``)."""

    model_config = ConfigDict(extra="forbid")

    indices: list[int]
    """Rows of the validation split kept out of the final fit (sorted)."""
    n_val: int
    """Size of the validation split the indices refer to."""
    evaluated_on: EvaluatedOn
    """Label of figures computed on these rows: ``calibration`` (part of validation reserved),
    ``validation`` (all of it: final fit on train only) or ``trained_on`` (nothing reserved)."""
    note: str
    """How the split was made, including any fallback and why."""
    checksum: str
    """Hash of the held-out rows (inputs and labels): a later stage given other data fails loudly."""

    @classmethod
    def of(cls, info: Mapping[str, Any]) -> HeldOut | None:
        """The split a model's ``info`` records (None for a model trained outside the train stage)."""
        raw = info.get(INFO_KEY)
        return None if raw is None else cls.model_validate(raw)
