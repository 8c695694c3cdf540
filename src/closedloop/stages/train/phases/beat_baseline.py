"""Phase 2: train a small default model; compare it with the best baseline on validation (paired test)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from closedloop.models.trained import logits_to_proba
from closedloop.stages.train import plots
from closedloop.stages.train.outcomes import BaselineOutcome
from closedloop.stages.train.phases.base import Phase
from closedloop.stages.train.session import (
    COMPARISON_SECONDS,
    DEFAULT_LOGITS_FILE,
    DRAW_SECONDS,
    TrainSession,
    selection_value,
)

EPOCH_SECONDS = "beat_baseline seconds per epoch"
"""``ctx.timings`` label: the tune phase sizes its minimum trial with it (when no rung measured one)."""
REFIT_SECONDS = "beat_baseline baseline refit seconds"
"""``ctx.timings`` label: the best baseline's refit on train and its validation predictions, done
before the default model's fit."""
AFTER_FIT_SECONDS = "beat_baseline kept after the fit seconds"
"""``ctx.timings`` label: what the fit's deadline keeps before the phase's for the work after it (the
paired comparison, timed on a tenth of its resamples before the fit, and the figure's draw)."""
N_RESAMPLES = 1000
"""The comparison's resamples (``stats.paired.compare``'s default, which the phase uses)."""
PROBE_SHARE = 10
"""The comparison's cost is measured on 1/PROBE_SHARE of its resamples (its cost is linear in them)."""


class BeatBaseline(Phase):
    name = "beat_baseline"
    budget_share = 0.10
    outcome = BaselineOutcome

    def run(self, sess: TrainSession) -> BaselineOutcome:
        return beat_baseline(sess, sess.ladder[0], sess.baseline)


def refit_baseline(baseline: Any, data: Any, task: Any, on: str, val_rows: np.ndarray | None = None) -> Any:
    """The best baseline refitted ``on`` train or train+val (only ``val_rows`` of val, when given).
    Phases refit it before their own fit: the refit is work no deadline can cut, so done first, its
    time comes out of what the fit is given instead of running past the phase's deadline."""
    return baseline.fit_best(data, task, on=on, val_rows=val_rows)


def predict_baseline(est: Any, X: Any) -> np.ndarray:
    """Probabilities of a refitted baseline (:func:`refit_baseline`) for inputs ``X``."""
    try:
        return np.asarray(est.predict_proba(X))
    except Exception:
        from closedloop.data.bundle import Split

        return np.asarray(est.predict_proba(Split(X=X, y=np.zeros(len(X))).features()))


def baseline_proba(
    baseline: Any, data: Any, task: Any, X: Any, on: str, val_rows: np.ndarray | None = None
) -> np.ndarray:
    """Probabilities of the best baseline refitted ``on`` train or train+val (only ``val_rows`` of
    val, when given), for inputs ``X``."""
    return predict_baseline(refit_baseline(baseline, data, task, on, val_rows), X)


def after_fit_seconds(sess: TrainSession, p_base: np.ndarray | None) -> float:
    """Seconds the phase's work after its fit takes, measured now: the figure (two panels at the
    sanity check's measured draw each) and the paired comparison with the baseline, timed on a tenth
    of its resamples (the baseline against itself: the same arithmetic) and scaled up. The fit's
    deadline is the phase's less this, so the phase, not just its fit, ends by its share."""
    from closedloop.stats.paired import compare

    figure = 2 * float(sess.ctx.timings.get(DRAW_SECONDS, 0.0))
    if p_base is None:
        return figure
    t0 = time.perf_counter()
    try:
        compare(
            sess.task.primary_metric,
            sess.val.y_np,
            p_base,
            p_base,
            sess.task.problem_type,
            n_resamples=max(1, N_RESAMPLES // PROBE_SHARE),
            seed=sess.ctx.seed,
            convention=sess.task.metric_convention,
            method="auto",
            clusters=sess.val_groups,
        )
    except Exception:  # the real comparison reports its own error; nothing to keep time for
        return figure
    return figure + PROBE_SHARE * (time.perf_counter() - t0)


def beat_baseline(sess: TrainSession, params: dict[str, Any], baseline: Any) -> BaselineOutcome:
    cfg, task = sess.cfg, sess.task
    est, refit_error, p_base = None, None, None
    if baseline is not None:  # before the fit: see refit_baseline
        with sess.ctx.timed(REFIT_SECONDS):
            try:
                est = refit_baseline(baseline, sess.data, task, on="train")
                p_base = predict_baseline(est, sess.data.val.X)
            except Exception as exc:  # the comparison is evidence, not a reason to stop training
                refit_error = exc
    seed = sess.seed("beat_baseline")
    net = sess.build(params, seed)
    hp = sess.base_hp.with_(epochs=cfg.baseline_epochs, strength=0.0)
    after = after_fit_seconds(sess, p_base)
    sess.note_time(AFTER_FIT_SECONDS, after)
    res = sess.engine.fit(
        net,
        sess.train,
        sess.val,
        hp,
        seed=seed,
        deadline=sess.deadline("beat_baseline") - after,
        label="train/beat_baseline",
    )
    n, bs = len(sess.train), min(hp.batch_size, len(sess.train))
    epoch_s = (  # from the training steps, so a fit the clock cut early is not read as a slow one
        res.step_seconds * max(1, n // max(bs, 1))
        if res.step_seconds
        else res.seconds / max(res.epochs_done, 1e-3)
    )
    sess.note_time(EPOCH_SECONDS, epoch_s)
    sess.note_fit(res)
    sess.note_cut("beat_baseline", "the default model's fit", res, hp.epochs)
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
    sess.save_logits(DEFAULT_LOGITS_FILE, res.val_logits)
    out = BaselineOutcome(
        params=params, val_metric=value, best_epoch=res.best_epoch, history=res.history, comparison=None
    )
    if baseline is None:
        sess.decide(
            "beat_baseline",
            "no baseline given to the stage: the default model cannot be compared with one (wire a baseline stage)",
            {"val_" + task.primary_metric: value},
        )
        return out
    t0 = time.perf_counter()
    try:
        from closedloop.stats.paired import compare

        if refit_error is not None:
            raise refit_error
        p_model = logits_to_proba(res.val_logits, task.problem_type)
        cmp = compare(
            task.primary_metric,
            sess.val.y_np,
            p_model,
            p_base,
            task.problem_type,
            n_resamples=N_RESAMPLES,
            seed=sess.ctx.seed,
            convention=task.metric_convention,
            method="auto",
            clusters=sess.val_groups,
        ).to_dict()
    except Exception as exc:  # the comparison is evidence, not a reason to stop training
        out.comparison = {"error": f"{type(exc).__name__}: {exc}"}
        sess.decide("beat_baseline", f"could not compare with the baseline ({exc})", {})
        return out
    sess.note_time(COMPARISON_SECONDS, time.perf_counter() - t0)
    out.comparison = cmp
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
