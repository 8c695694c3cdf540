"""The final model's figures: validation and held-out metrics with intervals, then the single opening of
the test split and the comparison with the best baseline there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.models.trained import TrainedModel
from closedloop.stages.train.phases.beat_baseline import predict_baseline, refit_baseline
from closedloop.stages.train.session import TrainSession

REFIT_SECONDS = "final baseline refit seconds"
"""``ctx.timings`` label: the best baseline's refit on the final fit's rows, done before the final fit."""


@dataclass
class Evaluation:
    val: dict[str, Any]
    heldout: dict[str, Any] | None
    test: dict[str, Any]
    n_test: int
    test_ece: float | None = None
    per_day: dict[str, Any] | None = None
    """Binary tasks: caught / missed / false alarms per day on test (``stats.business.per_day``)."""
    confusion: dict[str, Any] | None = None
    """Single-label tasks: the confusion matrix on test at the deployed decisions (``Confusion``)."""
    beats_baseline: dict[str, Any] | None = None


THRESHOLD_FREE = frozenset({"auc", "pr_auc", "log_loss", "ece", "rmse", "mae"})


def label_operating_points(
    metrics: dict[str, Any], problem_type: str, convention: str, threshold: float | None
) -> dict[str, Any]:
    """Add ``decided_at`` to each metric: the decision rule its number was computed at, so a reader can
    tell a figure at the shipped threshold from one at 0.5 (the MedMNIST literature's ACC)."""
    t = 0.5 if threshold is None else float(threshold)
    out = {}
    for name, m in metrics.items():
        if name in THRESHOLD_FREE and not (problem_type == "ordinal" and name in ("rmse", "mae")):
            at = "threshold-free"  # an ordinal rank error is the argmax class's distance
        elif problem_type not in ("binary", "multilabel"):
            at = "argmax"
        elif name == "acc" and convention == "medmnist":
            at = "0.5 (MedMNIST convention, not the shipped threshold)"
        else:
            at = f"shipped threshold {t:.4g}"
        out[name] = {**m, "decided_at": at} if isinstance(m, dict) else m
    return out


def confusion_on_test(
    y: np.ndarray, proba: np.ndarray, task: Any, threshold: float | None
) -> dict[str, Any] | None:
    """The confusion matrix of a single-label task at the deployed decisions (binary: the shipped threshold;
    otherwise the argmax), as a :class:`~closedloop.artifacts.figures.Confusion`'s fields; None for others."""
    if task.problem_type not in ("binary", "multiclass", "ordinal"):
        return None
    from closedloop.monitoring.drift.predictions import predicted_classes

    k = proba.shape[1]
    t = 0.5 if threshold is None else float(threshold)
    pred = predicted_classes(proba, task.problem_type, t)
    rule = f"shipped threshold {t:.4g}" if task.problem_type == "binary" else "argmax"
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (y.reshape(-1).astype(np.int64), pred), 1)
    names = [str(n) for n in task.label_names] if len(task.label_names) == k else [str(i) for i in range(k)]
    return {"labels": names, "counts": counts.tolist(), "decided_at": rule, "evaluated_on": "test"}


def refit_for_test(sess: TrainSession) -> Any:
    """The best baseline refitted on exactly the rows the model's final fit uses (train + the
    validation rows not held out for calibration), so neither side of the test comparison has seen
    more data; None without a baseline. Called before the final fit (work no deadline can cut, done
    first so the fit is given what is left); an error is kept and raised where the comparison is made."""
    if sess.baseline is None:
        return None
    from closedloop.stages.train.heldout import fit_rows

    on = "train+val" if sess.cfg.final_fit == "train+val" else "train"
    with sess.ctx.timed(REFIT_SECONDS):
        try:
            return refit_baseline(sess.baseline, sess.data, sess.task, on, val_rows=fit_rows(sess.heldout))
        except Exception as exc:  # raised again at the comparison (evaluate_on_test), as before the move
            return exc


def evaluate_on_test(
    sess: TrainSession,
    model: TrainedModel,
    p_val: np.ndarray,
    p_hold: np.ndarray,
    baseline: Any,
    refitted: Any = None,
) -> Evaluation:
    """Validation metrics (selected configuration before the refit) and the deployed model's metrics on
    its held-out rows, with intervals; then the single opening of the test split. ``refitted``: the
    baseline from :func:`refit_for_test` (refitted here when not given)."""
    from closedloop.stats.bootstrap import metrics_with_ci, usable_clusters

    cfg, task = sess.cfg, sess.task
    kw = {
        "threshold": model.threshold,
        "convention": task.metric_convention,
        "n_resamples": cfg.n_bootstrap,
        "seed": sess.ctx.seed,
    }
    val_groups = sess.val_groups
    val = metrics_with_ci(task.metrics, sess.val.y_np, p_val, task.problem_type, clusters=val_groups, **kw)
    hold_rows = np.asarray(sess.heldout.indices, dtype=np.int64)
    y_hold = sess.val.y_np[hold_rows]
    heldout = None
    if len(y_hold) and sess.heldout.evaluated_on != "trained_on":
        from closedloop.stats.errors import StatsError

        hold_groups = None if val_groups is None else usable_clusters(np.asarray(val_groups)[hold_rows])
        try:
            heldout = metrics_with_ci(
                task.metrics, y_hold, p_hold, task.problem_type, clusters=hold_groups, **kw
            )
        except StatsError as exc:  # e.g. one class among a handful of held-out rows
            sess.decide("final", f"no metrics on the {len(y_hold)} held-out samples: {exc}", {})
    test_split = sess.ctx.open_test(sess.data, reason="final evaluation", purpose="evaluation")
    p_test = model.predict_proba(test_split.X)
    test_groups = usable_clusters(test_split.groups)
    test = metrics_with_ci(
        task.metrics, np.asarray(test_split.y), p_test, task.problem_type, clusters=test_groups, **kw
    )
    if test_split.groups is not None and (test_groups is None or val_groups is None):
        sess.decide(
            "final",
            "validation or test holds a single group of data.group: its intervals resample rows, which counts the "
            "group's rows as independent evidence (too narrow); more groups per split give honest ones",
            {},
        )
    if test_groups is not None and val_groups is not None:
        n_val, n_test = (len(np.unique(np.asarray(g).astype(str))) for g in (val_groups, test_groups))
        sess.decide(
            "final",
            f"intervals on validation and test resample whole groups of data.group ({n_val} and {n_test} "
            "groups): a group's rows are not independent evidence, so a resample of rows would give intervals "
            "too narrow",
            {"val_groups": n_val, "test_groups": n_test},
        )

    def label(d: dict[str, Any] | None) -> dict[str, Any] | None:
        if d is None:
            return None
        return label_operating_points(d, task.problem_type, task.metric_convention, model.threshold)

    out = Evaluation(val=label(val), heldout=label(heldout), test=label(test), n_test=len(test_split))
    out.confusion = confusion_on_test(np.asarray(test_split.y), p_test, task, model.threshold)
    if task.problem_type == "binary":
        from closedloop.stages.train.calibration import expected_calibration_error

        out.test_ece = expected_calibration_error(p_test[:, 1], np.asarray(test_split.y))
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
            out.per_day = {**pd_, "evaluated_on": "test"}
        except Exception as exc:  # e.g. a test split without positives: say why instead of failing
            out.per_day = None
            sess.decide("final", f"no per-day framing: {exc}", {})
    if baseline is None:
        sess.decide("final", "no baseline given: the test result cannot be compared with one", {})
        return out
    from closedloop.stats.gate import beats_baseline

    est = refitted if refitted is not None else refit_for_test(sess)
    if isinstance(est, Exception):
        raise est
    p_base = predict_baseline(est, test_split.X)
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
        clusters=test_groups,
    ).to_dict()
    out.beats_baseline = bb
    sess.decide("final", bb["sentence"], {k: v for k, v in bb.items() if k != "sentence"})
    return out
