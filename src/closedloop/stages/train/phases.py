"""The five phases of overfit-then-regularize training. Each takes the :class:`TrainSession`, logs its
decisions with evidence, writes its figures and returns a JSON-able outcome (cached in ``work/``)."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
import torch

from closedloop.core.errors import StageFailedError
from closedloop.core.io import to_json, write_text_atomic
from closedloop.models.registry import accepts_param
from closedloop.models.trained import logits_to_proba
from closedloop.stages.train import plots
from closedloop.stages.train.engine import HParams, NonFiniteLossError, TensorSet
from closedloop.stages.train.session import TrainSession, selection_value

# ---------------------------------------------------------------------------------------------------
# 1. sanity


def sanity(sess: TrainSession, params: dict[str, Any]) -> dict[str, Any]:
    """Overfit one small batch to (near) zero loss; stop with a diagnosis if the model cannot."""
    cfg, eng = sess.cfg, sess.engine
    rng = np.random.default_rng(sess.ctx.seed)
    idx = rng.permutation(len(sess.train))[: cfg.sanity_batch]
    batch = sess.train.subset(idx)
    net = sess.build(params, sess.ctx.seed)
    net.to(eng.device).train()
    hp = HParams(label_smoothing=0.0, ordinal_loss="ce")
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.sanity_lr, weight_decay=0.0)
    xb = eng.to_input(batch.x, None, None)
    t = eng.soft_targets(batch.y, hp)
    losses: list[float] = []
    target = None
    deadline = sess.deadline("sanity") + 30  # the sanity check is cheap; never skip it for time
    for _ in range(cfg.sanity_steps):
        loss = eng.loss(net(xb), t)
        v = float(loss.detach())
        losses.append(v)
        if target is None:
            target = max(0.05 * v, 0.02) if sess.task.problem_type != "regression" else 0.05 * v
        if not math.isfinite(v) or v <= target or time.time() > deadline:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    plots.sanity(sess.figure("sanity.png", "Training loss on one fixed batch", "sanity"), losses)
    ok = bool(losses and math.isfinite(losses[-1]) and target is not None and min(losses) <= target)
    evidence = {
        "batch_size": len(idx),
        "steps": len(losses),
        "initial_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "target_loss": target,
    }
    if not ok:
        diagnosis = diagnose(sess, net, batch, losses)
        evidence["diagnosis"] = diagnosis
        sess.decide("sanity", "FAILED: the model cannot fit one small batch; stopping", evidence)
        raise StageFailedError(
            f"train: sanity check failed - the model could not overfit a batch of {len(idx)} training examples "
            f"(loss {evidence['initial_loss']:.4g} -> {evidence['final_loss']:.4g} in {len(losses)} steps, "
            f"target {target:.3g}). Diagnosis: {diagnosis}"
        )
    sess.decide(
        "sanity",
        f"the model fits one batch of {len(idx)} (loss {losses[0]:.3g} -> {losses[-1]:.3g} in {len(losses)} steps)",
        evidence,
    )
    return {"ok": True, "losses": losses, **evidence}


def diagnose(sess: TrainSession, net: torch.nn.Module, batch: TensorSet, losses: list[float]) -> str:
    """Name the most likely cause when one batch cannot be fitted."""
    eng = sess.engine
    x = eng.to_input(batch.x, None, None)
    reasons = []
    if losses and not all(math.isfinite(v) for v in losses):
        reasons.append(
            "the loss became non-finite: inputs contain NaN/inf or the learning rate is far too high"
        )
    if float(x.float().std()) < 1e-6:
        reasons.append(
            "every input in the batch is identical after preprocessing (check image loading/normalization)"
        )
    if sess.task.problem_type in ("binary", "multiclass", "ordinal"):
        n_cls = len(np.unique(np.asarray(batch.y_np).reshape(len(batch), -1)[:, 0]))
        if n_cls < 2:
            reasons.append("the batch holds a single class (labels may be constant or mis-read)")
    net.eval()
    with torch.no_grad():
        out = net(x).float()
    if float(out.std(0).max()) < 1e-4:
        reasons.append(
            "the network's outputs do not depend on its input (a model bug: detached features, "
            "a zero/frozen layer, or an output that ignores x)"
        )
    if not any(p.requires_grad for p in net.parameters()):
        reasons.append("the network has no trainable parameters")
    if not reasons:
        reasons.append(
            "the loss decreases too slowly: the model may be too small, the learning rate too low, or the "
            "labels may not match the inputs (check the label column and preprocessing)"
        )
    return "; ".join(reasons)


# ---------------------------------------------------------------------------------------------------
# 2. beat the baseline


def baseline_proba(baseline: Any, data: Any, task: Any, X: Any, on: str) -> np.ndarray:
    """Probabilities of the best baseline refitted ``on`` train or train+val, for inputs ``X``."""
    est = baseline.fit_best(data, task, on=on)
    try:
        return np.asarray(est.predict_proba(X))
    except Exception:
        from closedloop.data.bundle import Split

        return np.asarray(est.predict_proba(Split(X=X, y=np.zeros(len(X))).features()))


def beat_baseline(sess: TrainSession, params: dict[str, Any], baseline: Any) -> dict[str, Any]:
    """Train a small default model; compare it with the best baseline on validation (paired test)."""
    cfg, task = sess.cfg, sess.task
    net = sess.build(params, sess.ctx.seed)
    hp = sess.base_hp.with_(epochs=cfg.baseline_epochs, strength=0.0)
    res = sess.engine.fit(
        net, sess.train, sess.val, hp, seed=sess.ctx.seed, deadline=sess.deadline("beat_baseline")
    )
    sess.curves["default model"] = res.history
    plots.curves(
        sess.figure(
            "beat_baseline.png", "Small default model: train/val loss and validation metric", "beat_baseline"
        ),
        {"default": res.history},
        "Default model",
        sess.engine.metric,
    )
    value = selection_value(sess.engine, res.best_score)
    sess.record(
        "default model (beat the baseline)", {"model": params, **hp.as_dict()}, {task.primary_metric: value}
    )
    np.save(sess.work / "default_val_logits.npy", res.val_logits)
    out: dict[str, Any] = {
        "params": params,
        "val_metric": value,
        "best_epoch": res.best_epoch,
        "seconds": res.seconds,
        "epoch_seconds": res.seconds / max(len(res.history), 1),
        "history": res.history,
    }
    if baseline is None:
        out["comparison"] = None
        sess.decide(
            "beat_baseline",
            "no baseline given to the stage: the default model cannot be compared with one (wire a baseline stage)",
            {"val_" + task.primary_metric: value},
        )
        return out
    try:
        from closedloop.stats.paired import compare

        p_base = baseline_proba(baseline, sess.data, task, sess.data.val.X, on="train")
        p_model = logits_to_proba(res.val_logits, task.problem_type)
        cmp = compare(
            task.primary_metric,
            sess.val.y_np,
            p_model,
            p_base,
            task.problem_type,
            seed=sess.ctx.seed,
            convention=task.metric_convention,
            method="auto",
        ).to_dict()
    except Exception as exc:  # the comparison is evidence, not a reason to stop training
        out["comparison"] = {"error": f"{type(exc).__name__}: {exc}"}
        sess.decide("beat_baseline", f"could not compare with the baseline ({exc})", {})
        return out
    out["comparison"] = cmp
    better = cmp["delta"] > 0 if cmp["higher_is_better"] else cmp["delta"] < 0
    verdict = "beats" if better and cmp["p_one_sided"] < 0.05 else "does not significantly beat"
    sess.decide(
        "beat_baseline",
        f"the small default model {verdict} the best baseline ({baseline.best}) on validation: "
        f"{task.primary_metric} {cmp['value_a']:.3f} vs {cmp['value_b']:.3f} "
        f"(difference {cmp['delta']:+.3f}, 95% CI [{cmp['ci95'][0]:.3f}, {cmp['ci95'][1]:.3f}], "
        f"one-sided p = {cmp['p_one_sided']:.3g})"
        + ("" if verdict == "beats" else "; continuing - capacity and tuning may still close the gap"),
        cmp,
    )
    return out


# ---------------------------------------------------------------------------------------------------
# 3. scale up until it overfits


def overfits(history: list[dict[str, float]]) -> dict[str, Any]:
    """Validation loss turned up (>= 5% above its minimum, minimum not in the last two epochs) while
    training loss kept falling."""
    vl = [r.get("val_loss", math.nan) for r in history]
    tl = [r["train_loss"] for r in history]
    if len(vl) < 3 or not all(math.isfinite(v) for v in vl):
        return {"overfits": False, "val_loss_min_epoch": None}
    i = int(np.argmin(vl))
    turned_up = i < len(vl) - 2 and vl[-1] > vl[i] * 1.05
    train_falls = tl[-1] < tl[i]
    return {
        "overfits": bool(turned_up and train_falls),
        "val_loss_min_epoch": i + 1,
        "val_loss_min": vl[i],
        "val_loss_last": vl[-1],
        "train_loss_at_min": tl[i],
        "train_loss_last": tl[-1],
    }


def scale_up(sess: TrainSession, rungs: list[dict[str, Any]]) -> dict[str, Any]:
    """Grow the model along the ladder, no regularization, until validation loss turns up while
    training loss keeps falling; pick the capacity with the best validation score."""
    cfg, eng = sess.cfg, sess.engine
    hp = sess.base_hp.with_(epochs=cfg.ladder_epochs, strength=0.0, weight_decay=0.0, patience=None)
    rows: list[dict[str, Any]] = []
    runs: dict[str, list[dict[str, float]]] = {}
    deadline = sess.deadline("scale_up")
    for r, params in enumerate(rungs):
        if r > 0 and time.time() > deadline:
            sess.decide(
                "scale_up",
                f"time budget for the ladder spent; stopping before rung {r + 1}",
                {"rung": params},
            )
            break
        net = sess.build(params, sess.ctx.seed)
        n_par = sum(p.numel() for p in net.parameters())
        res = eng.fit(net, sess.train, sess.val, hp, seed=sess.ctx.seed, deadline=deadline if r > 0 else None)
        name = f"rung {r + 1}: " + ", ".join(f"{k}={v}" for k, v in params.items())
        runs[name] = res.history
        sess.curves[name] = res.history
        value = selection_value(eng, res.best_score)
        np.save(sess.work / f"rung_{r}_val_logits.npy", res.val_logits)
        of = overfits(res.history)
        rows.append(
            {
                "rung": r + 1,
                "params": params,
                "n_parameters": n_par,
                "val_metric": value,
                "score": res.best_score,
                "best_epoch": res.best_epoch,
                "seconds": round(res.seconds, 1),
                **of,
            }
        )
        sess.record(
            f"ladder rung {r + 1}", {"model": params, **hp.as_dict()}, {sess.task.primary_metric: value}
        )
        if of["overfits"]:
            sess.decide(
                "scale_up",
                f"rung {r + 1} ({n_par:,} parameters) overfits: validation loss rose from "
                f"{of['val_loss_min']:.3f} (epoch {of['val_loss_min_epoch']}) to {of['val_loss_last']:.3f} while "
                f"training loss fell from {of['train_loss_at_min']:.3f} to {of['train_loss_last']:.3f}; "
                "the ladder stops here",
                rows[-1],
            )
            break
    plots.curves(
        sess.figure(
            "ladder.png", "Capacity ladder: train (dashed) and validation (solid) loss per rung", "scale_up"
        ),
        runs,
        "Capacity ladder",
        eng.metric,
    )
    scores = [row["score"] if row["score"] is not None else -math.inf for row in rows]
    best = int(np.argmax(scores))  # argmax takes the first (smallest) rung on ties
    chosen = rows[best]
    any_over = any(row["overfits"] for row in rows)
    sess.decide(
        "scale_up",
        f"capacity: rung {chosen['rung']} ({chosen['n_parameters']:,} parameters, "
        f"{', '.join(f'{k}={v}' for k, v in chosen['params'].items())}) has the best validation "
        f"{sess.task.primary_metric} ({chosen['val_metric']:.4f}) among {len(rows)} rung(s)"
        + (
            ""
            if any_over
            else "; no rung overfitted within the ladder - a larger ladder or more epochs may help"
        ),
        {"rungs": [{k: v for k, v in row.items() if k != "score"} for row in rows]},
    )
    return {"rungs": rows, "chosen": best, "params": chosen["params"], "any_overfits": any_over}


# ---------------------------------------------------------------------------------------------------
# 4. regularize and tune


def search_space(sess: TrainSession) -> dict[str, tuple[Any, ...]]:
    """Knob -> (kind, low, high[, log]). Only knobs that apply to the task and data."""
    cfg, task = sess.cfg, sess.task
    lr = sess.base_hp.lr
    space: dict[str, tuple[Any, ...]] = {
        "lr": ("float", lr / 10, lr * 3, True),
        "weight_decay": ("float", 1e-5, 0.3, True),
        "dropout": ("float", 0.0, 0.5, False),
        "l1": ("float", 1e-8, 1e-4, True),
        "epochs": ("int", min(cfg.max_epochs, max(2, cfg.max_epochs // 3)), cfg.max_epochs, False),
    }
    if cfg.max_epochs < 2:  # a one-epoch budget leaves nothing to tune about epochs
        space.pop("epochs")
    if not accepts_param(sess.family, "dropout"):  # a custom family without a dropout parameter
        space.pop("dropout")
    if sess.pre.input_kind == "images":
        space["strength"] = ("float", 0.0, 1.0, False)
    if task.problem_type != "regression":
        space["label_smoothing"] = ("float", 0.0, 0.2, False)
        if sess.pre.input_kind == "images":
            space["mixup"] = ("float", 0.0, 0.4, False)
    return {k: v for k, v in space.items() if k in cfg.tune_knobs}


DEFAULT_TRIAL = {
    "weight_decay": 1e-4,
    "dropout": 0.1,
    "l1": 1e-8,
    "strength": 0.5,
    "label_smoothing": 0.0,
    "mixup": 0.0,
}


def _suggest(trial: Any, space: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    out = {}
    for k, spec in space.items():
        if spec[0] == "int":
            out[k] = trial.suggest_int(k, spec[1], spec[2])
        else:
            out[k] = trial.suggest_float(k, spec[1], spec[2], log=spec[3])
    return out


def split_params(
    sess: TrainSession, model_params: dict[str, Any], knobs: dict[str, Any]
) -> tuple[dict[str, Any], HParams]:
    """Tuned knob values -> (network params, HParams)."""
    mp = dict(model_params)
    kn = dict(knobs)
    if "dropout" in kn:
        mp["dropout"] = float(kn.pop("dropout"))
    hp = sess.base_hp.with_(
        patience=sess.cfg.patience, epochs=int(kn.pop("epochs", sess.cfg.max_epochs)), **kn
    )
    return mp, hp


def _open_study(sess: TrainSession, name: str, seed: int) -> Any:
    import optuna

    storage = sess.cfg.storage or f"sqlite:///{sess.work / 'study.db'}"
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(5, sess.cfg.n_trials // 3)))
    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=max(2, sess.cfg.max_epochs // 6), reduction_factor=3
    )
    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def tune(
    sess: TrainSession, model_params: dict[str, Any], ladder_logits: np.ndarray | None
) -> dict[str, Any]:
    """Optuna search over regularization and optimization knobs on validation, with successive-halving
    pruning, inside the phase's time budget. Resumable: finished trials live in the study database."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg, eng, task = sess.cfg, sess.engine, sess.task
    space = search_space(sess)
    base_name = cfg.study_name or f"closedloop-train-{sess.ctx.fingerprint[:12] or 'run'}-seed{sess.ctx.seed}"
    study = _open_study(sess, base_name, sess.ctx.seed)
    # a trial killed mid-way stays RUNNING: restart the search from a copy without it, so the resumed
    # study's history (and hence every later suggestion and pruning decision) equals an uninterrupted run's
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    if stale and cfg.storage is None:
        finished = [t for t in study.get_trials() if t.state != optuna.trial.TrialState.RUNNING]
        k = 1
        while True:
            name = f"{base_name}-resumed{k}"
            if name not in [s.study_name for s in optuna.get_all_study_summaries(study._storage)]:
                break
            k += 1
        study = _open_study(sess, name, sess.ctx.seed)
        study.add_trials(finished)
        sess.decide(
            "tune",
            f"resumed the search: {len(finished)} finished trial(s) kept, {len(stale)} interrupted trial(s) re-run",
            {},
        )
    deadline = sess.deadline("tune")
    epoch_s = max(sess.phases.get("beat_baseline", {}).get("epoch_seconds", 1.0), 0.05)
    rung_rows = sess.phases.get("scale_up", {}).get("rungs", [])
    if rung_rows:
        chosen = sess.phases["scale_up"]["chosen"]
        row = rung_rows[chosen]
        epoch_s = max(epoch_s, row["seconds"] / max(cfg.ladder_epochs, 1))
    min_epochs = max(2, cfg.max_epochs // 6)
    n_trials = cfg.n_trials
    remaining = deadline - time.time()
    if remaining < epoch_s * min_epochs and not [t for t in study.trials if t.state.is_finished()]:
        n_trials = 1
        space = {k: v for k, v in space.items() if k != "epochs"}
        sess.decide(
            "tune",
            f"the time budget left for tuning ({max(remaining, 0):.0f} s) is too small for one trial "
            f"(~{epoch_s * min_epochs:.0f} s for {min_epochs} epochs): running the minimum - one trial with the "
            f"default regularization for {min_epochs} epochs",
            {"seconds_left": remaining, "seconds_per_epoch": epoch_s},
        )
        study.enqueue_trial({k: v for k, v in DEFAULT_TRIAL.items() if k in space})
        forced_epochs: int | None = min_epochs
    else:
        forced_epochs = None
        if not study.trials:
            study.enqueue_trial(
                {k: v for k, v in DEFAULT_TRIAL.items() if k in space}
                | ({"epochs": cfg.max_epochs} if "epochs" in space else {})
                | ({"lr": sess.base_hp.lr} if "lr" in space else {})
            )
    (sess.work / "trials").mkdir(exist_ok=True)
    # trials finished before a crash were recorded in the ledger by the interrupted run: count them
    sess.n_configs += len([t for t in study.trials if t.state.is_finished()])
    failures: list[dict[str, Any]] = []
    while True:
        done = [t for t in study.trials if t.state.is_finished()]
        if len(done) >= n_trials:
            break
        if done and time.time() > deadline:
            sess.decide(
                "tune", f"tuning time budget spent after {len(done)} trial(s) (of {n_trials} planned)", {}
            )
            break
        k = len(done)
        # a fresh sampler seeded by the trial's index: suggestions depend on the finished history only
        study.sampler = optuna.samplers.TPESampler(
            seed=sess.ctx.seed * 1000 + k, n_startup_trials=max(2, min(5, cfg.n_trials // 3))
        )
        trial = study.ask()
        knobs = _suggest(trial, space)
        if forced_epochs is not None:
            knobs["epochs"] = forced_epochs
        mp, hp = split_params(sess, model_params, knobs)
        seed = sess.ctx.seed * 1000 + k
        try:
            net = sess.build(mp, seed)

            def report(epoch: int, rec: dict[str, float], trial: Any = trial) -> None:
                ev = {m.removeprefix("val_"): v for m, v in rec.items() if m.startswith("val_")}
                trial.report(eng.selection_score(ev), epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

            res = eng.fit(net, sess.train, sess.val, hp, seed=seed, on_epoch=report, deadline=deadline)
        except optuna.TrialPruned:
            vals = list(trial.storage.get_trial(trial._trial_id).intermediate_values.values())
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            best_v = selection_value(eng, max(vals)) if vals else None
            sess.record(
                f"tuning trial {k} (pruned)",
                {"model": mp, **_flat(knobs)},
                {task.primary_metric: best_v, "status": "pruned"},
            )
            continue
        except NonFiniteLossError as exc:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            failures.append({"trial": k, "knobs": knobs, "reason": str(exc)})
            sess.decide("tune", f"trial {k} stopped: {exc}; recorded and continuing", {"knobs": knobs})
            sess.record(
                f"tuning trial {k} (failed)",
                {"model": mp, **_flat(knobs)},
                {task.primary_metric: None, "status": "non-finite loss"},
            )
            continue
        trial.set_user_attr("best_epoch", res.best_epoch)
        trial.set_user_attr("stopped", res.stopped)
        trial.set_user_attr("history", res.history)
        trial.set_user_attr("k", k)
        np.save(sess.work / "trials" / f"{trial.number}.npy", res.val_logits)
        study.tell(trial, res.best_score)
        sess.record(
            f"tuning trial {k}",
            {"model": mp, **_flat(knobs)},
            {
                task.primary_metric: selection_value(eng, res.best_score),
                "best_epoch": res.best_epoch,
                "status": "complete",
            },
        )
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
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
    best_logits = np.load(sess.work / "trials" / f"{best.number}.npy")
    values = [
        selection_value(eng, t.value) if t.state == optuna.trial.TrialState.COMPLETE else None
        for t in study.trials
    ]
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
    importance: dict[str, float] = {}
    if len(complete) >= 3:
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
    gain = None
    if ladder_logits is not None:
        try:
            from closedloop.stats.paired import compare

            gain = compare(
                task.primary_metric,
                sess.val.y_np,
                logits_to_proba(best_logits, task.problem_type),
                logits_to_proba(ladder_logits, task.problem_type),
                task.problem_type,
                seed=sess.ctx.seed,
                convention=task.metric_convention,
            ).to_dict()
        except Exception as exc:
            gain = {"error": f"{type(exc).__name__}: {exc}"}
    n_done = len([t for t in study.trials if t.state.is_finished()])
    chosen_value = selection_value(eng, best.value)
    logits_file = f"trials/{best.number}.npy"
    best_epoch = int(best.user_attrs.get("best_epoch") or hp.epochs)
    rows = sess.phases.get("scale_up", {}).get("rungs", [])
    rung = rows[sess.phases["scale_up"]["chosen"]] if rows else None
    fallback = (
        rung is not None
        and rung["score"] is not None
        and rung["score"] > best.value
        and ladder_logits is not None
    )
    if fallback:
        # regularization did not help on validation: keep the unregularized capacity rung, say so
        sess.decide(
            "tune",
            f"no tuning trial beat the unregularized capacity rung on validation ({task.primary_metric} "
            f"{rung['val_metric']:.4f} vs {chosen_value:.4f}): keeping the rung's configuration",
            {"rung": rung["rung"], "best_trial": best.user_attrs.get("k", best.number)},
        )
        knobs = {}
        mp = dict(model_params)
        hp = sess.base_hp.with_(epochs=int(rung["best_epoch"]), strength=0.0, weight_decay=0.0, patience=None)
        best_epoch, chosen_value, logits_file = (
            int(rung["best_epoch"]),
            rung["val_metric"],
            (f"rung_{sess.phases['scale_up']['chosen']}_val_logits.npy"),
        )
    if fallback:
        # the kept rung has no tuned value to reset: nothing to ablate
        knob_gains: dict[str, Any] = {}
        why = "the unregularized capacity rung was kept: no tuned value to reset"
        skipped = [{"knob": k, "reason": why} for k in space] if cfg.ablate_knobs else []
    else:
        knob_gains, skipped = knob_ablation(
            sess,
            model_params,
            knobs,
            space,
            importance,
            best_logits,
            seed=sess.ctx.seed * 1000 + int(best.user_attrs.get("k", best.number)),
            deadline=deadline,
        )
    gain_txt = (
        f"; against the unregularized capacity rung it changes validation {task.primary_metric} by "
        f"{gain['delta']:+.4f} (95% CI [{gain['ci95'][0]:+.4f}, {gain['ci95'][1]:+.4f}], optimistic: chosen on the same data)"
        if gain and "delta" in gain
        else ""
    )
    if not fallback:
        sess.decide(
            "tune",
            f"chose trial {best.user_attrs.get('k', best.number)} among {n_done} tuning trials "
            f"(validation {task.primary_metric} {chosen_value:.4f}, best epoch {best_epoch})" + gain_txt,
            {"knobs": knobs, "importance": importance},
        )
    return {
        "model_params": mp,
        "hparams": hp.as_dict(),
        "knobs": knobs,
        "best_epoch": best_epoch,
        "val_metric": chosen_value,
        "val_logits_file": logits_file,
        "n_trials": n_done,
        "n_complete": len(complete),
        "n_pruned": len([t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]),
        "n_failed": len(failures),
        "failures": failures,
        "importance": importance,
        "gain_vs_unregularized": gain,
        "knob_gains": knob_gains,
        "knob_gains_skipped": skipped,
        "trials": [
            {
                "trial": i,
                "state": t.state.name,
                "value": values[i],
                "params": t.params,
                "best_epoch": t.user_attrs.get("best_epoch"),
            }
            for i, t in enumerate(study.trials)
        ],
        "best_trial_number": best.number,
        "space": {k: list(v) for k, v in space.items()},
    }


def neutral_knobs(sess: TrainSession) -> dict[str, Any]:
    """Each knob's neutral value: no regularization (0), the un-tuned defaults for lr and epochs."""
    return {
        "lr": sess.base_hp.lr,
        "epochs": sess.cfg.max_epochs,
        "weight_decay": 0.0,
        "dropout": 0.0,
        "l1": 0.0,
        "strength": 0.0,
        "label_smoothing": 0.0,
        "mixup": 0.0,
    }


def knob_ablation(
    sess: TrainSession,
    model_params: dict[str, Any],
    knobs: dict[str, Any],
    space: dict[str, tuple[Any, ...]],
    importance: dict[str, float],
    chosen_logits: np.ndarray,
    *,
    seed: int,
    deadline: float,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """What each knob bought: retrain the chosen configuration on train with one knob reset to its
    neutral value (same seed), and compare the two on validation with a paired bootstrap.

    Ablates the ``cfg.ablate_knobs`` most important knobs (fANOVA), or, without importance, the first
    ones whose chosen value differs from neutral. Each fit is a configuration scored on validation:
    it goes into the ledger. Fits finished before an interruption are reused from ``work/ablation/``.
    Returns ``({knob: {chosen, neutral, delta, ci95, metric, ...}}, [{knob, reason} skipped])``.
    """
    from closedloop.stats.paired import compare

    cfg, eng, task = sess.cfg, sess.engine, sess.task
    n = cfg.ablate_knobs or 0
    neutral = neutral_knobs(sess)
    cands = [k for k in space if k in knobs and k in neutral and float(knobs[k]) != float(neutral[k])]
    if importance:
        cands.sort(key=lambda k: -importance.get(k, 0.0))  # stable: search-space order on ties
    todo = cands[:n]
    gains: dict[str, Any] = {}
    skipped: list[dict[str, str]] = []
    if not todo:
        if n:
            sess.decide("tune", "knob ablation: no tuned knob differs from its neutral value", {})
        return gains, skipped
    folder = sess.work / "ablation"
    folder.mkdir(exist_ok=True)
    p_chosen = logits_to_proba(chosen_logits, task.problem_type)
    for i, k in enumerate(todo):
        cache = folder / f"{k}.json"
        if cache.is_file():  # fitted (and put in the ledger) by an interrupted run
            gains[k] = json.loads(cache.read_text(encoding="utf-8"))
            sess.n_configs += 1
            continue
        if time.time() > deadline:
            skipped += [{"knob": kk, "reason": "time budget spent"} for kk in todo[i:]]
            sess.decide(
                "tune",
                f"tuning time budget spent: knob ablation skipped for {', '.join(todo[i:])}",
                {"skipped": todo[i:]},
            )
            break
        ablated = {**knobs, k: neutral[k]}
        mp, hp = split_params(sess, model_params, ablated)
        desc = f"knob ablation: {k} reset to {_fmt(neutral[k])}"
        try:
            net = sess.build(mp, seed)
            res = eng.fit(net, sess.train, sess.val, hp, seed=seed, deadline=deadline)
        except NonFiniteLossError as exc:
            sess.record(desc + " (failed)", {"model": mp, **_flat(ablated)}, {task.primary_metric: None})
            skipped.append({"knob": k, "reason": str(exc)})
            continue
        value = selection_value(eng, res.best_score)
        sess.record(
            desc,
            {"model": mp, **_flat(ablated)},
            {task.primary_metric: value, "best_epoch": res.best_epoch, "status": "complete"},
        )
        entry: dict[str, Any] = {
            "knob": k,
            "chosen": knobs[k],
            "neutral": neutral[k],
            "metric": task.primary_metric,
            "importance": importance.get(k),
            "delta": None,
            "ci95": None,
            "best_epoch": res.best_epoch,
            "stopped": res.stopped,
        }
        try:
            cmp = compare(
                task.primary_metric,
                sess.val.y_np,
                p_chosen,
                logits_to_proba(res.val_logits, task.problem_type),
                task.problem_type,
                n_resamples=cfg.n_bootstrap,
                seed=sess.ctx.seed,
                convention=task.metric_convention,
            )
            entry.update(
                delta=cmp.delta,
                ci95=list(cmp.ci95),
                value_chosen=cmp.value_a,
                value_ablated=cmp.value_b,
                p_one_sided=cmp.p_one_sided,
                higher_is_better=cmp.higher_is_better,
            )
        except Exception as exc:  # the interval is evidence, not a reason to stop training
            entry["error"] = f"{type(exc).__name__}: {exc}"
        write_text_atomic(cache, to_json(entry))
        gains[k] = entry
    parts = [
        f"{k} {_fmt(g['chosen'])} -> {_fmt(g['neutral'])}: "
        + (
            f"{g['delta']:+.4f} (95% CI [{g['ci95'][0]:+.4f}, {g['ci95'][1]:+.4f}])"
            if g["delta"] is not None
            else "no interval (" + g.get("error", "") + ")"
        )
        + (", cut short by the time budget" if g.get("stopped") == "time_budget" else "")
        for k, g in gains.items()
    ]
    if parts:
        sess.decide(
            "tune",
            f"what each knob bought (validation {task.primary_metric} of the chosen configuration minus the "
            "same configuration retrained with that one knob reset to neutral; optimistic: chosen on the "
            "same data): " + "; ".join(parts),
            {"knob_gains": gains, "skipped": skipped},
        )
    return gains, skipped


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _flat(knobs: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in knobs.items()}


# ---------------------------------------------------------------------------------------------------
# 4b. cross-validated selection on small data (the task's validation protocol)


def cv_splits(y: np.ndarray, problem_type: str, folds: int, repeats: int, seed: int) -> list[list[tuple]]:
    """``repeats`` lists of ``folds`` (train_idx, held_out_idx) pairs over ``len(y)`` samples, stratified
    by class for single-label classification."""
    from sklearn.model_selection import KFold, StratifiedKFold

    labels = np.asarray(y).reshape(len(y), -1)
    stratify = problem_type in ("binary", "multiclass", "ordinal")
    out = []
    for r in range(repeats):
        if stratify:
            cls = labels[:, 0].astype(int)
            counts = np.bincount(cls)
            k = max(2, min(folds, int(counts[counts > 0].min())))  # every fold holds every class
            splitter: Any = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed + r)
            out.append(list(splitter.split(np.zeros(len(cls)), cls)))
        else:
            splitter = KFold(n_splits=folds, shuffle=True, random_state=seed + r)
            out.append(list(splitter.split(np.zeros(len(labels)))))
    return out


def _cv_candidates(sess: TrainSession, tuned: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The hold-out choice first, then the next best complete trials, then the unregularized rung:
    each as the dict ``final_fit`` takes."""
    cands = [{**tuned, "label": "hold-out choice"}]
    higher = sess.task.higher_is_better
    ladder_params = sess.phases.get("scale_up", {}).get("params", {})
    trials = [t for t in tuned.get("trials", []) if t["state"] == "COMPLETE" and t["value"] is not None]
    trials.sort(key=lambda t: (-t["value"] if higher else t["value"], t["trial"]))
    chosen_file = tuned.get("val_logits_file")
    for t in trials:
        if len(cands) >= n:
            break
        if chosen_file == f"trials/{t['trial']}.npy":
            continue
        mp, hp = split_params(sess, ladder_params, dict(t["params"]))
        best_epoch = int(t.get("best_epoch") or hp.epochs)
        cands.append(
            {
                **tuned,
                "label": f"trial {t['trial']}",
                "model_params": mp,
                "hparams": hp.as_dict(),
                "knobs": dict(t["params"]),
                "best_epoch": best_epoch,
                "val_metric": t["value"],
                "val_logits_file": f"trials/{t['trial']}.npy",
            }
        )
    rows = sess.phases.get("scale_up", {}).get("rungs", [])
    if rows and len(cands) < n and tuned.get("knobs"):
        chosen = sess.phases["scale_up"]["chosen"]
        rung = rows[chosen]
        hp = sess.base_hp.with_(epochs=int(rung["best_epoch"]), strength=0.0, weight_decay=0.0, patience=None)
        cands.append(
            {
                **tuned,
                "label": "unregularized rung",
                "model_params": dict(ladder_params),
                "hparams": hp.as_dict(),
                "knobs": {},
                "best_epoch": int(rung["best_epoch"]),
                "val_metric": rung["val_metric"],
                "val_logits_file": f"rung_{chosen}_val_logits.npy",
            }
        )
    return cands


def cross_validate(sess: TrainSession, tuned: dict[str, Any]) -> dict[str, Any]:
    """Small data: re-rank the best configurations by the task's k-fold protocol on train+val.

    A hold-out split of a small dataset is a noisy judge (BreastMNIST's has 78 images), so when the task
    chose ``kfold`` / ``repeated_kfold``, the ``cv_candidates`` best configurations on the hold-out split
    (plus the unregularized rung) are each trained on k-1 folds of train+val for their chosen epochs
    and scored on the held-out fold. The configuration with the best mean out-of-fold metric is kept,
    and its out-of-fold logits (averaged over repeats, like the final ensemble averages seeds) calibrate
    the final model: every train+val case, predicted by models that did not see it. The candidates are
    configurations already counted; their cross-validation scores go into the validation ledger.
    Returns ``{"tuned": <what final_fit takes>, ...evidence}``."""
    from closedloop.stats.metrics import compute_metric

    cfg, eng, task = sess.cfg, sess.engine, sess.task
    proto = task.validation
    n = cfg.cv_candidates or 0
    if proto.protocol not in ("kfold", "repeated_kfold") or n < 1:
        why = f"protocol {proto.protocol}" if n else "cv_candidates is 0"
        return {"tuned": tuned, "skipped": why}
    repeats = proto.repeats if proto.protocol == "repeated_kfold" else 1
    data = TensorSet.concat(sess.train, sess.val)
    y = data.y_np
    splits = cv_splits(y, task.problem_type, proto.folds, repeats, sess.ctx.seed)
    folds = len(splits[0])
    deadline = sess.deadline("tune")
    folder = sess.work / "cv"
    folder.mkdir(exist_ok=True)
    sign = 1.0 if task.higher_is_better else -1.0
    rows: list[dict[str, Any]] = []
    best: tuple[float, int] | None = None
    cands = _cv_candidates(sess, tuned, n)
    for ci, cand in enumerate(cands):
        cache = folder / f"candidate{ci}.json"
        if cache.is_file():  # scored (and put in the ledger) by an interrupted run
            row = json.loads(cache.read_text(encoding="utf-8"))
        else:
            if time.time() > deadline and ci > 0:
                sess.decide("tune", f"cross-validation: time budget spent after {ci} candidate(s)", {})
                break
            hp = HParams.from_dict(cand["hparams"]).with_(
                epochs=max(1, int(cand["best_epoch"])), patience=None
            )
            oof = np.zeros((repeats, len(data), sess.n_logits))
            for r, fold_list in enumerate(splits):
                for f, (tr_idx, te_idx) in enumerate(fold_list):
                    seed = sess.ctx.seed * 1000 + 101 * r + f
                    net = sess.build(cand["model_params"], seed)
                    eng.fit(net, data.subset(tr_idx), None, hp, seed=seed, restore_best=False)
                    oof[r, te_idx] = eng.predict_logits(net, data.subset(te_idx)).reshape(len(te_idx), -1)
            scores = [
                compute_metric(
                    task.primary_metric,
                    y,
                    logits_to_proba(oof[r], task.problem_type),
                    task.problem_type,
                    convention=task.metric_convention,
                )
                for r in range(repeats)
            ]
            np.save(folder / f"candidate{ci}_oof.npy", oof.mean(axis=0))
            row = {
                "candidate": cand["label"],
                "knobs": cand["knobs"],
                "epochs": int(hp.epochs),
                "holdout": cand["val_metric"],
                "cv_mean": float(np.mean(scores)),
                "cv_sd_over_repeats": float(np.std(scores, ddof=1)) if repeats > 1 else None,
                "cv_per_repeat": [float(v) for v in scores],
            }
            sess.ctx.record_validation(
                f"cross-validation of the {cand['label']} ({folds}-fold x {repeats} on train+val)",
                {"model": cand["model_params"], **_flat(cand["knobs"])},
                {task.primary_metric: row["cv_mean"], "status": "cross-validated"},
            )
            write_text_atomic(cache, json.dumps(row))
        rows.append(row)
        if best is None or sign * row["cv_mean"] > sign * best[0]:
            best = (row["cv_mean"], ci)
    assert best is not None
    chosen = {k: v for k, v in cands[best[1]].items() if k != "label"}
    chosen["calibration_logits_file"] = f"cv/candidate{best[1]}_oof.npy"
    np.save(folder / "oof_labels.npy", y)
    chosen["calibration_labels_file"] = "cv/oof_labels.npy"
    listing = "; ".join(
        f"{r['candidate']} {r['cv_mean']:.4f}"
        + (f" (sd {r['cv_sd_over_repeats']:.4f})" if r["cv_sd_over_repeats"] is not None else "")
        for r in rows
    )
    kept = "kept the hold-out choice" if best[1] == 0 else f"switched to the {rows[best[1]]['candidate']}"
    sess.decide(
        "tune",
        f"cross-validated {len(rows)} candidate(s) on train+val ({folds}-fold x {repeats}, {len(data)} cases; "
        f"task protocol {proto.protocol}): mean out-of-fold {task.primary_metric} {listing}; {kept}. "
        "Calibration uses the chosen configuration's out-of-fold predictions.",
        {"candidates": rows, "folds": folds, "repeats": repeats},
    )
    return {
        "tuned": chosen,
        "protocol": proto.protocol,
        "folds": folds,
        "repeats": repeats,
        "candidates": rows,
        "chosen": rows[best[1]]["candidate"],
    }


# ---------------------------------------------------------------------------------------------------
# 5. final fit, calibration, the single test opening


def final_fit(sess: TrainSession, tuned: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Retrain the chosen configuration on train + the validation rows not held out (chosen epochs,
    optionally several seeds), then fit the temperature and threshold on the deployed model's own
    predictions for the held-out rows (k-fold protocols: the cross-validation's out-of-fold
    predictions, which already exist). See :mod:`closedloop.stages.train.heldout`."""
    from closedloop.models.trained import ModelSpec, TrainedModel
    from closedloop.stages.train.calibration import choose_threshold
    from closedloop.stages.train.heldout import INFO_KEY, fit_rows

    cfg, eng, task = sess.cfg, sess.engine, sess.task
    plan = sess.heldout
    mp = tuned["model_params"]
    epochs = max(1, int(tuned["best_epoch"]))
    hp = HParams.from_dict(tuned["hparams"]).with_(epochs=epochs, patience=None)
    val_logits = np.load(sess.work / tuned["val_logits_file"])  # the selected configuration, before the refit
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
    nets, histories = [], {}
    for s in range(cfg.final_seeds):
        seed = sess.ctx.seed + 7919 * s
        net = sess.build(mp, seed)
        if cfg.final_fit == "train":
            res = eng.fit(
                net, sess.train, sess.val, hp, seed=seed, checkpoint=sess.work / f"final_seed{s}.pt"
            )
        else:
            res = eng.fit(
                net,
                fit_data,
                None,
                hp,
                seed=seed,
                checkpoint=sess.work / f"final_seed{s}.pt",
                restore_best=False,
            )
        histories[f"final seed {s}"] = res.history
        nets.append(net.cpu().eval())
    sess.curves.update(histories)
    plots.curves(
        sess.figure("final.png", f"Final fit on {fitted_on} ({epochs} epochs): training loss", "final"),
        histories,
        "Final fit",
    )
    if len(nets) > 1:
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
    network = network.cpu().eval()
    if tuned.get("calibration_logits_file"):  # k-fold protocol: cross-validation's out-of-fold predictions
        cal_on = "out_of_fold"
        cal_logits = np.load(sess.work / tuned["calibration_logits_file"])
        cal_y = np.load(sess.work / tuned["calibration_labels_file"])
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
        f"({cfg.final_seeds} seed(s)); {_calibration_text(calibrated, temperature, bias, cal_on, len(cal_y))}"
        + (f"; operating threshold {threshold:.3f}: {why}" if threshold is not None else ""),
        {
            "epochs": epochs,
            "calibration": calibrated,
            "temperature": temperature,
            "logit_bias": [float(b) for b in bias],
            "threshold": threshold,
            "seeds": cfg.final_seeds,
            "evaluated_on": evaluated_on,
        },
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
            "seeds": cfg.final_seeds,
            "threshold_rule": why,
            "calibration": calibrated,
            "calibrated_on": cal_on,
            "logit_bias": [float(b) for b in bias],
            INFO_KEY: plan.model_dump(),
        },
    )
    return model, {
        "epochs": epochs,
        "fitted_on": fitted_on,
        "n_heldout": len(plan.indices),
        "calibration": calibrated,
        "temperature": temperature,
        "threshold": threshold,
        "threshold_rule": why,
        "evaluated_on": evaluated_on,
        "val_proba": p_val,
        "heldout_proba": p_hold,
    }


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
    from closedloop.stages.train.calibration import fit_bias_temperature, fit_temperature, fold_logit_bias

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


def evaluate_on_test(
    sess: TrainSession, model: Any, p_val: np.ndarray, p_hold: np.ndarray, baseline: Any
) -> dict[str, Any]:
    """Validation metrics (selected configuration before the refit) and the deployed model's metrics on
    its held-out rows, with intervals; then the single opening of the test split."""
    from closedloop.stats.bootstrap import metrics_with_ci

    cfg, task = sess.cfg, sess.task
    kw = {
        "threshold": model.threshold,
        "convention": task.metric_convention,
        "n_resamples": cfg.n_bootstrap,
        "seed": sess.ctx.seed,
    }
    val = metrics_with_ci(task.metrics, sess.val.y_np, p_val, task.problem_type, **kw)
    y_hold = sess.val.y_np[np.asarray(sess.heldout.indices, dtype=np.int64)]
    heldout = None
    if len(y_hold) and sess.heldout.evaluated_on != "trained_on":
        from closedloop.stats.errors import StatsError

        try:
            heldout = metrics_with_ci(task.metrics, y_hold, p_hold, task.problem_type, **kw)
        except StatsError as exc:  # e.g. one class among a handful of held-out rows
            sess.decide("final", f"no metrics on the {len(y_hold)} held-out samples: {exc}", {})
    test_split = sess.ctx.open_test(sess.data, reason="final evaluation", purpose="evaluation")
    p_test = model.predict_proba(test_split.X)
    test = metrics_with_ci(task.metrics, np.asarray(test_split.y), p_test, task.problem_type, **kw)
    out: dict[str, Any] = {"val": val, "heldout": heldout, "test": test, "n_test": len(test_split)}
    if task.problem_type == "binary":
        from closedloop.stages.train.calibration import expected_calibration_error

        out["test_ece"] = expected_calibration_error(p_test[:, 1], np.asarray(test_split.y))
        from closedloop.stats.business import per_day

        try:  # the report's first screen: "per day: N caught, M missed" with intervals, on test
            pd_ = per_day(
                np.asarray(test_split.y),
                p_test,
                0.5 if model.threshold is None else model.threshold,
                task.business,
                n_resamples=cfg.n_bootstrap,
                seed=sess.ctx.seed,
            )
            out["per_day"] = {**pd_, "evaluated_on": "test"}
        except Exception as exc:  # e.g. a test split without positives: say why instead of failing
            out["per_day"] = None
            sess.decide("final", f"no per-day framing: {exc}", {})
    if baseline is None:
        out["beats_baseline"] = None
        sess.decide("final", "no baseline given: the test result cannot be compared with one", {})
        return out
    from closedloop.stats.gate import beats_baseline

    on = "train+val" if cfg.final_fit == "train+val" else "train"
    p_base = baseline_proba(baseline, sess.data, task, test_split.X, on=on)
    best = getattr(baseline, "best", None)
    bb = beats_baseline(
        np.asarray(test_split.y),
        p_test,
        p_base,
        task,
        n_configs=sess.n_configs,  # reported only: the search happened on validation, not on test
        seed=sess.ctx.seed,
        n_resamples=cfg.n_bootstrap,
        threshold=model.threshold,
        baseline_name=f"best baseline ({best})" if best else "best baseline",
    ).to_dict()
    out["beats_baseline"] = bb
    sess.decide("final", bb["sentence"], {k: v for k, v in bb.items() if k != "sentence"})
    return out
