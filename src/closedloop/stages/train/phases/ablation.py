"""What each tuned knob bought: the chosen configuration retrained with one knob reset to its neutral
value (:func:`closedloop.stages.train.knobs.neutral_values`), compared on validation (paired bootstrap)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from closedloop.core.io import to_json, write_text_atomic
from closedloop.models.trained import logits_to_proba
from closedloop.stages.train import knobs as K
from closedloop.stages.train.engine import NonFiniteLossError
from closedloop.stages.train.outcomes import KnobGain, Skipped
from closedloop.stages.train.phases.space import split_params
from closedloop.stages.train.session import TrainSession, flat, fmt, selection_value


def knob_ablation(
    sess: TrainSession,
    model_params: dict[str, Any],
    knobs: dict[str, Any],
    space: K.Space,
    importance: dict[str, float],
    chosen_logits: np.ndarray,
    *,
    seed: int,
    deadline: float,
) -> tuple[dict[str, KnobGain], list[Skipped]]:
    """Ablates the ``cfg.ablate_knobs`` most important knobs (fANOVA), or, without importance, the first
    ones whose chosen value differs from neutral. Each fit is a configuration scored on validation:
    it goes into the ledger. Fits finished before an interruption are reused from ``work/ablation/``."""
    from closedloop.stats.paired import compare

    cfg, eng, task = sess.cfg, sess.engine, sess.task
    n = cfg.ablate_knobs or 0
    neutral = K.neutral_values(sess.base_hp.lr, cfg.max_epochs or 1, model_params)
    cands = [k for k in space if k in knobs and k in neutral and float(knobs[k]) != float(neutral[k])]
    if importance:
        cands.sort(key=lambda k: -importance.get(k, 0.0))  # stable: search-space order on ties
    todo = cands[:n]
    gains: dict[str, KnobGain] = {}
    skipped: list[Skipped] = []
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
            gains[k] = KnobGain.model_validate_json(cache.read_text(encoding="utf-8"))
            sess.n_configs += 1
            continue
        if time.time() > deadline:
            skipped += [Skipped(knob=kk, reason="time budget spent") for kk in todo[i:]]
            sess.decide(
                "tune",
                f"tuning time budget spent: knob ablation skipped for {', '.join(todo[i:])}",
                {"skipped": todo[i:]},
            )
            break
        ablated = {**knobs, k: neutral[k]}
        mp, hp = split_params(sess, model_params, ablated)
        desc = f"knob ablation: {k} reset to {fmt(neutral[k])}"
        try:
            net = sess.build(mp, seed)
            res = eng.fit(
                net, sess.train, sess.val, hp, seed=seed, deadline=deadline, label=f"train/tune/ablation/{k}"
            )
        except NonFiniteLossError as exc:
            sess.record(desc + " (failed)", {"model": mp, **flat(ablated)}, {task.primary_metric: None})
            skipped.append(Skipped(knob=k, reason=str(exc)))
            continue
        value = selection_value(eng, res.best_score)
        sess.record(
            desc,
            {"model": mp, **flat(ablated)},
            {task.primary_metric: value, "best_epoch": res.best_epoch, "status": "complete"},
        )
        entry = KnobGain(
            knob=k,
            chosen=knobs[k],
            neutral=neutral[k],
            metric=task.primary_metric,
            importance=importance.get(k),
            best_epoch=res.best_epoch,
            stopped=res.stopped,
        )
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
                clusters=sess.val_groups,
            )
            entry = entry.model_copy(
                update={
                    "delta": cmp.delta,
                    "ci95": list(cmp.ci95),
                    "value_chosen": cmp.value_a,
                    "value_ablated": cmp.value_b,
                    "p_one_sided": cmp.p_one_sided,
                    "higher_is_better": cmp.higher_is_better,
                }
            )
        except Exception as exc:  # the interval is evidence, not a reason to stop training
            entry.error = f"{type(exc).__name__}: {exc}"
        write_text_atomic(cache, to_json(entry.model_dump(mode="json")))
        gains[k] = entry
    parts = [
        f"{k} {fmt(g.chosen)} -> {fmt(g.neutral)}: "
        + (
            f"{g.delta:+.4f} (95% CI [{g.ci95[0]:+.4f}, {g.ci95[1]:+.4f}])"
            if g.delta is not None and g.ci95 is not None
            else "no interval (" + (g.error or "") + ")"
        )
        + (", cut short by the time budget" if g.stopped == "time_budget" else "")
        for k, g in gains.items()
    ]
    if parts:
        sess.decide(
            "tune",
            f"what each knob bought (validation {task.primary_metric} of the chosen configuration minus the "
            "same configuration retrained with that one knob reset to neutral; optimistic: chosen on the "
            "same data): " + "; ".join(parts),
            {
                "knob_gains": {k: g.model_dump(mode="json") for k, g in gains.items()},
                "skipped": [s.model_dump() for s in skipped],
            },
        )
    return gains, skipped
