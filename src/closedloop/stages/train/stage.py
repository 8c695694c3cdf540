"""The ``train`` stage: overfit-then-regularize training in five phases, every decision logged.

1. sanity - overfit one small batch; 2. beat the baseline - a small default model against the best
baseline on validation; 3. scale up - grow capacity until validation loss turns up; 4. regularize and
tune - Optuna with pruning on validation; 5. final fit on train+val, calibration, one test opening.
Each phase is a method a subclass can override; ``build_network`` is the custom-model hook.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from closedloop.core.artifacts import JsonArtifact
from closedloop.core.config import StageConfig
from closedloop.core.errors import ConfigError, StageFailedError
from closedloop.core.io import to_json, write_text_atomic
from closedloop.core.registry import register_stage
from closedloop.core.stage import RunContext, Stage, StageIO
from closedloop.data.bundle import DatasetBundle
from closedloop.models.registry import build_network
from closedloop.models.trained import ModelSpec, Preprocessing, TrainedModel
from closedloop.stages.audit.rerank import review_after_training, review_blocks, review_summary
from closedloop.stages.baseline import BaselineReport
from closedloop.stages.task import TaskSpec
from closedloop.stages.train import phases as ph
from closedloop.stages.train.augment import AugmentParams
from closedloop.stages.train.engine import HParams, make_engine, make_tensor_set
from closedloop.stages.train.heldout import plan_heldout
from closedloop.stages.train.selection import selection_evidence
from closedloop.stages.train.session import TrainSession

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
    },
}

LADDERS: dict[str, list[dict[str, Any]]] = {
    "small_cnn": [{"width": 8}, {"width": 16}, {"width": 32}, {"width": 48}],
    "mlp": [
        {"width": 32, "depth": 1},
        {"width": 128, "depth": 2},
        {"width": 512, "depth": 2},
        {"width": 1024, "depth": 3},
    ],
}

ALL_KNOBS = ["lr", "weight_decay", "dropout", "l1", "strength", "label_smoothing", "mixup", "epochs"]


class AugmentSettings(StageConfig):
    """Augmentation amplitudes at strength 1 (tuning scales them by ``strength`` in [0, 1])."""

    shift: float = Field(0.1, ge=0, le=0.5)
    """Largest translation as a fraction of the image side."""
    hflip: bool = True
    """Random horizontal flips (turn off when left/right matters)."""
    vflip: bool = False
    rotate: float = Field(10.0, ge=0, le=180)
    """Largest rotation in degrees."""
    scale: float = Field(0.1, ge=0, le=0.5)
    brightness: float = Field(0.1, ge=0, le=1)
    contrast: float = Field(0.1, ge=0, le=1)
    cutmix: float = Field(0.0, ge=0)
    """CutMix Beta parameter (0: off). Mixup is a tuning knob."""


class TrainConfig(StageConfig):
    """Overfit-then-regularize training. Fields left unset (or ``null``) take the preset's value when
    the config is validated, so the saved ``config.yaml`` records the numbers a run used."""

    preset: Literal["quick", "default", "thorough"] = "default"
    """quick (~2 min), default (~10 min) or thorough (~30 min) on a small CPU."""
    budget_minutes: float | None = Field(None, gt=0)
    """Wall-clock budget for all five phases, split 3/10/27/40/20% (unused time rolls over)."""
    family: str | None = None
    """Model family (small_cnn, resnet18, resnet50, mlp) or an import path; default small_cnn for images, mlp for tables."""
    model_params: dict[str, Any] = Field(default_factory=dict)
    """Fixed parameters of the family (e.g. {depth: 3, pretrained: false}); ladder rungs are merged over them."""
    ladder: list[dict[str, Any]] | None = None
    """Capacity rungs (family params), smallest first; default by family and preset."""
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
    baseline_epochs: int | None = Field(None, ge=1)
    ladder_epochs: int | None = Field(None, ge=2)
    n_trials: int | None = Field(None, ge=1)
    max_epochs: int | None = Field(None, ge=1)
    """Upper bound of the tuned number of epochs."""
    patience: int | None = Field(None, ge=1)
    """Early stopping patience (epochs) in tuning trials."""
    cv_candidates: int | None = Field(None, ge=0)
    """Small data (the task's validation protocol is kfold / repeated_kfold): how many of the best
    configurations on the hold-out split (plus the unregularized rung) are re-ranked by cross-validation
    on train+val; the winner's out-of-fold predictions calibrate the final model (preset: quick 0,
    default 3, thorough 5; 0: off)."""
    ablate_knobs: int | None = Field(None, ge=0)
    """How many knobs to ablate after tuning (preset: quick 0, default 2, thorough 4): the most important
    ones (fANOVA) are each reset to neutral (0; lr and epochs: the un-tuned defaults) and the chosen
    configuration retrained on train; the validation difference gets a paired bootstrap 95% CI. Each
    fit counts toward the tune phase's time budget and the validation ledger (0: off)."""
    tune_knobs: list[str] = Field(default_factory=lambda: list(ALL_KNOBS))
    """Knobs the search may change (lr, weight_decay, dropout, l1, strength, label_smoothing, mixup, epochs)."""
    lr_finder: bool = False
    """Run an LR range test before tuning and centre the LR search on its suggestion."""
    storage: str | None = None
    """Optuna RDB storage URL shared by several machines (default: a SQLite file in the stage's work folder)."""
    study_name: str | None = None
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
    threshold: Literal["cost", "youden", "fixed"] = "cost"
    """Binary operating threshold, fitted with the temperature (held-out or out-of-fold predictions): task
    costs, Youden's J (prevalence-free) or 0.5."""
    calibration: Literal["temperature", "bias+temperature"] = "temperature"
    """Fitted on the deployed model's held-out predictions (k-fold protocols: out-of-fold): the temperature alone, or a temperature and one offset per logit
    (bias-corrected; undoes the prior shift of class weighting; folded into the head bias)."""
    gate: Literal["warn", "fail"] = "warn"
    """fail: the stage fails (after writing the evaluation) when the model does not beat the baseline."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1)
    """torch CPU threads (default: torch's choice)."""
    n_bootstrap: int = Field(1000, ge=100)

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

    def resolved(self) -> dict[str, Any]:
        """The preset-controlled values (all filled at validation)."""
        return {k: getattr(self, k) for k in PRESETS[self.preset] if k in type(self).model_fields}


class EvaluationReport(JsonArtifact):
    """What the training stage found, phase by phase. Layout: ``artifact.json``."""

    phases: dict[str, Any]
    curves: dict[str, list[dict[str, Any]]]
    decisions: list[dict[str, Any]]
    val: dict[str, Any]
    test: dict[str, Any]
    beats_baseline: dict[str, Any] | None
    n_configs: int
    chosen: dict[str, Any]
    figures: list[dict[str, str]]
    seconds: float
    primary_metric: str
    baseline_name: str | None = None
    heldout: dict[str, Any] | None = None
    """The deployed model's metrics (with 95% CIs) on the samples it did not train on (``calibration``)."""
    evaluated_on: dict[str, str] = Field(default_factory=dict)
    """Which data each figure was computed on: ``test``, ``val``, ``heldout``, ``temperature``, ``threshold``."""
    heldout_note: str | None = None
    """How the held-out split was made (and any fallback for a small validation split)."""
    selection: dict[str, Any] | None = None
    """The winner's validation score and the search's optimism (SelectionBias, evaluated_on validation)."""


class _Resolved:
    """Config with the preset's values filled in (attribute access like the config)."""

    def __init__(self, cfg: TrainConfig) -> None:
        self._cfg = cfg
        self._vals = cfg.resolved()

    def __getattr__(self, name: str) -> Any:
        if name in self._vals:
            return self._vals[name]
        return getattr(self._cfg, name)


@register_stage("train")
class TrainModel(Stage):
    """Overfit one batch, beat the baseline, scale until it overfits, regularize and tune, final fit."""

    nondeterministic_outputs = ("evaluation",)  # holds phase wall times and budget decisions
    Config = TrainConfig
    version = "4"  # 4: held-out calibration split + gate without Holm over N, selection bias; 2: calibration option, knob ablation

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

    def ladder(self, sess: TrainSession) -> list[dict[str, Any]]:
        cfg = self.config
        if cfg.ladder is not None:
            rungs = cfg.ladder
        else:
            rungs = LADDERS.get(sess.family, [{}])[: PRESETS[cfg.preset]["ladder_size"]]
        return [{**cfg.model_params, **r} for r in rungs] or [dict(cfg.model_params)]

    def sanity_check(self, sess: TrainSession) -> dict[str, Any]:
        return ph.sanity(sess, self.ladder(sess)[-1])  # the largest rung: can this family learn at all?

    def beat_baseline(self, sess: TrainSession, baseline: Any) -> dict[str, Any]:
        return ph.beat_baseline(sess, self.ladder(sess)[0], baseline)

    def scale_up(self, sess: TrainSession) -> dict[str, Any]:
        return ph.scale_up(sess, self.ladder(sess))

    def tune(
        self, sess: TrainSession, model_params: dict[str, Any], ladder_logits: np.ndarray | None
    ) -> dict[str, Any]:
        return ph.tune(sess, model_params, ladder_logits)

    def cross_validate(self, sess: TrainSession, tuned: dict[str, Any]) -> dict[str, Any]:
        """Small data: re-rank the best configurations by the task's k-fold protocol (``tuned`` key: the pick)."""
        return ph.cross_validate(sess, tuned)

    def final_fit(self, sess: TrainSession, tuned: dict[str, Any]) -> tuple[TrainedModel, dict[str, Any]]:
        return ph.final_fit(sess, tuned)

    # -- driver ---------------------------------------------------------------------------------
    def run(self, inputs: Inputs, ctx: RunContext) -> Outputs:
        sess = self.make_session(inputs, ctx)
        baseline = inputs.baseline
        if baseline is None:
            sess.decide(
                "setup",
                "no baseline input: the stage trains and evaluates, but cannot say whether the "
                "model beats a simple baseline",
                {},
            )

        def cached(name: str, fn: Any) -> dict[str, Any]:
            got = sess.load_phase(name)
            if got is not None:
                sess.decisions, sess.curves = got["log"]["decisions"], got["log"]["curves"]
                sess.figures, sess.n_configs = got["log"]["figures"], got["log"]["n_configs"]
                sess.phases = got["log"]["phases"]
                return got["outcome"]
            t = time.time()
            out = fn()
            out["seconds"] = round(time.time() - t, 2)
            sess.phases[name] = out
            sess.save_phase(
                name,
                {
                    "outcome": out,
                    "log": {
                        "decisions": sess.decisions,
                        "curves": sess.curves,
                        "figures": sess.figures,
                        "n_configs": sess.n_configs,
                        "phases": sess.phases,
                    },
                },
            )
            return out

        cached("sanity", lambda: self.sanity_check(sess))
        cached("beat_baseline", lambda: self.beat_baseline(sess, baseline))
        ladder = cached("scale_up", lambda: self.scale_up(sess))
        lpath = sess.work / f"rung_{ladder['chosen']}_val_logits.npy"
        if self.config.lr_finder:
            cached("lr_finder", lambda: self._lr_finder(sess, ladder["params"]))
        tuned = cached(
            "tune", lambda: self.tune(sess, ladder["params"], np.load(lpath) if lpath.is_file() else None)
        )
        cv = cached("cross_validate", lambda: self.cross_validate(sess, tuned))
        t = time.time()
        model, fin = self.final_fit(sess, cv["tuned"])
        ev = ph.evaluate_on_test(sess, model, fin.pop("val_proba"), fin.pop("heldout_proba"), baseline)
        sb = selection_evidence(sess, cv["tuned"])
        fin["seconds"] = round(time.time() - t, 2)
        sess.phases["final"] = {
            **fin,
            "test": ev["test"],
            "val": ev["val"],
            "heldout": ev["heldout"],
            "test_ece": ev.get("test_ece"),
            "per_day": ev.get("per_day"),
        }
        review = review_after_training(
            sess.work, cv["tuned"], inputs.data, sess.task.problem_type, ctx.stage_dir / "label_review"
        )
        if review is not None:  # the trained configuration ranks suspected label errors again (no extra fit)
            sess.phases["label_review"] = review.head(50).model_dump(mode="json")
        evaluation = EvaluationReport(
            phases=sess.phases,
            curves=sess.curves,
            decisions=sess.decisions,
            val=ev["val"],
            test=ev["test"],
            beats_baseline=ev["beats_baseline"],
            n_configs=sess.n_configs,
            chosen={
                "family": model.spec.family,
                "model_params": model.spec.params,
                "hparams": tuned["hparams"],
                "epochs": fin["epochs"],
                "n_parameters": model.n_parameters(),
                "temperature": model.temperature,
                "threshold": model.threshold,
                "knobs": tuned["knobs"],
            },
            figures=sess.figures,
            seconds=round(sess.elapsed(), 1),
            primary_metric=sess.task.primary_metric,
            baseline_name=getattr(baseline, "best", None),
            heldout=ev["heldout"],
            evaluated_on=fin["evaluated_on"],
            heldout_note=sess.heldout.note,
            selection=None if sb is None else sb.model_dump(mode="json"),
        )
        bb = ev["beats_baseline"]
        if self.config.gate == "fail" and bb is not None and not bb.get("significant"):
            write_text_atomic(ctx.work_dir / "evaluation.json", to_json(evaluation.model_dump(mode="json")))
            raise StageFailedError(
                f"train: {bb['sentence']} (gate: fail; evaluation written to {ctx.work_dir / 'evaluation.json'})"
            )
        return self.Outputs(model=model, evaluation=evaluation)

    def _lr_finder(self, sess: TrainSession, params: dict[str, Any]) -> dict[str, Any]:
        from closedloop.stages.train import plots

        net = sess.build(params, sess.ctx.seed)
        lrs, losses, lr = sess.engine.lr_range_test(net, sess.train, sess.base_hp, seed=sess.ctx.seed)
        plots.lr_finder(sess.figure("lr_finder.png", "LR range test", "lr_finder"), lrs, losses, lr)
        sess.base_hp = sess.base_hp.with_(lr=lr)
        sess.decide(
            "lr_finder",
            f"LR range test suggests {lr:.3g} (a decade below the loss minimum); the search is centred on it",
            {"lr": lr},
        )
        return {"lr": lr}

    def make_session(self, inputs: Inputs, ctx: RunContext) -> TrainSession:
        cfg = _Resolved(self.config)
        data, task = inputs.data, inputs.task
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device: 'cuda' requested but no CUDA device is available")
        unknown = [k for k in cfg.tune_knobs if k not in ALL_KNOBS]
        if unknown:
            raise ConfigError(f"train.tune_knobs: unknown knob(s) {unknown}; allowed: {ALL_KNOBS}")
        pre = make_preprocessing(data, task)
        family = cfg.family or ("small_cnn" if data.kind == "images" else "mlp")
        eng = make_engine(task, pre, device)
        a = cfg.augment
        batch_size = cfg.batch_size
        while (
            cfg.min_steps_per_epoch
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
            augment=AugmentParams(strength=0.0, **a.model_dump()),  # same field names; tuning sets strength
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
            budget_s=60.0 * cfg.budget_minutes,
            heldout=plan_heldout(
                data.val.X,
                np.asarray(data.val.y),
                problem_type=task.problem_type,
                final_fit=cfg.final_fit,
                fraction=cfg.holdout_fraction,
                min_size=cfg.min_holdout,
                n_train=len(data.train),
                seed=ctx.seed,
            ),
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
        tune = ev.phases.get("tune", {})
        return {
            "test": {k: {"value": v["value"], "ci95": v["ci95"]} for k, v in ev.test.items()},
            "val": {k: {"value": v["value"], "ci95": v["ci95"]} for k, v in ev.val.items()},
            "heldout": None
            if ev.heldout is None
            else {k: {"value": v["value"], "ci95": v["ci95"]} for k, v in ev.heldout.items()},
            "evaluated_on": ev.evaluated_on,
            "heldout_note": ev.heldout_note,
            "n_configs": ev.n_configs,
            "beats_baseline": None
            if bb is None
            else {
                k: bb.get(k)
                for k in (
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
                    "sentence",
                )
            },
            "selection": ev.selection,
            "decisions": ev.decisions,
            "model": {
                "family": ev.chosen["family"],
                "params": ev.chosen["model_params"],
                "n_parameters": ev.chosen["n_parameters"],
                "epochs": ev.chosen["epochs"],
            },
            "temperature": ev.chosen["temperature"],
            "threshold": ev.chosen["threshold"],
            "knob_gains": {
                k: {f: g.get(f) for f in ("chosen", "neutral", "delta", "ci95", "metric", "importance")}
                for k, g in tune.get("knob_gains", {}).items()
            },
            "knob_gains_skipped": tune.get("knob_gains_skipped", []),
            "cross_validation": _cv_summary(ev.phases.get("cross_validate")),
            "label_review": review_summary(ev.phases.get("label_review")),
            "seconds": ev.seconds,
        }

    def report(self, outputs: Outputs, stage_dir: Path) -> list[Any]:
        from closedloop.report.blocks import Callout, Figure, KeyValues, Paragraph, Section, Table

        ev = outputs.evaluation
        figs = {}
        for f in ev.figures:
            figs.setdefault(f["phase"], []).append(Figure(f["path"], f["caption"]))
        by_phase: dict[str, list[dict[str, Any]]] = {}
        for d in ev.decisions:
            by_phase.setdefault(d["phase"], []).append(d)

        def decisions(phase: str) -> list[Any]:
            return [Paragraph(d["decision"]) for d in by_phase.get(phase, [])]

        blocks: list[Any] = []
        bb = ev.beats_baseline
        if bb is not None:
            blocks.append(Callout(bb["sentence"], "ok" if bb.get("significant") else "warning"))
        else:
            blocks.append(
                Callout(
                    "No baseline was wired into this stage: the model is not compared with one.", "warning"
                )
            )
        on = ev.evaluated_on
        val_col = EVALUATED_ON_TEXT.get(on.get("val", "validation"), "validation")
        hold_col = EVALUATED_ON_TEXT.get(on.get("heldout", ""), "held-out")

        def ci(d: dict[str, Any] | None, k: str) -> str | None:
            if not d or k not in d:
                return None
            v = d[k]
            return f"{v['value']:.4f} [{v['ci95'][0]:.4f}, {v['ci95'][1]:.4f}]"

        blocks.append(
            Table(
                [
                    {
                        "metric": k,
                        "test": round(v["value"], 4),
                        "95% CI": f"[{v['ci95'][0]:.4f}, {v['ci95'][1]:.4f}]",
                        val_col: round(ev.val[k]["value"], 4) if k in ev.val else None,
                        hold_col: ci(ev.heldout, k),
                    }
                    for k, v in ev.test.items()
                ],
                title="Test metrics (test set opened once) and the data each other column was computed on",
            )
        )
        if on:
            blocks.append(
                KeyValues(
                    {fig: f"{o} ({EVALUATED_ON_TEXT.get(o, o)})" for fig, o in on.items()},
                    title="evaluated_on: which data each figure was computed on",
                )
            )
        if ev.heldout_note:
            blocks.append(Paragraph(f"Held-out split: {ev.heldout_note}."))
        blocks.append(Paragraph(_selection_text(ev)))
        titles = {
            "setup": "Setup",
            "sanity": "1. Sanity: overfit one batch",
            "beat_baseline": "2. Beat the baseline",
            "scale_up": "3. Scale up until it overfits",
            "lr_finder": "LR range test",
            "tune": "4. Regularize and tune",
            "final": "5. Final fit and test",
        }
        for phase, title in titles.items():
            body = decisions(phase) + figs.get(phase, [])
            if phase == "scale_up" and "scale_up" in ev.phases:
                body.append(
                    Table(
                        [
                            {
                                k: r.get(k)
                                for k in (
                                    "rung",
                                    "params",
                                    "n_parameters",
                                    "val_metric",
                                    "best_epoch",
                                    "overfits",
                                    "val_loss_min_epoch",
                                    "seconds",
                                )
                            }
                            for r in ev.phases["scale_up"]["rungs"]
                        ],
                        title="Ladder",
                    )
                )
            if phase == "tune" and "tune" in ev.phases:
                t = ev.phases["tune"]
                body.append(
                    KeyValues(
                        {k: (round(v, 5) if isinstance(v, float) else v) for k, v in t["knobs"].items()},
                        title="Chosen values",
                    )
                )
                if t.get("importance"):
                    body.append(
                        KeyValues(
                            {k: round(v, 3) for k, v in t["importance"].items()}, title="Knob importance"
                        )
                    )
                if t.get("knob_gains"):
                    body.append(Table(knob_gain_rows(t["knob_gains"]), title=KNOB_GAINS_TITLE))
                not_ablated: dict[str, list[str]] = {}
                for g in t.get("knob_gains_skipped", []):
                    not_ablated.setdefault(g["reason"], []).append(g["knob"])
                body.extend(
                    Paragraph(f"Not ablated ({why}): {', '.join(ks)}.") for why, ks in not_ablated.items()
                )
                body.append(
                    Paragraph(
                        f"{t['n_trials']} trials: {t['n_complete']} complete, {t['n_pruned']} pruned, {t['n_failed']} failed."
                    )
                )
                cvp = ev.phases.get("cross_validate") or {}
                if cvp.get("candidates"):
                    body.append(
                        Table(
                            [
                                {
                                    "candidate": r["candidate"],
                                    "hold-out": r["holdout"],
                                    "CV mean": round(r["cv_mean"], 4),
                                    "sd over repeats": r["cv_sd_over_repeats"],
                                    "epochs": r["epochs"],
                                }
                                for r in cvp["candidates"]
                            ],
                            title=f"Cross-validated selection ({cvp['folds']}-fold x {cvp['repeats']} on train+val)",
                        )
                    )
            if body:
                blocks.append(Section(title, body))
        return blocks + review_blocks(ev.phases.get("label_review"))


EVALUATED_ON_TEXT = {
    "calibration": "held-out calibration split (deployed model, never trained on)",
    "validation": "validation (deployed model fitted on train only)",
    "validation_pre_refit": "validation (selected configuration before the refit)",
    "out_of_fold": "out-of-fold (k-fold cross-validation on train+val)",
    "trained_on": "trained-on data (nothing held out)",
    "test": "test (opened once)",
}

KNOB_GAINS_TITLE = (
    "What each knob bought: validation difference, chosen configuration minus the same configuration "
    "retrained with that one knob reset (paired bootstrap; optimistic, chosen on the same data)"
)


def knob_gain_rows(gains: dict[str, Any]) -> list[dict[str, Any]]:
    """Report rows of the tune phase's knob ablation."""

    def r(v: Any) -> Any:
        return round(v, 5) if isinstance(v, float) else v

    return [
        {
            "knob": k,
            "importance": None if g.get("importance") is None else round(g["importance"], 3),
            "chosen": r(g["chosen"]),
            "neutral": r(g["neutral"]),
            f"Δ {g['metric']}": None if g["delta"] is None else round(g["delta"], 4),
            "95% CI": None if g["ci95"] is None else f"[{g['ci95'][0]:+.4f}, {g['ci95'][1]:+.4f}]",
        }
        for k, g in gains.items()
    ]


def make_preprocessing(data: DatasetBundle, task: TaskSpec) -> Preprocessing:
    """Normalization statistics from the train split only."""
    if data.kind == "images":
        x = np.asarray(data.train.X)
        if x.ndim != 4:
            raise ConfigError(f"train: image data must be (N, H, W, C), got shape {x.shape}")
        xf = x.reshape(-1, x.shape[-1]).astype(np.float64) / 255.0
        mean, std = xf.mean(0), xf.std(0)
        std = np.where(std < 1e-6, 1.0, std)
        return Preprocessing(
            input_kind="images", input_shape=list(x.shape[1:]), mean=mean.tolist(), std=std.tolist()
        )
    feats = data.train.features()
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
    )


def _selection_text(ev: EvaluationReport) -> str:
    """The validation side of the evidence: "selected among N" and how optimistic that makes the score."""
    text = f"Selected among {ev.n_configs} configurations evaluated on validation"
    sel = ev.selection
    if not sel:
        return text + " (selection bias not estimated)."
    expect = "about" if sel["winner_is_best"] else "at least about"
    how = (
        "" if sel["winner_is_best"] else " (it was chosen by cross-validation, not as the best on validation)"
    )
    return (
        f"{text}. Winner's validation {sel['metric']}: {sel['winner_value']:.4f}{how}, estimated selection bias "
        f"{sel['optimism']:+.4f} (bootstrap of the selection among the {sel['n_candidates']} candidates with "
        f"saved predictions, on {sel['n_validation']} validation cases): expect {expect} "
        f"{sel['corrected_value']:.4f} on new data. The search is corrected for here, on validation; the "
        "test comparison above is a single declared comparison and needs no correction for it."
    )


def _cv_summary(cv: dict[str, Any] | None) -> dict[str, Any] | None:
    """summary.json view of the cross-validated selection (None when it did not run)."""
    if not cv or not cv.get("candidates"):
        return None
    return {k: cv[k] for k in ("protocol", "folds", "repeats", "chosen", "candidates")}
