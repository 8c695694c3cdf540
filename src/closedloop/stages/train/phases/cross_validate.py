"""Phase 4b: small data - re-rank the best configurations by the task's k-fold protocol on train+val.

A hold-out split of a small dataset is a noisy judge (BreastMNIST's has 78 images), so when the task
chose ``kfold`` / ``repeated_kfold``, the ``cv_candidates`` best configurations on the hold-out split
(plus the unregularized rung) are each trained on k-1 folds of train+val for their chosen epochs and
scored on the held-out fold. The configuration with the best mean out-of-fold metric is kept, and its
out-of-fold logits (averaged over repeats, like the final ensemble averages seeds) calibrate the final
model: every train+val case, predicted by models that did not see it. The candidates are
configurations already counted; their cross-validation scores go into the validation ledger.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from closedloop.core.errors import StageFailedError
from closedloop.core.io import save_npy_atomic, write_text_atomic
from closedloop.core.seeds import derive_seed
from closedloop.models.trained import logits_to_proba
from closedloop.stages.train.engine import HParams, TensorSet
from closedloop.stages.train.outcomes import (
    CrossValidateOutcome,
    CVRow,
    ScaleUpOutcome,
    TunedConfig,
    TuneOutcome,
)
from closedloop.stages.train.phases.base import Phase
from closedloop.stages.train.phases.space import split_params, unregularized
from closedloop.stages.train.session import TrainSession, flat, rung_logits_file, trial_logits_file


class CrossValidate(Phase):
    name = "cross_validate"
    budget_share = 0.0  # shares the tune phase's deadline
    outcome = CrossValidateOutcome
    section = "tune"

    def run(self, sess: TrainSession) -> CrossValidateOutcome:
        tuned = sess.get(TuneOutcome)
        if tuned is None:
            raise StageFailedError("train: cross-validation needs the tune phase's outcome")
        return cross_validate(sess, tuned)

    def report(self, outcome: Any, timings: dict[str, float]) -> list[Any]:
        from closedloop.report.blocks import Table

        if not outcome.get("candidates"):
            return []
        rows = [
            {
                "candidate": r["candidate"],
                "hold-out": r["holdout"],
                "CV mean": round(r["cv_mean"], 4),
                "sd over repeats": r["cv_sd_over_repeats"],
                "epochs": r["epochs"],
            }
            for r in outcome["candidates"]
        ]
        title = f"Cross-validated selection ({outcome['folds']}-fold x {outcome['repeats']} on train+val)"
        return [Table(rows, title=title)]


def cv_splits(
    y: np.ndarray, problem_type: str, folds: int, repeats: int, seed: int, groups: np.ndarray | None = None
) -> list[list[tuple]]:
    """``repeats`` lists of ``folds`` (train_idx, held_out_idx) pairs over ``len(y)`` samples, stratified
    by class for single-label classification; with ``groups``, each group whole in one fold."""
    from sklearn.model_selection import KFold, StratifiedKFold

    from closedloop.data.splits import group_folds

    labels = np.asarray(y).reshape(len(y), -1)
    stratify = problem_type in ("binary", "multiclass", "ordinal")
    out = []
    for r in range(repeats):
        if groups is not None:
            k = min(folds, len(np.unique(groups)))
            out.append(
                group_folds(labels if stratify else labels.astype(float), groups, k, _repeat_seed(seed, r))
            )
        elif stratify:
            cls = labels[:, 0].astype(int)
            counts = np.bincount(cls)
            k = max(2, min(folds, int(counts[counts > 0].min())))  # every fold holds every class
            splitter: Any = StratifiedKFold(n_splits=k, shuffle=True, random_state=_repeat_seed(seed, r))
            out.append(list(splitter.split(np.zeros(len(cls)), cls)))
        else:
            splitter = KFold(n_splits=folds, shuffle=True, random_state=_repeat_seed(seed, r))
            out.append(list(splitter.split(np.zeros(len(labels)))))
    return out


def _repeat_seed(seed: int, repeat: int) -> int:
    return derive_seed(seed, "repeat", repeat) % (1 << 32)  # scikit-learn takes 32-bit seeds


def candidates(sess: TrainSession, tuned: TuneOutcome, n: int) -> list[tuple[str, TunedConfig]]:
    """The hold-out choice first, then the next best complete trials, then the unregularized rung."""
    base = tuned.config()
    cands = [("hold-out choice", base)]
    higher = sess.task.higher_is_better
    ladder = sess.get(ScaleUpOutcome)
    ladder_params = ladder.params if ladder is not None else {}
    trials = [t for t in tuned.trials if t.state == "COMPLETE" and t.value is not None]
    trials.sort(key=lambda t: (-t.value if higher else t.value, t.trial))  # type: ignore[operator]
    for t in trials:
        if len(cands) >= n:
            break
        if base.val_logits_file == trial_logits_file(t.trial):
            continue
        mp, hp = split_params(sess, ladder_params, dict(t.params))
        cands.append(
            (
                f"trial {t.trial}",
                base.model_copy(
                    update={
                        "model_params": mp,
                        "hparams": hp.as_dict(),
                        "knobs": dict(t.params),
                        "best_epoch": int(t.best_epoch or hp.epochs),
                        "val_metric": t.value,
                        "val_logits_file": trial_logits_file(t.trial),
                    }
                ),
            )
        )
    if ladder is not None and ladder.rungs and len(cands) < n and tuned.knobs:
        rung = ladder.rung
        hp = unregularized(sess, int(rung.best_epoch))
        cands.append(
            (
                "unregularized rung",
                base.model_copy(
                    update={
                        "model_params": dict(ladder_params),
                        "hparams": hp.as_dict(),
                        "knobs": {},
                        "best_epoch": int(rung.best_epoch),
                        "val_metric": rung.val_metric,
                        "val_logits_file": rung_logits_file(ladder.chosen),
                    }
                ),
            )
        )
    return cands


def tree_cv(sess: TrainSession) -> bool:
    """Trees on a small table cross-validate whatever the task's protocol (``train.tree_cv_rows``)."""
    from closedloop.models.registry import family_kind

    rows = len(sess.train) + len(sess.val)
    limit = sess.cfg.tree_cv_rows
    return family_kind(sess.family) == "trees" and limit > 0 and len(sess.val) > 0 and rows <= limit


def tree_epochs_cap(sess: TrainSession, cand: TunedConfig) -> int:
    """The epochs a tree candidate is boosted in each fold (its round count is then chosen on the
    out-of-fold score after each): a tuning trial's own ``epochs`` knob, the ladder's epochs for a rung."""
    tuned = int(HParams.from_dict(cand.hparams).epochs)
    rung = int(sess.cfg.ladder_epochs or 1) if not cand.knobs else 0
    return max(1, tuned, rung, int(cand.best_epoch))


def runs_folds(sess: TrainSession) -> bool:
    """Whether this phase trains anything: at least one candidate and a k-fold protocol (or trees on a
    small table, :func:`tree_cv`)."""
    kfold = sess.task.validation.protocol in ("kfold", "repeated_kfold")
    return (kfold or tree_cv(sess)) and (sess.cfg.cv_candidates or 0) >= 1


def cross_validate(sess: TrainSession, tuned: TuneOutcome) -> CrossValidateOutcome:
    from closedloop.stats.metrics import compute_metric

    cfg, eng, task = sess.cfg, sess.engine, sess.task
    proto = task.validation
    n = cfg.cv_candidates or 0
    trees = tree_cv(sess)
    if not runs_folds(sess):
        why = f"protocol {proto.protocol}" if n else "cv_candidates is 0"
        if not n and proto.protocol in ("kfold", "repeated_kfold"):
            # never silently: the task chose k-fold because the hold-out split is small and noisy
            sess.decide(
                "tune",
                f"the task chose the {proto.protocol} protocol, but cv_candidates is 0 (preset "
                f"{cfg.preset}): the configuration is chosen on the {len(sess.val)}-row hold-out "
                "validation split alone, a noisier judge; cv_candidates >= 1 (preset default: 3) "
                "cross-validates the best ones on train+val",
                {"protocol": proto.protocol, "cv_candidates": 0, "n_validation": len(sess.val)},
            )
        return CrossValidateOutcome(tuned=tuned.config(), skipped=why)
    kfold = proto.protocol in ("kfold", "repeated_kfold")
    repeats = proto.repeats if proto.protocol == "repeated_kfold" else 1
    data = TensorSet.concat(sess.train, sess.val)
    y = data.y_np
    groups = sess.groups_train_val()
    splits = cv_splits(
        y, task.problem_type, proto.folds, repeats, sess.seed("cross_validate", "splits"), groups=groups
    )
    folds = len(splits[0])
    if groups is not None:
        sess.decide(
            "tune",
            f"cross-validation folds keep each of the {len(np.unique(groups))} groups whole (data.group): no "
            "group is scored by a model that trained on its other rows",
            {"groups": int(len(np.unique(groups))), "folds": folds},
        )
    deadline = sess.deadline("cross_validate")
    folder = sess.work / "cv"
    folder.mkdir(exist_ok=True)
    sign = 1.0 if task.higher_is_better else -1.0
    rows: list[CVRow] = []
    best: tuple[float, int] | None = None
    cands = candidates(sess, tuned, n)
    for ci, (label, cand) in enumerate(cands):
        cache = folder / f"candidate{ci}.json"
        if cache.is_file():  # scored (and put in the ledger) by an interrupted run
            row = CVRow.model_validate_json(cache.read_text(encoding="utf-8"))
        else:
            if time.time() > deadline and ci > 0:
                sess.decide("tune", f"cross-validation: time budget spent after {ci} candidate(s)", {})
                break
            epochs = tree_epochs_cap(sess, cand) if trees else max(1, int(cand.best_epoch))
            hp = HParams.from_dict(cand.hparams).with_(epochs=epochs, patience=None)
            # (repeats, epochs, rows, logits): a network's out-of-fold logits after its chosen epochs
            # only (one epoch row); a tree's after every epoch, so the rounds are chosen on them
            oof = np.zeros((repeats, epochs if trees else 1, len(data), sess.n_logits))
            for r, fold_list in enumerate(splits):
                for f, (tr_idx, te_idx) in enumerate(fold_list):
                    seed = sess.seed("cross_validate", "candidate", ci, "repeat", r, "fold", f)
                    net = sess.build(cand.model_params, seed)
                    held = data.subset(te_idx)
                    # a tree fold stops once its held-out fold stops improving (lgb.cv's early stopping);
                    # the epochs it did not reach keep its last round
                    eng.fit(
                        net,
                        data.subset(tr_idx),
                        held if trees else None,
                        hp.with_(patience=cfg.patience) if trees else hp,
                        seed=seed,
                        deadline=deadline if trees else None,
                        restore_best=False,
                        label=f"train/cross_validate/candidate{ci}/repeat{r}/fold{f}",
                    )
                    if trees:
                        oof[r, :, te_idx] = eng.logits_by_epoch(net, held, epochs).transpose(1, 0, 2)
                    else:
                        oof[r, 0, te_idx] = eng.predict_logits(net, held).reshape(len(te_idx), -1)
            by_epoch = [
                [
                    compute_metric(
                        task.primary_metric,
                        y,
                        logits_to_proba(oof[r, e], task.problem_type),
                        task.problem_type,
                        convention=task.metric_convention,
                    )
                    for r in range(repeats)
                ]
                for e in range(oof.shape[1])
            ]
            # the best epoch on the mean over repeats (ties: the fewer rounds)
            pick = max(range(len(by_epoch)), key=lambda e: (sign * float(np.mean(by_epoch[e])), -e))
            scores = by_epoch[pick]
            if trees:
                epochs = pick + 1
                hp = hp.with_(epochs=epochs)
            save_npy_atomic(folder / f"candidate{ci}_oof.npy", oof[:, pick].mean(axis=0))
            row = CVRow(
                candidate=label,
                knobs=cand.knobs,
                epochs=int(hp.epochs),
                holdout=cand.val_metric,
                cv_mean=float(np.mean(scores)),
                cv_sd_over_repeats=float(np.std(scores, ddof=1)) if repeats > 1 else None,
                cv_per_repeat=[float(v) for v in scores],
            )
            sess.ctx.record_validation(
                f"cross-validation of the {label} ({folds}-fold x {repeats} on train+val)",
                {"model": cand.model_params, **flat(cand.knobs)},
                {task.primary_metric: row.cv_mean, "status": "cross-validated"},
            )
            write_text_atomic(cache, row.model_dump_json())
        rows.append(row)
        if best is None or sign * row.cv_mean > sign * best[0]:
            best = (row.cv_mean, ci)
    assert best is not None
    save_npy_atomic(folder / "oof_labels.npy", y)
    # trees: the final fit takes the cross-validated round count (the hold-out figures stay the
    # candidate's own, which the family choice and the selection bias compare)
    update: dict[str, Any] = {"best_epoch": rows[best[1]].epochs} if trees else {}
    if kfold:  # a hold-out protocol keeps calibrating on the deployed model's held-out rows
        update |= {
            "calibration_logits_file": f"cv/candidate{best[1]}_oof.npy",
            "calibration_labels_file": "cv/oof_labels.npy",
        }
    chosen = cands[best[1]][1].model_copy(update=update)
    listing = "; ".join(
        f"{r.candidate} {r.cv_mean:.4f}"
        + (f" (sd {r.cv_sd_over_repeats:.4f})" if r.cv_sd_over_repeats is not None else "")
        for r in rows
    )
    kept = "kept the hold-out choice" if best[1] == 0 else f"switched to the {rows[best[1]].candidate}"
    why = (
        f"trees on a table of {len(data):,} rows (<= tree_cv_rows {cfg.tree_cv_rows:,}), each candidate "
        "with the round count of its best pooled out-of-fold score"
        if trees
        else f"task protocol {proto.protocol}"
    )
    calibration = (
        "Calibration uses the chosen configuration's out-of-fold predictions."
        if kfold
        else "Calibration uses the deployed model's held-out rows."
    )
    sess.decide(
        "tune",
        f"cross-validated {len(rows)} candidate(s) on train+val ({folds}-fold x {repeats}, {len(data)} cases; "
        f"{why}): mean out-of-fold {task.primary_metric} {listing}; {kept}"
        + (f" ({rows[best[1]].epochs} epochs)" if trees else "")
        + f". {calibration}",
        {"candidates": [r.model_dump() for r in rows], "folds": folds, "repeats": repeats},
    )
    return CrossValidateOutcome(
        tuned=chosen,
        protocol=proto.protocol,
        folds=folds,
        repeats=repeats,
        candidates=rows,
        chosen=rows[best[1]].candidate,
    )
