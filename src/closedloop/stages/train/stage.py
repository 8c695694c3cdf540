"""The ``train`` stage: overfit-then-regularize training in phases, every decision logged.

1. sanity - overfit one small batch; 2. beat the baseline - a small default model against the best
baseline on validation; 3. scale up - grow capacity until validation loss turns up; 4. regularize and
tune - Optuna with pruning on validation (small data: cross-validated re-ranking); 5. final fit on
train+val, calibration, one test opening. Each phase is one module of :mod:`.phases` (a subclass may
change ``phases``); the driver (:mod:`.driver`) orders, caches and resumes them; ``build_network`` is
the custom-model hook. Wall times go to ``ctx.timings``, never into the artifacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from closedloop.artifacts.evaluation import EvaluationReport
from closedloop.artifacts.figures import Figure as FigureRecord
from closedloop.artifacts.training import CrossValidateOutcome, FamilyChoice, FinalOutcome, TuneOutcome
from closedloop.core.errors import ConfigError, StageFailedError
from closedloop.core.io import to_json, write_text_atomic
from closedloop.core.registry import register_stage
from closedloop.core.stage import RunContext, Stage, StageIO, stage_timings
from closedloop.data.bundle import DatasetBundle
from closedloop.models.registry import build_network, family_kind, family_ladder, network_kind
from closedloop.models.trained import ModelSpec, Preprocessing, TrainedModel
from closedloop.stages.audit.rerank import review_after_training, review_summary
from closedloop.stages.baseline import BaselineReport
from closedloop.stages.task import TaskSpec
from closedloop.stages.train import plots
from closedloop.stages.train import report as R
from closedloop.stages.train.augment import AugmentParams
from closedloop.stages.train.checks import check_training_data
from closedloop.stages.train.config import PRESETS, TrainConfig
from closedloop.stages.train.data_parallel import check_ranks
from closedloop.stages.train.driver import budget_table, run_phases
from closedloop.stages.train.engine import Engine, HParams, make_engine, make_tensor_set
from closedloop.stages.train.families import family_summary, run_families
from closedloop.stages.train.heldout import plan_heldout
from closedloop.stages.train.importance import tree_importance
from closedloop.stages.train.knobs import TREE_LR_MIN, knob, tree_lr_min
from closedloop.stages.train.phases import PHASES, Phase
from closedloop.stages.train.phases.tune import KNOB_GAINS_TITLE, knob_gain_rows
from closedloop.stages.train.phases.workers import check_reachable
from closedloop.stages.train.session import TrainSession

__all__ = ["KNOB_GAINS_TITLE", "EvaluationReport", "TrainConfig", "TrainModel", "knob_gain_rows"]


@register_stage("train")
class TrainModel(Stage):
    """Overfit one batch, beat the baseline, scale until it overfits, regularize and tune, final fit."""

    Config = TrainConfig
    version = "4"  # 4: held-out calibration split + gate without Holm over N, selection bias; 2: calibration option, knob ablation
    phases: ClassVar[tuple[type[Phase], ...]] = PHASES
    scores_on_test = True  # the final evaluation: a sealed test split is refused before training
    """The phases in running order (their budget shares must add up to 1)."""

    class Inputs(StageIO):
        data: DatasetBundle
        task: TaskSpec
        baseline: BaselineReport | None = None

    class Outputs(StageIO):
        model: TrainedModel
        evaluation: EvaluationReport

    # -- hooks a subclass can override ----------------------------------------------------------
    def build_network(self, spec: ModelSpec, input_shape: list[int], n_logits: int) -> torch.nn.Module:
        """Custom-model hook: return an nn.Module with ``features(x)`` and ``head: nn.Linear``."""
        return build_network(spec, input_shape, n_logits)

    def ladder(self, family: str) -> list[dict[str, Any]]:
        cfg = self.config
        if isinstance(cfg.ladder, dict) and family in cfg.ladder:  # a family list: rungs per family
            rungs = cfg.ladder[family]
        elif isinstance(cfg.ladder, list):
            rungs = cfg.ladder
        else:
            rungs = family_ladder(family)[: self.ladder_size(family)]
        return [{**cfg.model_params, **r} for r in rungs] or [dict(cfg.model_params)]

    def ladder_size(self, family: str) -> int:
        """Rungs of the family's registered ladder climbed when no ``ladder`` is given: a tree family's
        ``tree_ladder_size``, the preset's count for networks."""
        size = self.config.tree_ladder_size if family_kind(family) == "trees" else None
        return size or PRESETS[self.config.preset]["ladder_size"]

    def candidate_families(self) -> list[str]:
        """The families this stage may ship (a later stage checks its config against them when the
        pipeline is built); the data kind's default network when none is named."""
        fam = self.config.family
        return list(fam) if isinstance(fam, list) else [fam] if fam else []

    # -- driver ---------------------------------------------------------------------------------
    def run(self, inputs: Inputs, ctx: RunContext) -> Outputs:
        # the figures go to a helper process while the stage trains (:mod:`.figure_worker`)
        kinds = [family_kind(f) for f in self.config.families(inputs.data.kind)]
        with plots.in_background(self.config.figures_in_background(kinds)):
            return self._run(inputs, ctx)

    def _run(self, inputs: Inputs, ctx: RunContext) -> Outputs:
        if self.config.storage:  # an unreachable study database fails here, before any training
            check_reachable(self.config.storage)
        phases = [p() for p in self.phases]
        families = self.config.families(inputs.data.kind)
        choice: FamilyChoice | None = None
        if len(families) > 1:  # a family choice inside the run (:mod:`.families`)

            def make(fctx: RunContext, budget: dict[str, float], family: str) -> TrainSession:
                s = self.make_session(inputs, fctx, budget, family=family)
                self._note_no_baseline(s, inputs)
                return s

            budget_s = 60.0 * (self.config.budget_minutes or 1.0)
            sess, choice = run_families(make, phases, families, ctx, budget_s)
        else:
            sess = self.make_session(inputs, ctx, budget_table(phases))
            self._note_no_baseline(sess, inputs)
            run_phases(sess, phases)
        fin, model = sess.get(FinalOutcome), sess.model
        tuned = sess.get(TuneOutcome)
        if fin is None or model is None or tuned is None:
            raise StageFailedError("train: the phases ended without a final model")
        cv = sess.get(CrossValidateOutcome)
        chosen = cv.tuned if cv is not None else tuned.config()
        review = review_after_training(  # the trained configuration ranks suspected label errors again
            sess.work,
            chosen.model_dump(),
            inputs.data,
            sess.task.problem_type,
            ctx.stage_dir / "label_review",
        )
        importance = None
        if network_kind(model.network) == "trees":
            plan = sess.heldout
            held = None
            if plan.evaluated_on != "trained_on" and plan.indices:
                held = sess.val.subset(np.asarray(plan.indices, dtype=np.int64))
            importance = tree_importance(
                model.network, sess.pre.feature_names, held, sess.engine, seed=sess.seed("importance")
            )
            sess.decide(
                "final", f"feature importance: {importance.note}", {"evaluated_on": importance.evaluated_on}
            )
        evaluation = EvaluationReport(
            phases={k: v.model_dump(mode="json") for k, v in sess.outcomes.items()},
            curves=sess.curves,
            decisions=sess.decisions,
            val=fin.val,
            test=fin.test,
            beats_baseline=sess.beats_baseline,
            n_configs=sess.n_configs,
            chosen={
                "family": model.spec.family,
                "model_params": model.spec.params,
                "hparams": tuned.hparams,
                "epochs": fin.epochs,
                "n_parameters": model.n_parameters(),
                "temperature": model.temperature,
                "threshold": model.threshold,
                "knobs": tuned.knobs,
            },
            figures=sess.figures,
            primary_metric=sess.task.primary_metric,
            baseline_name=getattr(inputs.baseline, "best", None),
            heldout=fin.heldout,
            evaluated_on=fin.evaluated_on,
            heldout_note=sess.heldout.note,
            selection=None if sess.selection is None else sess.selection.model_dump(mode="json"),
            label_review=None if review is None else review.head(50),
            feature_importance=importance,
            families=choice,
        )
        bb = sess.beats_baseline
        if self.config.gate == "fail" and bb is not None and not bb.get("significant"):
            write_text_atomic(ctx.work_dir / "evaluation.json", to_json(evaluation.model_dump(mode="json")))
            raise StageFailedError(
                f"train: {bb['sentence']} (gate: fail; evaluation written to {ctx.work_dir / 'evaluation.json'})"
            )
        return self.Outputs(model=model, evaluation=evaluation)

    @staticmethod
    def _note_label_threads(sess: TrainSession, n: int, trees: bool) -> None:
        """``label_threads`` in the decision log: how multi-label trees grow, or why it does nothing."""
        if trees and sess.task.problem_type == "multilabel":
            sess.decide(
                "setup",
                f"label_threads: {n}: multi-label trees grow one booster per label, up to {n} at once on "
                "threads (the same model for every thread count)",
                {"label_threads": n, "labels": sess.engine.n_logits},
            )
        else:
            what = "a tree family" if trees else f"family {sess.family}"
            sess.decide(
                "setup",
                f"label_threads: {n} has no effect: it applies to multi-label tree fits, and this is "
                f"{what} on a {sess.task.problem_type} task",
                {"label_threads": n},
            )

    @staticmethod
    def _note_tree_extend(sess: TrainSession, n: int) -> None:
        """``tree_extend`` in the decision log: whether a still-improving tree fit boosts past its plan."""
        if n == 1:
            text = "tree_extend: 1: tree fits stop at their planned epochs (a cap)"
        elif sess.task.problem_type == "multilabel":
            text = f"tree_extend: {n} has no effect: multi-label tree fits keep their planned epochs"
        else:
            text = (
                f"tree_extend: {n}: a tree fit with early stopping still improving on validation at its last "
                f"planned epoch boosts on, under the same patience, up to {n}x its planned epochs"
            )
        sess.decide("setup", text, {"tree_extend": n})

    def _note_tree_ladder(self, sess: TrainSession) -> None:
        """``tree_ladder_size`` in the decision log: which of the family's registered rungs the ladder
        may climb, or that a given ``ladder`` overrides it."""
        cfg = self.config
        n = cfg.tree_ladder_size
        rungs = "; ".join(", ".join(f"{k}={v}" for k, v in r.items()) for r in sess.ladder)
        given = isinstance(cfg.ladder, list) or (isinstance(cfg.ladder, dict) and sess.family in cfg.ladder)
        if given:
            text = f"tree_ladder_size: {n} has no effect: the ladder is given ({len(sess.ladder)} rung(s): {rungs})"
        else:
            text = (
                f"tree ladder: {len(sess.ladder)} of {sess.family}'s {len(family_ladder(sess.family))} registered "
                f"rungs ({rungs}; tree_ladder_size {n}, preset {cfg.preset})"
            )
        sess.decide("setup", text, {"tree_ladder_size": n, "rungs": sess.ladder, "given": given})

    @staticmethod
    def _note_no_baseline(sess: TrainSession, inputs: Inputs) -> None:
        if inputs.baseline is None:
            sess.decide(
                "setup",
                "no baseline input: the stage trains and evaluates, but cannot say whether the "
                "model beats a simple baseline",
                {},
            )

    def make_session(
        self,
        inputs: Inputs,
        ctx: RunContext,
        budget: dict[str, float] | None = None,
        family: str | None = None,
    ) -> TrainSession:
        """The session of one family (default: the config's only family, or the data kind's default)."""
        cfg = self.config
        data, task = inputs.data, inputs.task
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device: 'cuda' requested but no CUDA device is available")
        for name in cfg.tune_knobs:  # each a registered knob (or an import path that registers one)
            knob(name)
        check_training_data(data, task.problem_type)
        family = family or cfg.families(data.kind)[0]
        trees = family_kind(family) == "trees"
        check_ranks(cfg.final.nproc, device, family_kind(family), cfg.final.start)  # before any training
        pre = make_preprocessing(data, task, native_missing=trees)
        eng = make_tree_engine(cfg, data, task, pre, family) if trees else make_engine(task, pre, device)
        batch_size = cfg.batch_size
        while (
            not trees  # batches mean nothing to boosting
            and cfg.min_steps_per_epoch
            and batch_size > 8
            and len(data.train) // batch_size < cfg.min_steps_per_epoch
        ):
            batch_size //= 2
        hp = HParams(
            batch_size=batch_size,
            lr=cfg.lr,
            schedule=cfg.schedule,
            grad_clip=cfg.grad_clip,
            class_weight=cfg.class_weight,
            sampler=cfg.sampler,
            ordinal_loss=cfg.ordinal_loss,
            augment=AugmentParams(strength=0.0, **cfg.augment.model_dump()),  # tuning sets strength
        )
        tr = make_tensor_set(data.train.X, data.train.y, pre, task.problem_type)
        va = make_tensor_set(data.val.X, data.val.y, pre, task.problem_type)
        sess = TrainSession(
            cfg=cfg,
            task=task,
            data=data,
            ctx=ctx,
            stage=self,
            pre=pre,
            engine=eng,
            train=tr,
            val=va,
            family=family,
            base_hp=hp,
            budget_s=60.0 * (cfg.budget_minutes or 1.0),
            budget=budget if budget is not None else budget_table([p() for p in self.phases]),
            ladder=self.ladder(family),
            baseline=inputs.baseline,
            heldout=plan_heldout(
                data.val.X,
                np.asarray(data.val.y),
                problem_type=task.problem_type,
                final_fit=cfg.final_fit,
                fraction=cfg.holdout_fraction,
                min_size=cfg.min_holdout,
                n_train=len(data.train),
                seed=ctx.seed,
                groups=data.splits["val"].groups,
            ),
        )
        if cfg.label_threads is not None:
            self._note_label_threads(sess, cfg.label_threads, trees)
        if trees:
            self._note_tree_extend(sess, cfg.tree_extend)
            self._note_tree_ladder(sess)
        if trees and (floor := tree_lr_min(cfg.tree_learning_rate_min, task.problem_type)) != TREE_LR_MIN:
            sess.decide(
                "setup",
                f"tree learning rate searched from {floor:g} (not {TREE_LR_MIN:g}; tree_learning_rate_min: "
                f"{cfg.tree_learning_rate_min}): a trial grows {sess.engine.n_logits} tree(s) a round and "
                f"2 / learning rate rounds an epoch, so the floor bounds a slow trial's cost",
                {"tree_learning_rate_min": floor, "trees_per_round": sess.engine.n_logits},
            )
        if batch_size != cfg.batch_size:
            sess.decide(
                "setup",
                f"batch size {batch_size} instead of {cfg.batch_size}: {len(data.train)} training examples would give "
                f"fewer than {cfg.min_steps_per_epoch} optimizer steps per epoch",
                {"n_train": len(data.train), "batch_size": batch_size},
            )
        return sess

    # -- summary and report -----------------------------------------------------------------------
    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        ev = outputs.evaluation
        bb = ev.beats_baseline
        tune, final = ev.outcome(TuneOutcome), ev.outcome(FinalOutcome)

        def with_ci(d: dict[str, FigureRecord]) -> dict[str, Any]:
            # value, ci95 and decided_at (shipped threshold, 0.5 or threshold-free) as recorded
            return {k: v.model_dump(mode="json", exclude_unset=True) for k, v in d.items()}

        bb_keys = (
            "metric",
            "delta",
            "ci95",
            "bound95",
            "p_value",
            "p_adjusted",
            "correction",
            "n_test_comparisons",
            "n_configs",
            "significant",
            "baseline",
            "evaluated_on",
            "method",
            "n",
            "n_groups",
        )
        return {
            "test": with_ci(ev.test),
            "val": with_ci(ev.val),
            "heldout": None if ev.heldout is None else with_ci(ev.heldout),
            "evaluated_on": ev.evaluated_on,
            "heldout_note": ev.heldout_note,
            "n_configs": ev.n_configs,
            "beats_baseline": None
            if bb is None
            else bb.model_dump(mode="json", include={*bb_keys, "sentence"}),
            "selection": None if ev.selection is None else ev.selection.model_dump(mode="json"),
            "decisions": ev.decisions,
            "model": {
                "family": ev.chosen.family,
                "params": ev.chosen.model_params,
                "n_parameters": ev.chosen.n_parameters,
                "epochs": ev.chosen.epochs,
            },
            "temperature": ev.chosen.temperature,
            "threshold": ev.chosen.threshold,
            "final_ranks": 1 if final is None else final.ranks,
            "final_fit": None
            if final is None
            else final.model_dump(
                mode="json", include={"epochs", "selected_epochs", "epochs_trained", "deadline_extended_s"}
            ),
            "knob_gains": {}
            if tune is None
            else {
                k: g.model_dump(
                    mode="json", include={"chosen", "neutral", "delta", "ci95", "metric", "importance"}
                )
                for k, g in tune.knob_gains.items()
            },
            "knob_gains_skipped": []
            if tune is None
            else [s.model_dump(mode="json") for s in tune.knob_gains_skipped],
            "cross_validation": R.cv_summary(ev.phases.get("cross_validate")),
            "feature_importance": R.importance_summary(ev.feature_importance),
            "test_confusion": None
            if final is None or final.test_confusion is None
            else final.test_confusion.model_dump(mode="json"),
            "families": family_summary(ev.families),
            "label_review": review_summary(
                None if ev.label_review is None else ev.label_review.model_dump(mode="json")
            ),
        }

    def report(self, outputs: Outputs, stage_dir: Path) -> list[Any]:
        phases = [p() for p in self.phases]
        return R.report_blocks(outputs.evaluation, phases, stage_timings(stage_dir))


def make_tree_engine(
    cfg: TrainConfig, data: DatasetBundle, task: TaskSpec, pre: Preprocessing, family: str
) -> Engine:
    """The engine of a tree family (:mod:`.tree_engine`): the data's categorical columns split natively,
    ``threads`` LightGBM threads (default 1: one OpenMP thread per fit on a small shared CPU)."""
    from closedloop.stages.train.tree_engine import FamilyCannotTrain, TreeEngine

    if data.kind != "table":
        raise FamilyCannotTrain(
            f"train.family: {family!r} is a tree family; it trains on tables, not {data.kind}"
        )
    cats = set(data.meta.categorical_features)
    return TreeEngine(
        task.problem_type,
        task.n_outputs,
        metric=task.primary_metric,
        higher_is_better=task.higher_is_better,
        metric_convention=task.metric_convention,
        categorical=[i for i, n in enumerate(pre.feature_names) if n in cats],
        threads=cfg.threads or 1,
        label_threads=cfg.label_threads,
        extend=cfg.tree_extend,
    )


def make_preprocessing(data: DatasetBundle, task: TaskSpec, native_missing: bool = False) -> Preprocessing:
    """Normalization statistics from the train split only (``native_missing``, tree families: none,
    values pass through with NaN for missing)."""
    if data.kind == "images":
        x = np.asarray(data.train.X)
        if x.ndim != 4:
            raise ConfigError(f"train: image data must be (N, H, W, C), got shape {x.shape}")
        xf = x.reshape(-1, x.shape[-1]).astype(np.float64) / 255.0
        mean, std = xf.mean(0), xf.std(0)
        std = np.where(std < 1e-6, 1.0, std)
        return Preprocessing(
            input_kind="images",
            input_shape=list(x.shape[1:]),
            mean=mean.tolist(),
            std=std.tolist(),
            **_target_scale(data, task),
        )
    feats = data.train.features()
    cats = {  # the names behind each categorical column's codes (fixed by the dtype, same in every split)
        str(c): [str(v) for v in data.train.X[c].cat.categories]
        for c in data.train.X.columns
        if isinstance(data.train.X[c].dtype, pd.CategoricalDtype)
    }
    if native_missing:  # trees route missing values themselves: nothing to impute or scale
        n = feats.shape[1]
        return Preprocessing(
            input_kind="table",
            input_shape=[n],
            mean=[0.0] * n,
            std=[1.0] * n,
            feature_names=[str(c) for c in data.train.X.columns],
            native_missing=True,
            categories=cats,
        )
    med = np.nanmedian(np.where(np.isfinite(feats), feats, np.nan), axis=0)
    med = np.where(np.isnan(med), 0.0, med)
    filled = np.where(np.isnan(feats), med[None, :], feats)
    mean, std = filled.mean(0), filled.std(0)
    std = np.where(std < 1e-9, 1.0, std)
    return Preprocessing(
        input_kind="table",
        input_shape=[feats.shape[1]],
        mean=mean.tolist(),
        std=std.tolist(),
        impute=med.tolist(),
        feature_names=[str(c) for c in data.train.X.columns],
        categories=cats,
        **_target_scale(data, task),
    )


def _target_scale(data: DatasetBundle, task: TaskSpec) -> dict[str, float]:
    """A regression target's train mean and standard deviation, for a network to train on standardized
    targets (:class:`~closedloop.models.trained.Preprocessing`); nothing for other tasks.

    >>> from closedloop.data.sources.sklearn_datasets import SklearnSource
    >>> from closedloop.stages.task import DefineTaskConfig, build_task_spec
    >>> data = SklearnSource(name="diabetes").load(seed=0)
    >>> {k: round(v) for k, v in _target_scale(data, build_task_spec(DefineTaskConfig(), data)).items()}
    {'target_mean': 154, 'target_std': 78}
    """
    if task.problem_type != "regression":
        return {}
    y = np.asarray(data.train.y, np.float64).reshape(-1)
    std = float(y.std())
    return {"target_mean": float(y.mean()), "target_std": std if std > 1e-12 else 1.0}
