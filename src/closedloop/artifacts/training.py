"""What the train stage records about its phases: each phase's typed outcome, the family choice, tree
feature importance and the label review after training.

The phases hand these to each other (``work/phase_<name>.json`` for resume) and the train stage writes
them into its :class:`~closedloop.artifacts.evaluation.EvaluationReport`; readers of a finished run get
them back as these types (``report.outcome(FinalOutcome)``). Wall times never go in here (they live in
``ctx.timings``), so artifacts stay deterministic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from closedloop.artifacts.figures import Confusion, Figure, PerDay

if TYPE_CHECKING:
    import pandas as pd


class Outcome(BaseModel):
    """Base of every phase outcome."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class SanityOutcome(Outcome):
    phase: ClassVar[str] = "sanity"
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
    phase: ClassVar[str] = "beat_baseline"
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
    phase: ClassVar[str] = "scale_up"
    rungs: list[Rung]
    chosen: int
    """0-based index of the chosen rung."""
    params: dict[str, Any]
    any_overfits: bool

    @property
    def rung(self) -> Rung:
        return self.rungs[self.chosen]


class LrFinderOutcome(Outcome):
    phase: ClassVar[str] = "lr_finder"
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
    phase: ClassVar[str] = "tune"
    n_trials: int
    n_complete: int
    n_pruned: int
    prune_startup: int = 0
    """Trials that completed before the pruner could stop one (``train.prune_startup``)."""
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
    phase: ClassVar[str] = "cross_validate"
    tuned: TunedConfig
    """The configuration the final fit takes (the tune phase's when cross-validation is skipped)."""
    skipped: str | None = None
    protocol: str | None = None
    folds: int | None = None
    repeats: int | None = None
    candidates: list[CVRow] = []
    chosen: str | None = None


class FinalFit(Outcome):
    """How the deployed model was fitted and calibrated: what the final fit hands to the evaluation,
    and the first part of the final phase's record (one record, not a copy: see :class:`FinalOutcome`)."""

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
    selected_epochs: int | None = None
    """The epochs the chosen configuration was selected with (its best epoch)."""
    epochs_trained: float | None = None
    """Epochs the deployed network trained when the time budget cut its fit below
    ``selected_epochs`` (a part-epoch counted by its share); None when it was not cut."""
    deadline_extended_s: float | None = None
    """Seconds past the end of ``budget_minutes`` that the final phase's deadline was moved so that it
    keeps its own share, because the phases before it ran into that share (the stage overruns the
    budget by at most this); None when they did not."""


class FinalOutcome(FinalFit):
    """The final phase's record: the fit, then its figures on validation, the held-out rows and test."""

    phase: ClassVar[str] = "final"
    test: dict[str, Figure]
    val: dict[str, Figure]
    heldout: dict[str, Figure] | None
    test_ece: float | None = None
    per_day: PerDay | None = None
    """Binary tasks: per-day counts on test (``evaluated_on: test``); the report's first screen reads it."""
    test_confusion: Confusion | None = None
    """Single-label tasks: the deployed model's confusion matrix on test, at its deployed decisions."""


class FamilyRow(Outcome):
    """One family's candidate: its chosen configuration and the score the family choice compared."""

    family: str
    kind: str
    """``trees`` or ``network``."""
    score: float | None
    """The compared value of the task's primary metric (``evaluated_on``)."""
    val_metric: float | None
    """Its chosen configuration's validation score (hold-out)."""
    cv_mean: float | None
    """The mean out-of-fold score of its cross-validated choice (None when not cross-validated)."""
    n_configs: int
    """Configurations of this family scored on validation (ledger rows, cross-validation not counted)."""
    model_params: dict[str, Any]
    knobs: dict[str, Any]


class FamilyChoice(Outcome):
    """Which family won, on what data, and by how much."""

    metric: str
    evaluated_on: str
    """``out_of_fold`` (every family cross-validated on train+val) or ``validation`` (hold-out)."""
    rows: list[FamilyRow]
    chosen: str
    runner_up: str | None
    """None when the other families were dropped (``dropped``)."""
    dropped: dict[str, str] = {}
    """Families that failed before the choice (e.g. their sanity check), with the reason."""
    difference: float | None
    """Winner's compared score minus the runner-up's (None with one family left)."""
    paired_delta: float | None = None
    """The same difference, paired on one set of predictions: the validation predictions, or the
    repeat-averaged out-of-fold predictions (whose metric can differ from the mean over repeats)."""
    paired_ci95: list[float] | None = None
    """Paired bootstrap 95% interval of ``paired_delta`` (optimistic: the choice was made on these
    predictions)."""
    sentence: str


class FeatureImportance(BaseModel):
    """One column's importance (``evaluation.feature_importance.features``)."""

    feature: str
    gain: float
    """Share of the total split gain (0..1), on the final fit's training rows."""
    permutation: float | None = None
    """Primary-metric drop when the column is shuffled, on the held-out rows (higher: more important)."""
    permutation_ci95: list[float] | None = None


class ImportanceReport(BaseModel):
    features: list[FeatureImportance]
    """Sorted by permutation drop (gain when there is no permutation figure), largest first."""
    metric: str
    evaluated_on: dict[str, str]
    n_rows: int
    """Held-out rows the permutation figures were computed on (0: not computed)."""
    note: str


class LabelIssue(BaseModel):
    """One suspected label error."""

    model_config = ConfigDict(extra="forbid")
    split: str
    index: int
    """Row in its split."""
    given_label: int
    suggested_label: int
    score: float
    """1 - out-of-sample probability of the given label (higher: more suspicious)."""


class LabelIssueList(BaseModel):
    """Suspected label errors, most suspicious first, and what they were computed on."""

    model_config = ConfigDict(extra="forbid")
    issues: list[LabelIssue] = Field(default_factory=list)
    n_examined: int
    n_flagged: int
    estimated_noise_rate: float
    """1 - trace of cleanlab's estimated joint of given and true labels."""
    evaluated_on: str
    """Which predictions ranked the labels, e.g. ``out_of_fold`` or ``validation``."""
    source: str = ""
    """Which model produced them, in words."""
    note: str = ""
    """What was left out, and why."""
    file: str | None = None
    """Where the full list was saved (relative to the stage folder)."""

    def to_frame(self) -> pd.DataFrame:  # noqa: F821 (pandas imported lazily)
        """The list as the audit's ``label_issues.csv`` columns."""
        import pandas as pd  # only here: reading the record back needs no pandas

        return pd.DataFrame([i.model_dump() for i in self.issues], columns=list(LabelIssue.model_fields))

    def head(self, n: int) -> LabelIssueList:
        """The same list with only its ``n`` most suspicious issues (counts unchanged)."""
        return self.model_copy(update={"issues": self.issues[:n]})
