"""Phase 4: regularize and tune - an Optuna search over the knobs of :mod:`..knobs` on validation, with
successive-halving pruning, inside the phase's time budget; then the knob ablation (:mod:`.ablation`).
Resumable: finished trials live in the study database (:mod:`.study`)."""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

import numpy as np

from closedloop.core.errors import StageFailedError
from closedloop.models.trained import logits_to_proba
from closedloop.stages.train import knobs as K
from closedloop.stages.train import plots
from closedloop.stages.train.engine import NonFiniteLossError, past_deadline
from closedloop.stages.train.final_plan import note_borrowed, tune_deadline
from closedloop.stages.train.outcomes import ScaleUpOutcome, Skipped, TrialRow, TuneOutcome
from closedloop.stages.train.phases import joining as J
from closedloop.stages.train.phases import study as S
from closedloop.stages.train.phases import workers as W
from closedloop.stages.train.phases.ablation import knob_ablation
from closedloop.stages.train.phases.base import Phase
from closedloop.stages.train.phases.beat_baseline import EPOCH_SECONDS
from closedloop.stages.train.phases.scale_up import rung_seconds, rung_step_seconds
from closedloop.stages.train.phases.space import search_space, split_params, unregularized
from closedloop.stages.train.session import (
    TRIAL_STEP_SECONDS,
    TrainSession,
    flat,
    rung_logits_file,
    selection_value,
    trial_logits_file,
)


class Tune(Phase):
    name = "tune"
    budget_share = 0.40
    outcome = TuneOutcome

    def run(self, sess: TrainSession) -> TuneOutcome:
        ladder = sess.get(ScaleUpOutcome)
        if ladder is None:
            raise StageFailedError("train: the tune phase needs the scale_up phase's outcome")
        path = sess.work / rung_logits_file(ladder.chosen)
        return tune(sess, ladder.params, np.load(path) if path.is_file() else None)

    def report(self, outcome: Any, timings: dict[str, float]) -> list[Any]:
        from closedloop.report.blocks import KeyValues, Paragraph, Table

        t = outcome
        body: list[Any] = [
            KeyValues(
                {k: (round(v, 5) if isinstance(v, float) else v) for k, v in t["knobs"].items()},
                title="Chosen values",
            )
        ]
        if t.get("importance"):
            body.append(
                KeyValues({k: round(v, 3) for k, v in t["importance"].items()}, title="Knob importance")
            )
        if t.get("knob_gains"):
            body.append(Table(knob_gain_rows(t["knob_gains"]), title=KNOB_GAINS_TITLE))
        not_ablated: dict[str, list[str]] = {}
        for g in t.get("knob_gains_skipped", []):
            not_ablated.setdefault(g["reason"], []).append(g["knob"])
        body.extend(Paragraph(f"Not ablated ({why}): {', '.join(ks)}.") for why, ks in not_ablated.items())
        body.append(
            Paragraph(
                f"{t['n_trials']} trials: {t['n_complete']} complete, {t['n_pruned']} pruned, {t['n_failed']} failed."
                + (
                    f" The pruner stopped no trial before {t['prune_startup']} had completed."
                    if t.get("prune_startup")
                    else ""
                )
            )
        )
        return body


def trial_seed(sess: TrainSession, k: int) -> int:
    """Weights, batch order and augmentation of tuning trial ``k`` (0-based, in running order)."""
    return sess.seed("tune", "trial", k)


def _epoch_seconds(sess: TrainSession, ladder: ScaleUpOutcome | None) -> float:
    """Seconds per epoch of the network the trials train (sizes the smallest useful trial; a budget
    input, not an artifact): the chosen rung's measured seconds per training step times the steps of
    an epoch; without one, the default model's epoch (a smaller network, measured earlier, first steps
    included: under load it can read several times too slow)."""
    t = sess.ctx.timings
    if ladder is not None and ladder.rungs and t.get(rung_step_seconds(ladder.rung.rung)):
        n, bs = len(sess.train), min(sess.base_hp.batch_size, len(sess.train))
        return max(float(t[rung_step_seconds(ladder.rung.rung)]) * max(1, n // max(bs, 1)), 0.05)
    epoch_s = max(t.get(EPOCH_SECONDS, 1.0), 0.05)
    if ladder is not None and ladder.rungs:
        rung_s = t.get(rung_seconds(ladder.rung.rung), 0.0)
        epoch_s = max(epoch_s, rung_s / max(sess.cfg.ladder_epochs or 1, 1))
    return epoch_s


def _trials(study: Any) -> list[Any]:
    """The study's trials to read, not to change: without the deep copy ``study.trials`` makes of every
    trial (their epoch histories included) on each call, which the trial loop makes twice per trial."""
    return study.get_trials(deepcopy=False)


def _final_epochs(study: Any, ladder: ScaleUpOutcome | None) -> int:
    """The epochs the final fit trains if tuning ended now: the best complete trial's best epoch, or
    the capacity rung's when none is complete or the rung scores better (``choose`` keeps it then)."""
    import optuna

    complete = [t for t in _trials(study) if t.state == optuna.trial.TrialState.COMPLETE]
    rung = ladder.rung if ladder is not None and ladder.rungs else None
    if complete:
        best = max(complete, key=lambda t: (t.value, -t.number))
        if rung is None or rung.score is None or rung.score <= best.value:
            return max(1, int(best.user_attrs.get("best_epoch") or 1))
    return max(1, int(rung.best_epoch)) if rung is not None else 1


def _extended_txt(sess: TrainSession, planned: int, best_epoch: int) -> str:
    """A tree trial that boosted past its planned epochs (``train.tree_extend``) says so."""
    if best_epoch <= planned:
        return ""
    return (
        f", past its planned {planned}: still improving, it boosted on (tree_extend {sess.cfg.tree_extend})"
    )


def tune(sess: TrainSession, model_params: dict[str, Any], ladder_logits: np.ndarray | None) -> TuneOutcome:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg, eng, task = sess.cfg, sess.engine, sess.task
    max_epochs = cfg.max_epochs or 1
    space = search_space(sess, model_params)
    study = S.study_for(sess)
    if startup := S.prune_startup(sess):
        why = {"startup": "the sampler's random start-up trials", "all": "every trial: no pruning"}.get(
            str(cfg.prune_startup), "the configured count"
        )
        sess.decide(
            "tune",
            f"the pruner stops no trial before {startup} have completed (prune_startup: {cfg.prune_startup}; "
            f"{why}); later trials are judged against all of them at each rung",
            {"prune_startup": startup},
        )
    ladder = sess.get(ScaleUpOutcome)
    deadline = tune_deadline(sess, _final_epochs(study, ladder))
    epoch_s = _epoch_seconds(sess, ladder)
    min_epochs = max(2, max_epochs // 6)
    n_trials = cfg.n_trials or 1
    remaining = deadline - time.time()
    forced_epochs: int | None = None
    if remaining < epoch_s * min_epochs and not [t for t in _trials(study) if t.state.is_finished()]:
        n_trials = 1
        space = {k: v for k, v in space.items() if k != "epochs"}
        # no seconds in the decision: it enters the evaluation artifact (the numbers are in ctx.timings)
        sess.decide(
            "tune",
            f"the time budget left for tuning is too small for one trial of {min_epochs} epochs: running the "
            f"minimum - one trial with the default regularization for {min_epochs} epochs",
            {"min_epochs": min_epochs},
        )
        sess.note_time("tune seconds left at start", max(remaining, 0.0))
        study.enqueue_trial(K.default_trial(space, capacity=model_params))
        forced_epochs = min_epochs
    elif not study.trials:
        study.enqueue_trial(
            K.default_trial(space, lr=sess.base_hp.lr, max_epochs=max_epochs, capacity=model_params)
        )
    if S.in_workers(sess):  # the trials' deadline is set once: the final's epochs bounded by the most
        deadline = tune_deadline(sess, forced_epochs or max_epochs)  # a trial can train
        failures = tune_in_workers(sess, study, model_params, space, n_trials, forced_epochs, deadline)
        return choose(sess, study, model_params, ladder_logits, space, forced_epochs, failures, deadline)
    # trials finished before a crash were recorded in the ledger by the interrupted run: count them
    sess.n_configs += len([t for t in _trials(study) if t.state.is_finished()])
    failures: list[dict[str, Any]] = []
    ran_until = sess.deadline("tune")  # the latest deadline a trial ran under
    while True:
        done = [t for t in _trials(study) if t.state.is_finished()]
        if len(done) >= n_trials:
            break
        # tuning may run on the part of the final's share that the final fit (the best trial's
        # epochs so far) is not expected to need (final_plan.tune_deadline)
        deadline = tune_deadline(sess, _final_epochs(study, ladder))
        # a trial costs at least a step and a validation pass: none is started that would end late
        if done and past_deadline(time.time(), deadline, sess.least_fit_seconds()):
            sess.decide(
                "tune", f"tuning time budget spent after {len(done)} trial(s) (of {n_trials} planned)", {}
            )
            break
        k = len(done)
        study.sampler = S.seeded_sampler(sess, k)
        trial = study.ask()
        knobs = K.suggest(trial, space)
        if forced_epochs is not None:
            knobs["epochs"] = forced_epochs
        mp, hp = split_params(sess, model_params, knobs)
        if not done:  # no best trial yet: this one's epochs are the final's
            deadline = tune_deadline(sess, hp.epochs)
        ran_until = max(ran_until, deadline)
        seed = trial_seed(sess, k)
        try:
            net = sess.build(mp, seed)

            def report(epoch: int, rec: dict[str, float], trial: Any = trial) -> None:
                ev = {m.removeprefix("val_"): v for m, v in rec.items() if m.startswith("val_")}
                trial.report(eng.selection_score(ev), epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

            res = eng.fit(
                net,
                sess.train,
                sess.val,
                hp,
                seed=seed,
                on_epoch=report,
                deadline=deadline,
                label=f"train/tune/trial{k}",
            )
        except optuna.TrialPruned:
            vals = S.intermediate_values(study, trial)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            best_v = selection_value(eng, max(vals)) if vals else None
            sess.record(
                f"tuning trial {k} (pruned)",
                {"model": mp, **flat(knobs)},
                {task.primary_metric: best_v, "status": "pruned"},
            )
            continue
        except NonFiniteLossError as exc:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            failures.append({"trial": k, "knobs": knobs, "reason": str(exc)})
            sess.decide("tune", f"trial {k} stopped: {exc}; recorded and continuing", {"knobs": knobs})
            sess.record(
                f"tuning trial {k} (failed)",
                {"model": mp, **flat(knobs)},
                {task.primary_metric: None, "status": "non-finite loss"},
            )
            continue
        trial.set_user_attr("best_epoch", res.best_epoch)
        trial.set_user_attr("stopped", res.stopped)
        if res.step_median is not None and res.steps_timed:  # the chosen network's step now (final_plan)
            sess.note_time(TRIAL_STEP_SECONDS, res.step_median)
        sess.note_fit(res)
        sess.note_cut("tune", f"trial {k}", res, hp.epochs)
        trial.set_user_attr("history", res.history)
        trial.set_user_attr("k", k)
        sess.save_logits(trial_logits_file(trial.number), res.val_logits)
        study.tell(trial, res.best_score)
        sess.record(
            f"tuning trial {k}",
            {"model": mp, **flat(knobs)},
            {
                task.primary_metric: selection_value(eng, res.best_score),
                "best_epoch": res.best_epoch,
                "status": "complete",
            },
        )
    return choose(sess, study, model_params, ladder_logits, space, forced_epochs, failures, ran_until)


def tune_in_workers(
    sess: TrainSession,
    study: Any,
    model_params: dict[str, Any],
    space: K.Space,
    n_trials: int,
    forced_epochs: int | None,
    deadline: float,
) -> list[dict[str, Any]]:
    """Run the trials in ``cfg.workers`` forked processes (:mod:`.workers`), joined by any
    ``closedloop worker`` that matches the study's fingerprint (:mod:`.joining`); then write the
    validation ledger from the study: each counted trial once, whoever ran it (a resumed run writes it
    whole)."""
    import optuna

    cfg = sess.cfg
    plan = J.TrialPlan(
        model_params=model_params,
        space=space,
        n_trials=n_trials,
        forced_epochs=forced_epochs,
        deadline=deadline,
        heartbeat_seconds=cfg.heartbeat_seconds if cfg.storage and not W.is_journal(cfg.storage) else None,
    )
    try:
        J.publish(study, J.fingerprint(sess), plan)

        def run_trials() -> None:
            own = S.open_study(sess, study.study_name, sess.ctx.seed)  # a connection of its own
            worker_trials(sess, own, plan, keep_logits_in_study=False)

        deaths = W.run_workers(study, cfg.workers, n_trials, run_trials, sess.ctx.logger, cfg.storage)
        J.close(study)
        joined = J.collect_logits(sess, study)
        trials = sorted(study.get_trials(), key=lambda t: t.number)
    except StageFailedError:
        raise
    except Exception as exc:  # a storage call failed: say so plainly when the database is gone
        W.storage_lost(cfg.storage, exc)
        raise
    killed = [t.number for t in trials if t.state == optuna.trial.TrialState.FAIL and not W.counted(t)]
    where = W.redact(cfg.storage) if cfg.storage else "the journal file in work/"
    sess.decide(
        "tune",
        f"ran the trials in {cfg.workers} worker process(es) on one study ({where}); {deaths} worker(s) "
        f"died; {joined} trial(s) came from joined `closedloop worker` processes; {len(killed)} "
        "interrupted or surplus trial(s) were not counted",
        {"workers": cfg.workers, "worker_deaths": deaths, "joined_trials": joined, "not_counted": killed},
    )
    failures: list[dict[str, Any]] = []
    task = sess.task
    for t in trials:
        if not W.counted(t):
            continue
        mp, _ = split_params(sess, model_params, dict(t.params))
        params = {"model": mp, **flat(dict(t.params))}
        if t.state == optuna.trial.TrialState.COMPLETE:
            metrics = {
                task.primary_metric: selection_value(sess.engine, t.value),
                "best_epoch": t.user_attrs.get("best_epoch"),
                "status": "complete",
            }
            sess.record(f"tuning trial {t.number}", params, metrics)
        elif t.state == optuna.trial.TrialState.PRUNED:
            vals = list(t.intermediate_values.values())
            best_v = selection_value(sess.engine, max(vals)) if vals else None
            sess.record(
                f"tuning trial {t.number} (pruned)", params, {task.primary_metric: best_v, "status": "pruned"}
            )
        else:
            reason = str(t.user_attrs.get(W.FAILURE))
            failures.append({"trial": t.number, "knobs": dict(t.params), "reason": reason})
            sess.record(
                f"tuning trial {t.number} (failed)", params, {task.primary_metric: None, "status": reason}
            )
    return failures


class _Surplus(Exception):
    """Another worker asked at the same moment and took the last slot: this trial is not run."""


POLL_SECONDS = 0.5


def worker_trials(
    sess: TrainSession, study: Any, plan: J.TrialPlan, *, keep_logits_in_study: bool
) -> list[int]:
    """One worker's loop (a fork of the leader or a joined ``closedloop worker``): run one trial at a
    time through ``study.optimize`` (Optuna's heartbeat runs during it on an RDB) until the study holds
    ``plan.n_trials`` counted trials; while the last ones run elsewhere, wait, failing any whose process
    died (:func:`.workers.fail_lost`) so their retry is run here. Writes no ledger and no report (the
    leader does); seeds come from the trial's number (a retry: the number it retries). Returns the
    numbers of the trials this process finished."""
    import optuna

    st = optuna.trial.TrialState
    eng, space, n_trials = sess.engine, plan.search_space(), plan.n_trials
    ran: list[int] = []
    current: list[int] = []

    def objective(trial: Any) -> float:
        trial.set_user_attr(W.WORKER, W.worker_id(trial.number))  # failed and retried if this process dies
        current.append(trial.number)
        trial.set_user_attr("pid", os.getpid())
        frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
        if W.taken([t for n, t in frozen.items() if n < trial.number]) >= n_trials:
            raise _Surplus()
        knobs = K.suggest(trial, space)
        if plan.forced_epochs is not None:
            knobs["epochs"] = plan.forced_epochs
        mp, hp = split_params(sess, plan.model_params, knobs)
        seed = trial_seed(sess, W.origin(frozen[trial.number]))

        def report(epoch: int, rec: dict[str, float]) -> None:
            ev = {m.removeprefix("val_"): v for m, v in rec.items() if m.startswith("val_")}
            trial.report(eng.selection_score(ev), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            net = sess.build(mp, seed)
            res = eng.fit(
                net, sess.train, sess.val, hp, seed=seed, on_epoch=report, deadline=plan.deadline,
                label=f"train/tune/trial{trial.number}",
            )  # fmt: skip
        except NonFiniteLossError as exc:
            trial.set_user_attr(W.FAILURE, f"non-finite loss: {exc}")  # counted: the model's own failure
            raise
        trial.set_user_attr("best_epoch", res.best_epoch)
        trial.set_user_attr("stopped", res.stopped)
        trial.set_user_attr("history", res.history)
        trial.set_user_attr("k", trial.number)
        if keep_logits_in_study:  # no shared work/ folder: the leader copies them out of the study
            trial.set_user_attr(J.LOGITS_ATTR, J.encode_logits(res.val_logits))
        else:
            sess.save_logits(trial_logits_file(trial.number), res.val_logits)
        return float(res.best_score)

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a surplus trial is not worth a warning
    while True:
        W.fail_lost(study)
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if W.counted(t)]
        if len(done) >= n_trials or time.time() > plan.deadline + (0 if done else 3600):
            return ran
        waiting = [t for t in trials if t.state == st.WAITING]
        if not waiting and W.taken(trials) >= n_trials:
            time.sleep(POLL_SECONDS)  # the last trials run elsewhere: finish them if their process dies
            continue
        study.sampler = S.seeded_sampler(sess, len(trials))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna: "heartbeat ... with Study.optimize" is what this is
            study.optimize(objective, n_trials=1, catch=(_Surplus, NonFiniteLossError), gc_after_trial=False)
        if current:
            mine = current.pop()
            if any(W.counted(t) for t in study.get_trials(deepcopy=False) if t.number == mine):
                ran.append(mine)


def choose(
    sess: TrainSession,
    study: Any,
    model_params: dict[str, Any],
    ladder_logits: np.ndarray | None,
    space: K.Space,
    forced_epochs: int | None,
    failures: list[dict[str, Any]],
    deadline: float,
) -> TuneOutcome:
    """Pick the best complete trial (or keep the unregularized rung when no trial beats it), with its
    evidence: figures, knob importance, the gain over the rung and the knob ablation."""
    import optuna

    cfg, eng, task = sess.cfg, sess.engine, sess.task
    complete_state = optuna.trial.TrialState.COMPLETE
    trials = study.trials  # one copy for the whole choice
    complete = [t for t in trials if t.state == complete_state]
    if not complete:
        raise StageFailedError(
            "train: no tuning trial finished (all pruned or failed: "
            + "; ".join(f["reason"] for f in failures[:3])
            + "). Lower the learning rate range or check the data."
        )
    best = max(complete, key=lambda t: (t.value, -t.number))
    knobs = dict(best.params)
    if forced_epochs is not None:
        knobs["epochs"] = forced_epochs
    mp, hp = split_params(sess, model_params, knobs)
    best_logits = sess.load_logits(trial_logits_file(best.number))
    values = [selection_value(eng, t.value) if t.state == complete_state else None for t in trials]
    plots.trials(
        sess.figure("trials.png", "Validation score of each tuning trial", "tune"),
        values,
        task.primary_metric,
    )
    best_hist = best.user_attrs.get("history", [])
    sess.curves["best trial"] = best_hist
    plots.curves(
        sess.figure("best_trial.png", "Best tuning trial: train/val loss and validation metric", "tune"),
        {"best trial": best_hist},
        "Best trial",
        eng.metric,
    )
    importance = _importance(sess, study, complete)
    gain = _gain(sess, best_logits, ladder_logits)
    n_done = len([t for t in trials if t.state.is_finished()])
    n_pruned = len([t for t in trials if t.state == optuna.trial.TrialState.PRUNED])
    chosen_value = selection_value(eng, best.value)
    logits_file = trial_logits_file(best.number)
    best_epoch = int(best.user_attrs.get("best_epoch") or hp.epochs)
    ladder = sess.get(ScaleUpOutcome)
    rung = ladder.rung if ladder is not None and ladder.rungs else None
    fallback = (
        rung is not None and rung.score is not None and rung.score > best.value and ladder_logits is not None
    )
    knob_gains: dict[str, Any] = {}
    skipped: list[Skipped] = []
    if fallback and rung is not None and ladder is not None:
        # regularization did not help on validation: keep the unregularized capacity rung, say so
        sess.decide(
            "tune",
            f"no tuning trial beat the unregularized capacity rung on validation ({task.primary_metric} "
            f"{rung.val_metric:.4f} vs {chosen_value:.4f}): keeping the rung's configuration",
            {"rung": rung.rung, "best_trial": best.user_attrs.get("k", best.number)},
        )
        knobs = {}
        mp = dict(model_params)
        hp = unregularized(sess, int(rung.best_epoch))
        best_epoch, chosen_value, logits_file = (
            rung.best_epoch,
            rung.val_metric,
            rung_logits_file(ladder.chosen),
        )
        # the kept rung has no tuned value to reset: nothing to ablate
        why = "the unregularized capacity rung was kept: no tuned value to reset"
        skipped = [Skipped(knob=k, reason=why) for k in space] if cfg.ablate_knobs else []
    else:
        deadline = max(deadline, tune_deadline(sess, best_epoch))  # the final's epochs are known now
        knob_gains, skipped = knob_ablation(
            sess,
            model_params,
            knobs,
            space,
            importance,
            best_logits,
            seed=trial_seed(sess, int(best.user_attrs.get("k", best.number))),  # paired: same init
            deadline=deadline,
        )
        gain_txt = (
            f"; against the unregularized capacity rung it changes validation {task.primary_metric} by "
            f"{gain['delta']:+.4f} (95% CI [{gain['ci95'][0]:+.4f}, {gain['ci95'][1]:+.4f}], optimistic: chosen on the same data)"
            if gain and "delta" in gain
            else ""
        )
        sess.decide(
            "tune",
            f"chose trial {best.user_attrs.get('k', best.number)} among {n_done} tuning trials "
            f"({len(complete)} complete, {n_pruned} pruned; "
            f"validation {task.primary_metric} {chosen_value:.4f}, best epoch {best_epoch}"
            + _extended_txt(sess, hp.epochs, best_epoch)
            + ")"
            + gain_txt,
            {"knobs": knobs, "importance": importance},
        )
    note_borrowed(sess, int(best_epoch), deadline)
    return TuneOutcome(
        model_params=mp,
        hparams=hp.as_dict(),
        knobs=knobs,
        best_epoch=best_epoch,
        val_metric=chosen_value,
        val_logits_file=logits_file,
        n_trials=n_done,
        n_complete=len(complete),
        n_pruned=n_pruned,
        prune_startup=S.prune_startup(sess),
        n_failed=len(failures),
        failures=failures,
        importance=importance,
        gain_vs_unregularized=gain,
        knob_gains=knob_gains,
        knob_gains_skipped=skipped,
        trials=[
            TrialRow(
                trial=i,
                state=t.state.name,
                value=values[i],
                params=t.params,
                best_epoch=t.user_attrs.get("best_epoch"),
            )
            for i, t in enumerate(trials)
        ],
        best_trial_number=best.number,
        space={k: d.as_list() for k, d in space.items()},
    )


def _importance(sess: TrainSession, study: Any, complete: list[Any]) -> dict[str, float]:
    """fANOVA knob importance (needs three varied, finished trials)."""
    import optuna

    importance: dict[str, float] = {}
    if len(complete) < 3:
        return importance
    try:
        importance = {
            k: float(v)
            for k, v in optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            ).items()
        }
        plots.importance(sess.figure("importance.png", "Knob importance (fANOVA)", "tune"), importance)
    except Exception as exc:  # importance needs varied, finished trials
        sess.ctx.logger.info("train: knob importance unavailable: %s", exc)
    return importance


def _gain(
    sess: TrainSession, best_logits: np.ndarray, ladder_logits: np.ndarray | None
) -> dict[str, Any] | None:
    """The chosen trial against the unregularized rung on validation (paired; optimistic)."""
    if ladder_logits is None:
        return None
    task = sess.task
    try:
        from closedloop.stats.paired import compare

        return compare(
            task.primary_metric,
            sess.val.y_np,
            logits_to_proba(best_logits, task.problem_type),
            logits_to_proba(ladder_logits, task.problem_type),
            task.problem_type,
            seed=sess.ctx.seed,
            convention=task.metric_convention,
            n_resamples=sess.cfg.n_bootstrap,
            clusters=sess.val_groups,
        ).to_dict()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


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
