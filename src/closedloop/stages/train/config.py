"""The ``train`` stage's config: presets, default capacity ladders, and every option with its meaning."""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from closedloop.core.config import StageConfig
from closedloop.core.errors import ConfigError
from closedloop.models.registry import MODELS
from closedloop.stages.train.augment import AugmentSettings
from closedloop.stages.train.knobs import ALL_KNOBS, DEFAULT_KNOBS, knob

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "budget_minutes": 2.0,
        "baseline_epochs": 3,
        "ladder_epochs": 5,
        "n_trials": 4,
        "max_epochs": 8,
        "patience": 3,
        "sanity_steps": 100,
        "ablate_knobs": 0,
        "cv_candidates": 0,
        "ladder_size": 2,
        "tree_ladder_size": 3,
    },
    "default": {
        "budget_minutes": 10.0,
        "baseline_epochs": 6,
        "ladder_epochs": 8,
        "n_trials": 10,
        "max_epochs": 20,
        "patience": 5,
        "sanity_steps": 150,
        "ablate_knobs": 2,
        "cv_candidates": 3,
        "ladder_size": 3,
        "tree_ladder_size": 3,
    },
    "thorough": {
        "budget_minutes": 30.0,
        "baseline_epochs": 10,
        "ladder_epochs": 20,
        "n_trials": 30,
        "max_epochs": 40,
        "patience": 8,
        "sanity_steps": 300,
        "ablate_knobs": 4,
        "cv_candidates": 5,
        "ladder_size": 4,
        "tree_ladder_size": 4,
    },
}


class FinalSettings(BaseModel):
    """How the final fit runs (not what it computes): ``train: {final: {nproc: 2}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    nproc: int = Field(1, ge=1)
    """Data-parallel ranks the stage launches for the final fit and each ensemble member
    (torch.distributed: gloo on CPU, NCCL on CUDA with one GPU per rank; the per-rank batch is the
    batch divided by nproc, so the global batch and the schedule are the one-process fit's). See
    docs/scaling.md."""
    start: Literal["auto", "fork", "spawn"] = "auto"
    """How the ranks' processes start: fork (inherits the session; Linux CPU), spawn (fresh
    interpreters sent the same objects; needed on CUDA and off Linux), auto (spawn on CUDA or off
    Linux, fork otherwise)."""


class TrainConfig(StageConfig):
    """Overfit-then-regularize training. Fields left unset (or ``null``) take the preset's value when
    the config is validated, so the saved ``config.yaml`` records the numbers a run used."""

    preset: Literal["quick", "default", "thorough"] = "default"
    """quick (~2 min), default (~10 min) or thorough (~30 min) on a small CPU."""
    budget_minutes: float | None = Field(None, gt=0)
    """Wall-clock budget for all five phases, split 3/10/27/40/20% (unused time rolls over)."""
    family: str | list[str] | None = None
    """Model family (small_cnn, resnet18, resnet50, mlp, lgbm: gradient-boosted trees for tables) or an
    import path; default small_cnn for images, mlp for tables. A list (e.g. ``[lgbm, mlp]``) is a family
    choice inside the run: each family goes through sanity, baseline, ladder, tuning and cross-validation
    on the same splits, the family is chosen on validation like any other candidate (every configuration
    of every family counts in the validation ledger and the selection bias), and only the chosen one is
    fitted finally and opens the test split (:mod:`closedloop.stages.train.families`)."""
    model_params: dict[str, Any] = Field(default_factory=dict)
    """Fixed parameters of the family (e.g. {depth: 3, pretrained: false}); ladder rungs are merged over
    them (one family only)."""
    ladder: list[dict[str, Any]] | dict[str, list[dict[str, Any]]] | None = None
    """Capacity rungs (family params), smallest first; default by family and preset. With a family list:
    a mapping family -> rungs (families not named keep their default ladder)."""
    tree_ladder_size: int | None = Field(None, ge=1)
    """Tree families: how many rungs of the family's registered ladder (lgbm: 4, 16, 64, 256 leaves) the
    capacity ladder may climb when no ``ladder`` is given (networks climb the preset's own count: quick 2,
    default 3, thorough 4). Preset: quick 3 (2 before session 16: the 64-leaf rung was adopted by the rule
    declared in docs/trees_decisions.md "Session 16"), default 3, thorough 4. The ladder still stops at a rung
    that overfits, and no rung starts past the scale-up phase's deadline."""
    batch_size: int = Field(128, ge=1)
    min_steps_per_epoch: int = Field(16, ge=0)
    """Small data: halve the batch size (not below 8) until an epoch has at least this many steps (0: off)."""
    lr: float = Field(3e-3, gt=0)
    """Peak learning rate before tuning (the search spans lr/10 .. 3*lr)."""
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    grad_clip: float | None = Field(5.0, gt=0)
    class_weight: Literal["none", "balanced", "sqrt"] = "none"
    """Loss weights from train class frequencies (imbalance)."""
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    """balanced: resample classes equally often instead of weighting."""
    ordinal_loss: Literal["ce", "sord"] = "sord"
    """Ordinal tasks: plain cross-entropy or soft ordinal labels."""
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
    sanity_batch: int = Field(32, ge=2)
    sanity_steps: int | None = Field(None, ge=1)
    sanity_lr: float = Field(3e-3, gt=0)
    sanity_extend: int = Field(4, ge=1)
    """A one-batch check that ends above its target but falling fast enough to reach it within this many
    times its steps (at the rate of its last quarter of steps) is run again from the start with that many
    steps before it fails: a slow learner is not one that cannot learn (nwtco's MLP reached the target at
    step 128 of the quick preset's 100, session 24). 1: off, fail at ``sanity_steps``."""
    baseline_epochs: int | None = Field(None, ge=1)
    ladder_epochs: int | None = Field(None, ge=2)
    n_trials: int | None = Field(None, ge=1)
    max_epochs: int | None = Field(None, ge=1)
    """Upper bound of the tuned number of epochs."""
    patience: int | None = Field(None, ge=1)
    """Early stopping patience (epochs) in tuning trials."""
    prune_startup: int | Literal["startup", "all"] | None = None
    """How many tuning trials must complete before the successive-halving pruner may stop one (its rung
    records are kept from the first trial, so later trials still compete with these): a number;
    ``startup``, the sampler's random start-up trials (a third of ``n_trials``, 2-5); ``all``, every
    trial (no pruning); None (the default), 0: prune from the first trial. On the tables'
    development re-splits, for trees, ``startup`` changed the hold-out AUC by -0.0019 to +0.0032 (0 on
    average) and ``all`` by -0.0028 to +0.0023 (+0.0002) at 2.5x the time, so neither is the default
    (docs/trees_decisions.md, "A pruner that lets the start-up trials finish (session 25)" and the
    section after it)."""
    cv_candidates: int | None = Field(None, ge=0)
    """Small data (the task's validation protocol is kfold / repeated_kfold): how many of the best
    configurations on the hold-out split (plus the unregularized rung) are re-ranked by cross-validation
    on train+val; the winner's out-of-fold predictions calibrate the final model (preset: quick 0,
    default 3, thorough 5; 0: off)."""
    tree_cv_rows: int = Field(0, ge=0)
    """Tree families on a table of at most this many train+val rows re-rank their ``cv_candidates`` by
    cross-validation on train+val (the task's folds) whatever the task's protocol: a tree fit takes
    well under a second at this size, while a hold-out split of a few hundred rows is a noisy judge.
    Each candidate's round count is chosen on the pooled out-of-fold metric after each epoch (as
    ``lgb.cv`` does) and the final fit takes it. Calibration still uses the held-out split when there
    is one. Default 0 (off: trees follow the task's protocol like networks): on MedExp it did not
    measurably close the gap to a tuned LightGBM and it made the tree selection 2-3x slower
    (docs/results/tables.txt); e.g. 20000 turns it on for tables up to 20,000 rows."""
    tree_extend: int = Field(8, ge=1)
    """Tree families: a fit with early stopping (tuning trials, cross-validation folds) that is still
    improving on validation at its last planned epoch boosts on, one epoch at a time under the same
    ``patience``, up to this many times its planned epochs (or the phase's deadline); the final fit
    then trains the epochs it reached. 1: off (the planned epochs are a cap, as before session 14).
    ``max_epochs`` is sized for networks, whose epoch is a pass over the data; a tree epoch is a fixed
    amount of boosting, and on diamonds (quick preset, ``max_epochs`` 8) the trees were cut while still
    improving (docs/trees_decisions.md "diamonds: what the gap was made of"). Default 8 since session 15 (4
    before): on synthetic_50k's development hold-out the chosen trial reached 4x and 8 scored higher,
    by the rule declared in docs/trees_decisions.md "Session 15". Multi-label tree fits keep their plan."""
    ablate_knobs: int | None = Field(None, ge=0)
    """How many knobs to ablate after tuning (preset: quick 0, default 2, thorough 4): the most important
    ones (fANOVA) are each reset to neutral (0; lr and epochs: the un-tuned defaults) and the chosen
    configuration retrained on train; the validation difference gets a paired bootstrap 95% CI. Each
    fit counts toward the tune phase's time budget and the validation ledger (0: off)."""
    tune_knobs: list[str] = Field(default_factory=lambda: list(DEFAULT_KNOBS))
    """Knobs the search may change (networks: lr, weight_decay, dropout, l1, strength, label_smoothing, mixup,
    epochs; tree families: learning_rate, min_child_samples, reg_lambda, reg_alpha, feature_fraction,
    bagging_fraction, epochs; a knob of your own by import path, ``my_pkg.knobs:MyKnob``, see
    docs/extending.md); each applies only where it means something. Opt-in, tuned only where named:
    ``num_leaves`` (trees: the leaves per tree around the capacity ladder's rung)."""
    lr_finder: bool = False
    """Run an LR range test before tuning and centre the LR search on its suggestion."""
    storage: str | None = None
    """The tuning study's storage, which ``closedloop worker`` processes can join: an RDB URL shared by
    several machines, e.g. postgresql://user:pw@host:5432/db, or a journal file path ending in
    ``.journal`` (default: Optuna's journal file ``study.journal`` in the stage's work folder; SQLite is
    refused with several workers). See docs/scaling.md."""
    workers: int = Field(1, ge=1, validate_default=True)
    """Tuning trials run in this many worker processes sharing one Optuna study (one torch thread each;
    ``closedloop run --workers N``). At most ``n_trials``."""
    study_name: str | None = None
    heartbeat_seconds: int = Field(10, ge=1)
    """RDB storage: a running trial records a heartbeat this often; one silent for three times this
    (its process or machine died) is failed and queued again with the same parameters."""
    final_fit: Literal["train+val", "train"] = "train+val"
    holdout_fraction: float = Field(0.5, ge=0, lt=1)
    """Share of the validation split kept out of a train+val final fit (stratified): the deployed
    model's predictions on it fit the temperature and threshold and feed the export gate, the model
    card and the monitor's reference, so no figure after the fit comes from trained-on data (0: keep
    nothing out; later figures are then labelled ``trained_on``). See docs/training.md."""
    min_holdout: int = Field(30, ge=2)
    """Fewest held-out samples: a smaller share is raised to this; a validation split of this size or
    less is held out whole (the final fit then uses train only). The report says which happened."""
    final_seeds: int = Field(1, ge=1)
    """More than 1: an ensemble of seeds (logits averaged)."""
    final: FinalSettings = Field(default_factory=FinalSettings)
    """The final fit's launch: ``nproc`` data-parallel ranks (1: one process) and how they start."""
    threshold: Literal["cost", "youden", "fixed"] = "cost"
    """Binary operating threshold, fitted with the temperature (held-out or out-of-fold predictions): task
    costs, Youden's J (prevalence-free) or 0.5."""
    calibration: Literal["temperature", "bias+temperature"] = "temperature"
    """Fitted on the deployed model's held-out predictions (k-fold protocols: out-of-fold): the temperature alone, or a temperature and one offset per logit
    (bias-corrected; undoes the prior shift of class weighting; folded into the head bias)."""
    gate: Literal["warn", "fail"] = "warn"
    """fail: the stage fails (after writing the evaluation) when the model does not beat the baseline."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    figures: Literal["auto", "background", "inline"] = "auto"
    """Where the stage draws its figures: ``background``, a helper process that draws while the stage
    trains (the stage still waits for every figure before it ends); ``inline``, in the stage's own
    process between phases; ``auto``, inline (see :meth:`figures_in_background`). See
    :mod:`closedloop.stages.train.figure_worker`."""
    threads: int | None = Field(None, ge=1)
    """torch CPU threads (default: torch's choice); tree families: LightGBM threads (default 1)."""
    label_threads: int | None = Field(None, ge=1)
    """Multi-label tasks, tree families: None (default), one LightGBM booster that grows a tree per label
    each round; a number N, one booster per label, N of them growing at once on Python threads (each
    with ``threads`` OpenMP threads). The model does not depend on N; it is the default's bit for bit
    when ``feature_fraction`` is 1, and differs in LightGBM's column-sampling draws otherwise. No effect
    on other tasks or families (the decision log says so). See docs/training.md "Multi-label trees"."""
    tree_learning_rate_min: float | Literal["auto"] = "auto"
    """Tree families: the lowest ``learning_rate`` the tune phase searches (the range's top stays 0.3).
    A trial's boosting rounds per epoch are 2 / learning rate, so the floor bounds what a slow trial
    costs. ``auto``: 0.01 for every task except multi-label, whose rounds grow one tree per label
    (:data:`~closedloop.stages.train.knobs.MULTILABEL_TREE_LR_MIN`, chosen by the rule declared in
    docs/trees_decisions.md "Session 14"); a number (0 < x <= 0.1, the first trial's 0.1 stays in range) for
    every tree task. Recorded in the decision log when it is not 0.01, and in the tune phase's space."""
    n_bootstrap: int = Field(1000, ge=100)

    @field_validator("prune_startup")
    @classmethod
    def _prune_startup_count(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and v < 0:
            raise ValueError(
                f"train.prune_startup: {v} is negative; give a count of trials (0: prune from the first), "
                "'startup' or 'all'"
            )
        return v

    @field_validator("tree_learning_rate_min")
    @classmethod
    def _tree_lr_min_in_range(cls, v: float | str) -> float | str:
        if v != "auto" and not 0 < float(v) <= 0.1:
            raise ValueError(
                f"train.tree_learning_rate_min: {v} is outside (0, 0.1]: the tune phase's first trial "
                "keeps LightGBM's learning rate 0.1 ('auto' picks the floor by task)"
            )
        return v

    def figures_in_background(self, kinds: list[str] | None = None) -> bool:
        """Whether the figures go to a helper process (``figures``). ``auto`` is inline for every family
        (``kinds``, the families' kinds, is kept for callers): the helper is a fresh interpreter, and
        the stage waits for it at its end. It imported the training package before its first figure,
        4-5 s on the shared 2-core machine (session 11); it imports matplotlib only since session 13, and
        at load 11 it still slowed the stage, drawing on the core the fits ran on
        (docs/results/tree_speed_figures_background.txt: trees alone 4.04 s inline, 5.95 s background). A tree-only train stage on a 4,000-row table took 5.1-5.6 s
        with the helper against 1.5 s inline, and 9.2-12.4 s against 9.2-13.6 s on the 50,000-row table
        (session 11, docs/results/tree_speed.txt); beside a network's torch threads the helper slowed
        the MLP (session 10). ``background`` stays for a stage long enough to repay the helper."""
        del kinds
        return self.figures == "background"

    @model_validator(mode="before")
    @classmethod
    def _fill_preset(cls, data: Any) -> Any:
        """Unset preset-controlled fields -> the preset's values (an unknown preset is left to the
        field's own check, which names the allowed ones)."""
        if not isinstance(data, dict):
            return data
        name = data.get("preset", "default")
        preset = PRESETS.get(name) if isinstance(name, str) else None
        if preset is None:
            return data
        filled = {k: v for k, v in preset.items() if k in cls.model_fields and data.get(k) is None}
        return {**data, **filled}

    @field_validator("tune_knobs")
    @classmethod
    def _check_knobs(cls, knobs: list[str]) -> list[str]:
        """Unknown knob names fail at ``closedloop validate`` with the allowed ones; an import path
        (``my_pkg.knobs:MyKnob``) must name a :class:`~closedloop.stages.train.knobs.Knob` class."""
        for k in knobs:
            if ":" in k:
                try:
                    knob(k)
                except ConfigError as exc:
                    raise ValueError(str(exc)) from None
        unknown = [k for k in knobs if k not in ALL_KNOBS and ":" not in k]
        if unknown:
            hints = {k: difflib.get_close_matches(k, ALL_KNOBS, n=1) for k in unknown}
            said = "; ".join(f"{k!r} (did you mean {h[0]!r}?)" if h else repr(k) for k, h in hints.items())
            raise ValueError(f"unknown knob(s) {said}; allowed: {', '.join(ALL_KNOBS)}")
        return knobs

    @field_validator("family")
    @classmethod
    def _check_family(cls, family: str | list[str] | None) -> str | list[str] | None:
        """Every family resolves (registered key or import path: a typo fails at ``closedloop validate``,
        not after the audit); a family list: non-empty, no repeats; a one-element list is that family."""
        for name in family if isinstance(family, list) else [family] if family is not None else []:
            try:
                MODELS.resolve(name, where="family")
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        if not isinstance(family, list):
            return family
        if not family:
            raise ValueError("family: an empty list; name one family or several, e.g. [lgbm, mlp]")
        repeated = sorted({f for f in family if family.count(f) > 1})
        if repeated:
            raise ValueError(f"family: {repeated} listed more than once in {family}")
        return family[0] if len(family) == 1 else family

    @model_validator(mode="after")
    def _check_family_list(self) -> TrainConfig:
        """What a single family's settings mean with a family list: refused where ambiguous."""
        fams = self.family if isinstance(self.family, list) else None
        if fams is None:
            if isinstance(self.ladder, dict):
                raise ValueError(
                    "ladder: a mapping family -> rungs is for a family list (family: [lgbm, mlp]); "
                    "with one family give the rungs as a list"
                )
            return self
        if self.model_params:
            raise ValueError(
                f"model_params: {self.model_params} with a family list {fams}: fixed parameters belong to "
                "one family; give them per family through ladder: {family: [rungs]} or train one family"
            )
        if isinstance(self.ladder, list):
            raise ValueError(
                f"ladder: a list of rungs with a family list {fams}; give a mapping family -> rungs, "
                "e.g. ladder: {lgbm: [{num_leaves: 8}], mlp: [{width: 64, depth: 1}]}"
            )
        if isinstance(self.ladder, dict):
            unknown = sorted(set(self.ladder) - set(fams))
            if unknown:
                raise ValueError(f"ladder: {unknown} not in the family list {fams}")
        return self

    def families(self, data_kind: str) -> list[str]:
        """The families this run trains, in the order given (the default for the data kind if unset)."""
        if isinstance(self.family, list):
            return list(self.family)
        return [self.family or ("small_cnn" if data_kind == "images" else "mlp")]

    @field_validator("workers")
    @classmethod
    def _check_workers(cls, workers: int, info: ValidationInfo) -> int:
        """Refused before any work: more workers than trials, a storage they cannot share, a bad URL."""
        from closedloop.stages.train.phases.workers import storage_problem

        n_trials = info.data.get("n_trials")
        if n_trials is not None and workers > n_trials:
            raise ValueError(
                f"workers: {workers} is more than n_trials: {n_trials}; a worker would have no trial "
                "to run (lower workers or raise n_trials)"
            )
        problem = storage_problem(info.data.get("storage"), workers)
        if problem:
            raise ValueError(problem)
        return workers

    def resolved(self) -> dict[str, Any]:
        """The preset-controlled values (all filled at validation)."""
        return {k: getattr(self, k) for k in PRESETS[self.preset] if k in type(self).model_fields}
