"""Phase 5: the final fit of the chosen configuration, its calibration on data it did not train on,
and the single opening of the test split (:mod:`.evaluate`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from closedloop.artifacts.figures import Confusion
from closedloop.core.errors import StageFailedError
from closedloop.models.trained import ModelSpec, TrainedModel, logits_to_proba
from closedloop.stages.train import plots
from closedloop.stages.train.calibration import (
    choose_threshold,
    fit_bias_temperature,
    fit_temperature,
    fold_logit_bias,
)
from closedloop.stages.train.data_parallel import backend_for, fit_on_ranks, start_method_for
from closedloop.stages.train.engine import FitResult, HParams, TensorSet
from closedloop.stages.train.final_plan import (
    EVALUATION_SECONDS,
    FIT_EPOCH_SECONDS,
    FinalPlan,
    fit_deadline,
    plan_final,
    replanner,
)
from closedloop.stages.train.heldout import INFO_KEY, fit_rows
from closedloop.stages.train.outcomes import (
    CrossValidateOutcome,
    FinalFit,
    FinalOutcome,
    TunedConfig,
    TuneOutcome,
)
from closedloop.stages.train.phases.base import Phase
from closedloop.stages.train.phases.evaluate import evaluate_on_test, refit_for_test
from closedloop.stages.train.selection import selection_evidence
from closedloop.stages.train.session import TrainSession


class Final(Phase):
    """Not cached: the model is the stage's output, and the test split is opened once per run."""

    name = "final"
    budget_share = 0.20
    outcome = FinalOutcome
    cached = False

    def run(self, sess: TrainSession) -> FinalOutcome:
        cv = sess.get(CrossValidateOutcome)
        tune = sess.get(TuneOutcome)
        tuned = cv.tuned if cv is not None else tune.config() if tune is not None else None
        if tuned is None:
            raise StageFailedError("train: the final fit needs the tune phase's outcome")
        over = sess.last_phase_overrun()
        if over > 0:
            share = list(sess.budget.values())[-1]
            sess.decide(
                "final",
                f"the phases before the final fit ran {over:.0f} s into its share of the time budget "
                f"({share:.0%} of {sess.budget_s:.0f} s): the final phase keeps its own share, so its "
                f"deadline moves {over:.0f} s past the end of budget_minutes (the stage may run over "
                "the budget by up to that) instead of shipping a model the deadline left no time to train",
                {"deadline_extended_s": round(over, 1), "final_share_s": round(share * sess.budget_s, 1)},
            )
        refitted = refit_for_test(sess)  # before the fit: its time comes out of the fit's deadline
        model, fitted = final_fit(sess, tuned)
        with sess.ctx.timed(EVALUATION_SECONDS):
            ev = evaluate_on_test(
                sess, model, fitted.val_proba, fitted.heldout_proba, sess.baseline, refitted
            )
            sess.selection = selection_evidence(sess, tuned)
        if ev.confusion is not None:
            self._show_confusion(sess, Confusion.model_validate(ev.confusion))
        sess.model = model
        sess.beats_baseline = ev.beats_baseline
        return FinalOutcome(
            **fitted.fit.model_dump(),
            test=ev.test,
            val=ev.val,
            heldout=ev.heldout,
            test_ece=ev.test_ece,
            per_day=ev.per_day,
            test_confusion=ev.confusion,
        )

    @staticmethod
    def _show_confusion(sess: TrainSession, c: Confusion) -> None:
        """The test confusion matrix as a figure, and for an ordinal task how far its errors land."""
        caption = f"Confusion matrix on the test split ({c.n} rows, opened once; decided at {c.decided_at})"
        plots.confusion(
            sess.figure("confusion.png", caption, "final"), c.counts, c.labels, "Test: true vs predicted"
        )
        if sess.task.problem_type == "ordinal":
            far = c.errors_by_distance()
            wrong = sum(far.values())
            parts = ", ".join(f"{n} {d} rank{'s' if d > 1 else ''} off" for d, n in far.items() if n)
            sess.decide(
                "final",
                f"ordinal errors on test: {wrong} of {c.n} rows wrong" + (f": {parts}" if parts else ""),
                {"errors_by_distance": far, "n": c.n, "evaluated_on": "test"},
            )


@dataclass
class Fitted:
    """The final fit's record and the deployed model's probabilities on validation and the held-out
    rows (which the evaluation scores; arrays never go into the record)."""

    fit: FinalFit
    val_proba: np.ndarray
    heldout_proba: np.ndarray


def final_fit(sess: TrainSession, tuned: TunedConfig) -> tuple[TrainedModel, Fitted]:
    """Retrain the chosen configuration on train + the validation rows not held out (chosen epochs,
    optionally several seeds), then fit the temperature and threshold on the deployed model's own
    predictions for the held-out rows (k-fold protocols: the cross-validation's out-of-fold
    predictions, which already exist). See :mod:`closedloop.stages.train.heldout`."""
    cfg, eng, task = sess.cfg, sess.engine, sess.task
    plan = sess.heldout
    mp = tuned.model_params
    epochs = max(1, int(tuned.best_epoch))
    hp = HParams.from_dict(tuned.hparams).with_(epochs=epochs, patience=None)
    val_logits = sess.load_logits(tuned.val_logits_file)  # the selected configuration, before the refit
    hold = sess.val.subset(np.asarray(plan.indices, dtype=np.int64))
    fit_idx = fit_rows(plan)
    fit_data = TensorSet.concat(sess.train, sess.val.subset(fit_idx)) if len(fit_idx) else sess.train
    if cfg.final_fit == "train":
        fitted_on = "train"
    elif len(fit_idx) == 0:
        fitted_on = "train (validation too small to split)"
    elif len(fit_idx) == plan.n_val:
        fitted_on = "train+val"
    else:
        fitted_on = f"train + {len(fit_idx)} of {plan.n_val} validation samples"
    sess.decide("final", plan.note, {"n_heldout": len(plan.indices), "n_val": plan.n_val, "fit": fitted_on})
    selected, trained = epochs, float(epochs)
    # the final fit has its share of the budget: fewer members, then fewer epochs, when time is short
    n_fit = len(sess.train if cfg.final_fit == "train" else fit_data)
    size = plan_final(sess, epochs, cfg.final_seeds, n_fit, hp.batch_size)
    epochs, hp, deadline = size.epochs, hp.with_(epochs=size.epochs), fit_deadline(sess)
    nets, histories = [], {}
    ranks, n_sync = cfg.final.nproc, 0
    for s in range(size.members):
        if s > 0 and time.time() > deadline:
            sess.decide("final", f"time budget spent: the ensemble keeps {s} of {size.members} members", {})
            break
        if s == 1 and _same_tree_members(nets[0]):
            sess.decide(
                "final",
                f"final_seeds: {size.members} - the tuned tree samples every row and column "
                "(bagging_fraction and feature_fraction 1.0), so other seeds would fit the same trees: one member",
                {"members": 1, "final_seeds": size.members},
            )
            break
        seed = sess.seed("final", "member", s)
        net = sess.build(mp, seed)
        ckpt, label = sess.work / f"final_seed{s}.pt", f"train/final/member{s}"
        on = (
            {"train": sess.train, "val": sess.val}
            if cfg.final_fit == "train"
            else {"train": fit_data, "val": None}
        )
        how: dict[str, Any] = {"seed": seed, "checkpoint": ckpt, "deadline": deadline, "label": label}
        if cfg.final_fit != "train":
            how["restore_best"] = False
        if ranks > 1:  # the same fit on several ranks (:mod:`..data_parallel`); rank 0's weights come back
            out = sess.work / f"final_seed{s}_ranks.pt"
            net, res, n_sync = fit_on_ranks(
                net,
                on | how,
                eng.fit,
                hp,
                nproc=ranks,
                out=out,
                threads=cfg.threads,
                device=str(eng.device),
                start=cfg.final.start,
            )
        else:
            if s == 0:  # the first member re-plans its epochs as it runs; the others train as many
                how["replan"] = replanner(sess, size, deadline, size.members)
            res = eng.fit(net, on["train"], on["val"], hp, **how)
        if s == 0 and res.epochs_planned is not None and res.epochs_planned != epochs:
            _note_replans(sess, size, epochs, res)
            epochs, hp = res.epochs_planned, hp.with_(epochs=res.epochs_planned)
        sess.note_cut("final", f"member {s}'s fit", res, epochs)
        if s == 0:  # the deployed network's training (the other members train as many epochs or fewer)
            trained = float(res.epochs_done) if res.stopped == "time_budget" else float(epochs)
        histories[f"final seed {s}"] = res.history
        nets.append(net.cpu().eval())
    if ranks > 1:
        backend, start = backend_for(str(eng.device)), start_method_for(cfg.final.start, str(eng.device))
        sess.decide(
            "final",
            f"the final fit ran data-parallel on {ranks} ranks (torch.distributed, {backend}, ranks "
            f"started by {start}; per-rank batch {max(1, hp.batch_size // ranks)}, global batch "
            f"{max(1, hp.batch_size // ranks) * ranks}; {n_sync} BatchNorm layer(s) synchronized) for "
            f"each of {len(nets)} member(s)",
            {"ranks": ranks, "backend": backend, "start": start, "sync_batchnorm_layers": n_sync},
        )
    sess.curves.update(histories)
    plots.curves(
        sess.figure("final.png", f"Final fit on {fitted_on} ({epochs} epochs): training loss", "final"),
        histories,
        "Final fit",
    )
    if len(nets) > 1 and all(hasattr(n, "lgb_booster") for n in nets):  # trees: one booster of all members
        from closedloop.models.families.lgbm import average_members

        spec, network = ModelSpec(family=sess.family, params=mp), average_members(nets)
        sess.decide(
            "final",
            f"the seed ensemble of {len(nets)} tree members is one booster of all their trees with leaf "
            "values divided by the member count: its raw scores are the members' mean",
            {"members": len(nets), "leaves": network.n_leaves()},
        )
    elif len(nets) > 1:
        from closedloop.models.families.ensemble import EnsembleNet

        spec = ModelSpec(
            family="ensemble", params={"member": {"family": sess.family, "params": mp}, "n": len(nets)}
        )
        network: torch.nn.Module = EnsembleNet(nets, sess.n_logits)
    else:
        spec = ModelSpec(family=sess.family, params=mp)
        network = nets[0]
    # the deployed model (ensemble included) scores the rows it did not train on
    hold_logits = np.asarray(eng.predict_logits(network.to(eng.device), hold)).reshape(len(hold), -1)
    network = eng.fold_target_units(
        network.cpu().eval()
    )  # regression: the saved model predicts in target units
    if tuned.calibration_logits_file and tuned.calibration_labels_file:  # k-fold: out-of-fold predictions
        cal_on = "out_of_fold"
        cal_logits = sess.load_logits(tuned.calibration_logits_file)
        cal_y = sess.load_logits(tuned.calibration_labels_file)
    elif plan.evaluated_on in ("calibration", "validation"):
        cal_on = plan.evaluated_on
        cal_logits, cal_y = hold_logits, hold.y_np
    else:  # nothing held out (holdout_fraction 0): the selected configuration's pre-refit predictions
        cal_on = "validation_pre_refit"
        cal_logits, cal_y = val_logits, sess.val.y_np
    temperature, bias, calibrated = _calibrate(network, cal_logits, cal_y, task.problem_type, cfg.calibration)
    if calibrated == "bias+temperature":
        val_logits = np.asarray(val_logits).reshape(len(val_logits), -1) + bias
        cal_logits = np.asarray(cal_logits).reshape(len(cal_logits), -1) + bias
        hold_logits = hold_logits + bias
    threshold, why = None, ""
    p_val = logits_to_proba(val_logits, task.problem_type, temperature)
    p_hold = logits_to_proba(hold_logits, task.problem_type, temperature)
    if task.problem_type == "binary":
        b = task.business
        threshold, why = choose_threshold(
            cal_y,
            logits_to_proba(cal_logits, task.problem_type, temperature)[:, 1],
            rule=cfg.threshold,
            cost_fp=b.cost_false_positive,
            cost_fn=b.cost_false_negative,
            prevalence=b.prevalence,
        )
        why = why.replace("on validation", f"on {CAL_TEXT[cal_on]}")
    evaluated_on = {
        "temperature": cal_on,
        "val": "validation" if cfg.final_fit == "train" else "validation_pre_refit",
        "heldout": plan.evaluated_on,
        "test": "test",
    }
    if threshold is not None:
        evaluated_on["threshold"] = cal_on
    sess.decide(
        "final",
        f"trained the chosen configuration on {fitted_on} for {epochs} epoch(s) "
        f"({len(nets)} seed(s)); "
        + (
            "no calibration: a regression model's predictions are numbers, not probabilities"
            if task.problem_type == "regression"
            else _calibration_text(calibrated, temperature, bias, cal_on, len(cal_y))
        )
        + (f"; operating threshold {threshold:.3f}: {why}" if threshold is not None else ""),
        {
            "epochs": epochs,
            "calibration": calibrated,
            "temperature": temperature,
            "logit_bias": [float(b) for b in bias],
            "threshold": threshold,
            "seeds": len(nets),
            "evaluated_on": evaluated_on,
        },
    )
    cut = trained < selected
    if cut:  # never silently: the deployed model is less trained than the configuration selected
        sess.decide(
            "final",
            f"WARNING: the deployed model trained {trained:.2g} of the {selected} epoch(s) its "
            "configuration was selected with: the time budget cut its final fit, so its test figures "
            "are those of a less-trained model than the one validated; a larger budget_minutes trains "
            "it fully",
            {"selected_epochs": selected, "epochs_trained": round(trained, 2)},
        )
    model = TrainedModel(
        spec=spec,
        network=network,
        preprocessing=sess.pre,
        problem_type=task.problem_type,
        n_outputs=task.n_outputs,
        label_names=list(task.label_names),
        temperature=temperature,
        threshold=threshold,
        info={
            "trained_on": cfg.final_fit,
            "fitted_on": fitted_on,
            "epochs": epochs,
            "hparams": hp.as_dict(),
            "seeds": len(nets),
            "ranks": ranks,
            "threshold_rule": why,
            "calibration": calibrated,
            "calibrated_on": cal_on,
            "logit_bias": [float(b) for b in bias],
            INFO_KEY: plan.model_dump(),
        },
    )
    fit = FinalFit(
        epochs=epochs,
        fitted_on=fitted_on,
        n_heldout=len(plan.indices),
        ranks=ranks,
        calibration=calibrated,
        temperature=temperature,
        threshold=threshold,
        threshold_rule=why,
        evaluated_on=evaluated_on,
        selected_epochs=selected,
        epochs_trained=round(trained, 2) if cut else None,
        deadline_extended_s=round(over, 1) if (over := sess.last_phase_overrun()) > 0 else None,
    )
    return model, Fitted(fit=fit, val_proba=p_val, heldout_proba=p_hold)


CAL_TEXT = {
    "calibration": "the held-out calibration split (deployed model)",
    "validation": "validation (deployed model, fitted on train only)",
    "out_of_fold": "out-of-fold predictions of the k-fold cross-validation",
    "validation_pre_refit": "validation predictions of the selected configuration before the refit",
}


def _calibrate(
    network: torch.nn.Module, val_logits: np.ndarray, y_val: np.ndarray, problem_type: str, method: str
) -> tuple[float, np.ndarray, str]:
    """Fit the calibration on validation logits; fold a logit offset into ``network``'s head.
    Returns (temperature, offset, method actually applied)."""
    k = int(np.asarray(val_logits).reshape(len(val_logits), -1).shape[1])
    if method == "bias+temperature" and problem_type != "regression":
        temperature, bias = fit_bias_temperature(val_logits, y_val, problem_type)
        if fold_logit_bias(network, bias):
            return temperature, bias, "bias+temperature"
    return fit_temperature(val_logits, y_val, problem_type), np.zeros(k), "temperature"


def _calibration_text(method: str, temperature: float, bias: np.ndarray, on: str, n: int) -> str:
    where = f"{CAL_TEXT[on]}, {n} samples"
    if method == "bias+temperature":
        offs = ", ".join(f"{b:+.3f}" for b in bias)
        return f"temperature {temperature:.3f} and logit offset [{offs}] fitted on {where} (bias-corrected)"
    return f"temperature {temperature:.3f} fitted on {where}"


def _note_replans(sess: TrainSession, size: FinalPlan, planned: int, res: FitResult) -> None:
    """Say how the first member's fit re-planned its epochs as it ran (only a fit the budget binds
    re-plans, so the seconds quoted never enter the log of a run it does not bind)."""
    steps = " -> ".join([str(planned)] + [f"{n} (after {e:g} epochs)" for e, n in res.replans])
    sess.decide(
        "final",
        f"member 0's epochs re-planned as it ran, from its own epochs' wall time "
        f"(~{sess.ctx.timings.get(FIT_EPOCH_SECONDS, 0.0):.2g} s per epoch at the latest re-plan, "
        f"planned at ~{size.seconds_per_epoch or 0.0:.2g} s): {steps} epochs; the "
        "learning-rate schedule's remaining part was spread over the epochs left at each re-plan",
        {"planned": planned, "replans": [list(r) for r in res.replans]},
    )


def _same_tree_members(net: torch.nn.Module) -> bool:
    """A tree member whose seed changes nothing: LightGBM's seed only drives row and column sampling."""
    params = getattr(net, "params", None)
    return (
        hasattr(net, "lgb_booster")
        and isinstance(params, dict)
        and params.get("feature_fraction", 1.0) >= 1.0
        and params.get("bagging_fraction", 1.0) >= 1.0
    )
