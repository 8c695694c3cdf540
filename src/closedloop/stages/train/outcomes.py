"""What each phase hands to the next (typed): the phases talk through these, not dict keys or file names.

Each outcome is saved as JSON in ``work/phase_<name>.json`` (resume) and in the evaluation artifact's
``phases``. Wall times never go in here (they live in ``ctx.timings``), so artifacts stay deterministic.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Outcome(BaseModel):
    """Base of every phase outcome."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class SanityOutcome(Outcome):
    ok: bool
    """The batch was fitted to the target (a run whose check failed stops; see ``cut_by_time``)."""
    losses: list[float]
    batch_size: int
    steps: int
    initial_loss: float | None
    final_loss: float | None
    target_loss: float | None
    cut_by_time: bool = False
    """The time budget ended the check before the target (inconclusive: ``ok`` is False, the run goes on)."""


class BaselineOutcome(Outcome):
    params: dict[str, Any]
    val_metric: float | None
    best_epoch: int
    history: list[dict[str, float]]
    comparison: dict[str, Any] | None
    """The paired comparison with the best baseline (``stats.paired.compare``), ``{"error"}``, or None."""


class Rung(Outcome):
    rung: int
    """1-based."""
    params: dict[str, Any]
    n_parameters: int
    val_metric: float | None
    score: float | None
    best_epoch: int
    overfits: bool
    val_loss_min_epoch: int | None
    val_loss_min: float | None = None
    val_loss_last: float | None = None
    train_loss_at_min: float | None = None
    train_loss_last: float | None = None


class ScaleUpOutcome(Outcome):
    rungs: list[Rung]
    chosen: int
    """0-based index of the chosen rung."""
    params: dict[str, Any]
    any_overfits: bool

    @property
    def rung(self) -> Rung:
        return self.rungs[self.chosen]


class LrFinderOutcome(Outcome):
    lr: float


class TunedConfig(Outcome):
    """One selectable configuration: what the final fit takes."""

    model_params: dict[str, Any]
    hparams: dict[str, Any]
    """:meth:`HParams.as_dict`."""
    knobs: dict[str, Any]
    best_epoch: int
    val_metric: float | None
    val_logits_file: str
    """Its validation logits, relative to ``work/`` (see :mod:`closedloop.stages.train.session`)."""
    calibration_logits_file: str | None = None
    """k-fold protocols: the cross-validation's out-of-fold logits that calibrate the final model."""
    calibration_labels_file: str | None = None


class TrialRow(Outcome):
    trial: int
    state: str
    value: float | None
    params: dict[str, Any]
    best_epoch: int | None


class KnobGain(Outcome):
    """What one knob bought: the chosen configuration vs the same with that knob reset to neutral."""

    knob: str
    chosen: Any
    neutral: Any
    metric: str
    importance: float | None
    delta: float | None = None
    ci95: list[float] | None = None
    best_epoch: int
    stopped: str
    value_chosen: float | None = None
    value_ablated: float | None = None
    p_one_sided: float | None = None
    higher_is_better: bool | None = None
    error: str | None = None


class Skipped(Outcome):
    knob: str
    reason: str


class TuneOutcome(TunedConfig):
    n_trials: int
    n_complete: int
    n_pruned: int
    n_failed: int
    failures: list[dict[str, Any]]
    importance: dict[str, float]
    gain_vs_unregularized: dict[str, Any] | None
    knob_gains: dict[str, KnobGain]
    knob_gains_skipped: list[Skipped]
    trials: list[TrialRow]
    best_trial_number: int
    space: dict[str, list[Any]]

    def config(self) -> TunedConfig:
        return TunedConfig.model_validate(self.model_dump(include=set(TunedConfig.model_fields)))


class CVRow(Outcome):
    candidate: str
    knobs: dict[str, Any]
    epochs: int
    holdout: float | None
    cv_mean: float
    cv_sd_over_repeats: float | None
    cv_per_repeat: list[float]


class CrossValidateOutcome(Outcome):
    tuned: TunedConfig
    """The configuration the final fit takes (the tune phase's when cross-validation is skipped)."""
    skipped: str | None = None
    protocol: str | None = None
    folds: int | None = None
    repeats: int | None = None
    candidates: list[CVRow] = []
    chosen: str | None = None


class FinalOutcome(Outcome):
    epochs: int
    fitted_on: str
    n_heldout: int
    ranks: int = 1
    """Data-parallel ranks of the final fit (``train.final.nproc``)."""
    calibration: str
    temperature: float
    threshold: float | None
    threshold_rule: str
    evaluated_on: dict[str, str]
    test: dict[str, Any]
    val: dict[str, Any]
    heldout: dict[str, Any] | None
    test_ece: float | None = None
    per_day: dict[str, Any] | None = None
    """Binary tasks: per-day counts on test (``evaluated_on: test``); the report's first screen reads it."""
