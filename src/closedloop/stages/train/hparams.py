"""The settings of one training run (:class:`HParams`): what the engine reads, and the values of tuned
knobs that have no field of their own (``knobs``, read by each knob's hooks, :mod:`.knobs`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from closedloop.stages.train.augment import AugmentParams


@dataclass(frozen=True)
class HParams:
    """Optimization and regularization knobs of one training run."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.0
    l1: float = 0.0
    """The l1 knob's value; its penalty is the knob's own hook (``knobs.L1.loss_term``)."""
    label_smoothing: float = 0.0
    """The label-smoothing knob's value; the knob's hook softens the targets (``knobs.LabelSmoothing``)."""
    schedule: str = "onecycle"
    """onecycle | cosine | constant."""
    warmup: float = 0.2
    """Share of steps spent warming up (onecycle / cosine)."""
    grad_clip: float | None = 5.0
    class_weight: str = "none"
    """none | balanced | sqrt: per-sample loss weights from train class frequencies."""
    sampler: str = "shuffle"
    """shuffle | balanced (draw classes equally often; resampling instead of weighting)."""
    patience: int | None = None
    """Early stopping: epochs without improvement of the validation metric (None: never stop early)."""
    ordinal_loss: str = "sord"
    """ordinal tasks: ce | sord (soft ordinal labels, neighbours share probability mass)."""
    augment: AugmentParams = field(default_factory=AugmentParams)
    knobs: dict[str, float] = field(default_factory=dict)
    """Values of tuned knobs declared without a field here (a knob class alone, :mod:`.knobs`); a knob
    missing from it is at its neutral value (no effect)."""

    def with_(self, **kw: Any) -> HParams:
        aug_keys = {k: kw.pop(k) for k in list(kw) if k in AugmentParams.model_fields}
        out = replace(self, **kw)
        if aug_keys:
            out = replace(out, augment=out.augment.model_copy(update=aug_keys))
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (artifacts, ledgers); ``knobs`` only when it holds a value, so a run without
        such a knob writes the same record as before the field existed."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "knobs"}
        out = {**d, "augment": self.augment.model_dump()}
        return {**out, "knobs": dict(self.knobs)} if self.knobs else out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HParams:
        d = dict(d)
        aug = AugmentParams(**d.pop("augment", {}))
        return cls(**d, augment=aug)

    @staticmethod
    def has_field(name: str) -> bool:
        """Whether ``name`` is a field of its own (here or in the augmentation settings)."""
        return name != "knobs" and (name in _FIELDS or name in AugmentParams.model_fields)


_FIELDS = {f.name for f in fields(HParams)}
